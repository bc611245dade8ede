@testable import Engine
import Testing

@Suite("Layouts")
struct LayoutTests {
    @Test("plain -> blocked -> plain round trip keeps values and zero padding", arguments: [
        [2, 5, 3, 4], [1, 20, 3, 2, 5], [3, 32, 1, 1],
    ])
    func roundTrip(_ dims: [Int]) throws {
        var rng = SeededRandom(3)
        let v = rounded(rng.values(dims.reduce(1, *)))
        for layout in [Layout.blocked8, .blocked16] {
            let t = try tensor(dims, v, layout: layout)
            #expect(t.storedCount == dims[0] * ((dims[1] + layout.block - 1) / layout.block * layout.block)
                    * dims.dropFirst(2).reduce(1, *))
            expectClose(try t.toArray(), v, tolerance: 0, "round trip \(layout)")
            // Padded channels hold zeros: the sum of stored values equals the sum of the values.
            let stored = t.withUnsafeMutableFloats { $0.reduce(0.0) { $0 + abs(Double($1)) } }
            #expect(abs(stored - v.reduce(0) { $0 + abs($1) }) < 1e-3)
        }
    }

    @Test("a large copy (split over the compute threads, a partial last unit) copies every value, into a view too")
    func largeCopy() throws {
        let n = 3 * (1 << 18) + 37
        let source = try Tensor(dims: [1, n], values: (0 ..< n).map { Float($0 % 1009) - 500 })
        let target = try Tensor(zeros: [n + 16])
        let view = Tensor(storage: target.storage, offset: 16, dims: [1, n], layout: .plain)
        try view.copy(from: source)
        let all = try target.toArray()
        #expect(all.prefix(16).allSatisfy { $0 == 0 })
        #expect(Array(all.dropFirst(16)) == (try source.toArray()))
    }

    @Test("invalid dims are rejected")
    func invalidDims() {
        #expect(throws: EngineError.self) { try Tensor(zeros: [2, -1, 3]) }
        #expect(throws: EngineError.self) { try Tensor(zeros: [2, 3], layout: .blocked8) }
        #expect(throws: EngineError.self) { try Tensor(dims: [2, 2], values: [1, 2, 3]) }
        #expect(throws: EngineError.self) { try Tensor(zeros: [Int.max / 2, 4]) }
    }
}

@Suite("Normalization")
struct NormalizationTests {
    static let shapes: [[Int]] = [[2, 5, 7, 3], [4, 32, 6, 5], [2, 3, 5, 4, 3], [1, 16, 4, 4, 4]]

    @Test("batch norm training, running stats, inference and backward match the reference",
          arguments: shapes, allLayouts)
    func batchNorm(_ dims: [Int], layout: Layout) throws {
        var rng = SeededRandom(5)
        let c = dims[1]
        let x = rounded(rng.values(dims.reduce(1, *), scale: 3).map { $0 + 1.5 })
        let scale = rounded(rng.values(c).map { $0 + 1.2 }), shift = rounded(rng.values(c))
        let bn = try BatchNormalization(dims: dims, layout: layout)
        let (tscale, tshift) = (try tensor([c], scale), try tensor([c], shift))
        let (mean, variance) = (try Tensor(zeros: [c]), try Tensor(zeros: [c]))
        let runMean = try Tensor(zeros: [c]), runVar = try Tensor(dims: [c], values: [Float](repeating: 1, count: c))
        let tx = try tensor(dims, x, layout: layout)
        let y = try Tensor(zeros: dims, layout: layout)
        try bn.forwardTraining(input: tx, scale: tscale, shift: tshift, output: y, mean: mean, variance: variance,
                               runningMean: runMean, runningVariance: runVar)
        let ref = Reference.normalization(x, dims: dims, scale: scale, shift: shift, epsilon: 1e-5, perSample: false)
        expectClose(try y.toArray(), ref.y, "training output")
        expectClose(try mean.toArray(), ref.mean, "batch mean")
        // Running statistics: momentum 0.1, unbiased variance (PyTorch).
        let m = Double(dims[0] * dims.dropFirst(2).reduce(1, *))
        expectClose(try runMean.toArray(), ref.mean.map { 0.1 * $0 }, "running mean")
        expectClose(try runVar.toArray(), ref.variance.map { 0.9 + 0.1 * $0 * m / (m - 1) }, "running var")

        let yi = try Tensor(zeros: dims, layout: layout)
        try bn.forwardInference(input: tx, scale: tscale, shift: tshift, runningMean: runMean, runningVariance: runVar, output: yi)
        let refI = Reference.batchNormInference(x, dims: dims, scale: scale, shift: shift,
                                                mean: try runMean.toArray().map(Double.init),
                                                variance: try runVar.toArray().map(Double.init), epsilon: 1e-5)
        expectClose(try yi.toArray(), refI, "inference output")

        let dy = rounded(rng.values(x.count))
        let back = Reference.normalizationBackward(x, dims: dims, scale: scale, outputGradient: dy, epsilon: 1e-5, perSample: false)
        let dx = try Tensor(zeros: dims, layout: layout)
        let (ds, dsh) = (try Tensor(zeros: [c]), try Tensor(zeros: [c]))
        try bn.backward(input: tx, outputGradient: try tensor(dims, dy, layout: layout), scale: tscale, mean: mean,
                        variance: variance, inputGradient: dx, scaleGradient: ds, shiftGradient: dsh)
        expectClose(try dx.toArray(), back.input, "input gradient")
        expectClose(try ds.toArray(), back.scale, "weight gradient")
        expectClose(try dsh.toArray(), back.shift, "bias gradient")

        // A residual block's sum: leaky_relu(norm(x) + residual), in the normalization's pass.
        let res = rounded(rng.values(x.count))
        let yr = try Tensor(zeros: dims, layout: layout)
        try bn.forwardTraining(input: tx, scale: tscale, shift: tshift, output: yr, mean: mean, variance: variance,
                               runningMean: runMean, runningVariance: runVar, slope: 0.01, residual: tensor(dims, res, layout: layout))
        expectClose(try yr.toArray(), zip(ref.y, res).map { $0 + $1 > 0 ? $0 + $1 : 0.01 * ($0 + $1) }, "output with residual and activation")
    }

    @Test("instance norm forward and backward match the reference", arguments: shapes, allLayouts)
    func instanceNorm(_ dims: [Int], layout: Layout) throws {
        var rng = SeededRandom(9)
        let c = dims[1]
        let x = rounded(rng.values(dims.reduce(1, *), scale: 2).map { $0 - 0.7 })
        let scale = rounded(rng.values(c).map { $0 + 1.2 }), shift = rounded(rng.values(c))
        let norm = try InstanceNormalization(dims: dims, layout: layout)
        let (tscale, tshift) = (try tensor([c], scale), try tensor([c], shift))
        let mean = try Tensor(zeros: [dims[0], c]), variance = try Tensor(zeros: [dims[0], c])
        let tx = try tensor(dims, x, layout: layout)
        let y = try Tensor(zeros: dims, layout: layout)
        try norm.forward(input: tx, scale: tscale, shift: tshift, output: y, mean: mean, variance: variance)
        let ref = Reference.normalization(x, dims: dims, scale: scale, shift: shift, epsilon: 1e-5, perSample: true)
        expectClose(try y.toArray(), ref.y, "output")
        expectClose(try variance.toArray(), ref.variance, "variance")

        let dy = rounded(rng.values(x.count))
        let back = Reference.normalizationBackward(x, dims: dims, scale: scale, outputGradient: dy, epsilon: 1e-5, perSample: true)
        let dx = try Tensor(zeros: dims, layout: layout)
        let (ds, dsh) = (try Tensor(zeros: [c]), try Tensor(zeros: [c]))
        try norm.backward(input: tx, outputGradient: try tensor(dims, dy, layout: layout), scale: tscale, mean: mean,
                          variance: variance, inputGradient: dx, scaleGradient: ds, shiftGradient: dsh)
        expectClose(try dx.toArray(), back.input, "input gradient")
        expectClose(try ds.toArray(), back.scale, "weight gradient")
        expectClose(try dsh.toArray(), back.shift, "bias gradient")
    }

    /// The forward with leaky ReLU in the same pass, on data whose mean is 1e3 times its spread (where
    /// summing x and x^2 as they are would lose the variance in float rounding).
    @Test("normalization with activation and a large mean matches the reference", arguments: [false, true], allLayouts)
    func activatedLargeMean(perSample: Bool, layout: Layout) throws {
        var rng = SeededRandom(17)
        let dims = [3, 20, 9, 7], c = dims[1]
        let x = rng.values(dims.reduce(1, *)).map { 500 + 0.5 * $0 }.map { Double(Float($0)) }
        let scale = rounded(rng.values(c).map { $0 + 1.2 }), shift = rounded(rng.values(c))
        let (tscale, tshift) = (try tensor([c], scale), try tensor([c], shift))
        let tx = try tensor(dims, x, layout: layout), y = try Tensor(zeros: dims, layout: layout)
        let stats = perSample ? dims[0] * c : c
        let mean = try Tensor(zeros: [stats]), variance = try Tensor(zeros: [stats])
        if perSample {
            try InstanceNormalization(dims: dims, layout: layout)
                .forward(input: tx, scale: tscale, shift: tshift, output: y, mean: mean, variance: variance, slope: 0.01)
        } else {
            try BatchNormalization(dims: dims, layout: layout)
                .forwardTraining(input: tx, scale: tscale, shift: tshift, output: y, mean: mean, variance: variance,
                                 runningMean: Tensor(zeros: [c]), runningVariance: Tensor(zeros: [c]), slope: 0.01)
        }
        let ref = Reference.normalization(x, dims: dims, scale: scale, shift: shift, epsilon: 1e-5, perSample: perSample)
        expectClose(try y.toArray(), ref.y.map { $0 > 0 ? $0 : 0.01 * $0 }, tolerance: 2e-3, "\(layout) output")
        expectClose(try variance.toArray(), ref.variance, tolerance: 1e-3, "\(layout) variance")
        expectClose(try mean.toArray(), ref.mean, "\(layout) mean")
    }

    /// The backward of leaky_relu(norm(x)) from the activated output alone matches the reference backward of the
    /// norm at dy * leaky_relu'(y); where the own kernels do not run it declines and writes nothing.
    @Test("backward through the activation from the output matches the reference", arguments: [false, true], allLayouts)
    func backwardThroughActivation(perSample: Bool, layout: Layout) throws {
        var rng = SeededRandom(19)
        let dims = perSample ? [2, 20, 5, 4, 3] : [3, 20, 9, 7], c = dims[1], slope: Float = 0.01
        let x = rounded(rng.values(dims.reduce(1, *), scale: 2).map { $0 + 0.3 })
        let scale = rounded(rng.values(c).map { $0 + 1.2 }), shift = rounded(rng.values(c))
        let (tscale, tshift) = (try tensor([c], scale), try tensor([c], shift))
        let tx = try tensor(dims, x, layout: layout), y = try Tensor(zeros: dims, layout: layout)
        let stats = perSample ? dims[0] * c : c
        let mean = try Tensor(zeros: [stats]), variance = try Tensor(zeros: [stats])
        let dyValues = rounded(rng.values(x.count))
        let dy = try tensor(dims, dyValues, layout: layout)
        let (ds, dsh) = (try Tensor(dims: [c], values: [Float](repeating: 0.5, count: c)), try Tensor(zeros: [c]))
        let ran: Bool
        if perSample {
            let norm = try InstanceNormalization(dims: dims, layout: layout)
            try norm.forward(input: tx, scale: tscale, shift: tshift, output: y, mean: mean, variance: variance, slope: slope)
            ran = try norm.backwardThroughActivation(output: y, slope: slope, outputGradient: dy, scale: tscale, shift: tshift, mean: mean,
                                                     variance: variance, inputGradient: dy, scaleGradient: ds, shiftGradient: dsh)
        } else {
            let norm = try BatchNormalization(dims: dims, layout: layout)
            try norm.forwardTraining(input: tx, scale: tscale, shift: tshift, output: y, mean: mean, variance: variance,
                                     runningMean: Tensor(zeros: [c]), runningVariance: Tensor(zeros: [c]), slope: slope)
            ran = try norm.backwardThroughActivation(output: y, slope: slope, outputGradient: dy, scale: tscale, shift: tshift, mean: mean,
                                                     variance: variance, inputGradient: dy, scaleGradient: ds, shiftGradient: dsh)
        }
        #expect(ran == Runtime.ownKernelLayouts.contains(layout))
        guard ran else {
            #expect(try dy.toArray() == dyValues.map { Float($0) })
            return
        }
        let ref = Reference.normalization(x, dims: dims, scale: scale, shift: shift, epsilon: 1e-5, perSample: perSample)
        let gated = zip(dyValues, ref.y).map { $1 > 0 ? $0 : $0 * Double(slope) }
        let back = Reference.normalizationBackward(x, dims: dims, scale: scale, outputGradient: gated, epsilon: 1e-5, perSample: perSample)
        expectClose(try dy.toArray(), back.input, tolerance: 1e-3, "\(layout) input gradient")
        expectClose(try ds.toArray(), back.scale.map { $0 + 0.5 }, tolerance: 1e-3, "\(layout) weight gradient")
        expectClose(try dsh.toArray(), back.shift, tolerance: 1e-3, "\(layout) bias gradient")
    }

    @Test("reference normalization backward matches finite differences", arguments: [false, true])
    func finiteDifferences(perSample: Bool) {
        var rng = SeededRandom(13)
        let dims = [2, 2, 3, 2]
        let x = rng.values(24), scale = rng.values(2).map { $0 + 1.5 }, shift = rng.values(2), r = rng.values(24)
        let back = Reference.normalizationBackward(x, dims: dims, scale: scale, outputGradient: r, epsilon: 1e-5, perSample: perSample)
        let f = { (x: [Double], s: [Double]) in
            dot(r, Reference.normalization(x, dims: dims, scale: s, shift: shift, epsilon: 1e-5, perSample: perSample).y)
        }
        expectClose(back.input.map(Float.init), numericGradient(x) { f($0, scale) }, tolerance: 1e-5, "dx")
        expectClose(back.scale.map(Float.init), numericGradient(scale) { f(x, $0) }, tolerance: 1e-5, "dscale")
    }

    @Test("wrong statistics sizes throw")
    func rejectsBadInput() throws {
        let bn = try BatchNormalization(dims: [2, 4, 3, 3], layout: .plain)
        let x = try Tensor(zeros: [2, 4, 3, 3])
        let c4 = try Tensor(zeros: [4]), c3 = try Tensor(zeros: [3])
        #expect(throws: EngineError.self) {
            try bn.forwardTraining(input: x, scale: c3, shift: c4, output: x, mean: c4, variance: c4, runningMean: c4, runningVariance: c4)
        }
        #expect(throws: EngineError.self) {
            try bn.forwardTraining(input: Tensor(zeros: [2, 4, 3, 2]), scale: c4, shift: c4, output: x, mean: c4,
                                   variance: c4, runningMean: c4, runningVariance: c4)
        }
        #expect(throws: EngineError.self) { try InstanceNormalization(dims: [2, 0, 3, 3]) }
    }
}

@Suite("Pointwise and structural ops")
struct PointwiseTests {
    @Test("leaky ReLU forward and backward (in place too)", arguments: allLayouts)
    func leakyReLU(layout: Layout) throws {
        var rng = SeededRandom(17)
        let dims = [2, 5, 4, 3]
        let x = rounded(rng.values(120)), dy = rounded(rng.values(120))
        let act = try LeakyReLU(dims: dims, layout: layout, slope: 0.01)
        let t = try tensor(dims, x, layout: layout)
        try act.forward(input: t, output: t)
        expectClose(try t.toArray(), Reference.leakyReLU(x, slope: 0.01), "forward")
        let dx = try Tensor(zeros: dims, layout: layout)
        // Backward from the in-place output: same sign as the input.
        try act.backward(input: t, outputGradient: try tensor(dims, dy, layout: layout), inputGradient: dx)
        expectClose(try dx.toArray(), Reference.leakyReLUBackward(x, outputGradient: dy, slope: 0.01), "backward")
    }

    @Test("add and accumulate", arguments: allLayouts)
    func add(layout: Layout) throws {
        var rng = SeededRandom(19)
        let dims = [2, 3, 4, 5, 2]
        let a = rounded(rng.values(240)), b = rounded(rng.values(240))
        let ta = try tensor(dims, a, layout: layout), tb = try tensor(dims, b, layout: layout)
        try Elementwise.accumulate(tb, into: ta)
        expectClose(try ta.toArray(), zip(a, b).map(+), "a + b")
        #expect(throws: EngineError.self) { try Elementwise.accumulate(Tensor(zeros: [2, 3, 4, 5, 1]), into: ta) }
    }

    @Test("concatenate and split channels", arguments: [(32, 32), (3, 5), (16, 8)], allLayouts)
    func concat(_ channels: (Int, Int), layout: Layout) throws {
        var rng = SeededRandom(23)
        let (ca, cb) = channels
        let spatial = [3, 5]
        let a = rounded(rng.values(2 * ca * 15)), b = rounded(rng.values(2 * cb * 15))
        let out = try Tensor(zeros: [2, ca + cb] + spatial, layout: layout)
        try Elementwise.concatenateChannels(try tensor([2, ca] + spatial, a, layout: layout),
                                            try tensor([2, cb] + spatial, b, layout: layout), into: out)
        let ref = Reference.concatenate(a, b, batch: 2)
        expectClose(try out.toArray(), ref, tolerance: 0, "concatenation")
        let (ga, gb) = (try Tensor(zeros: [2, ca] + spatial, layout: layout), try Tensor(zeros: [2, cb] + spatial, layout: layout))
        try Elementwise.splitChannels(out, into: ga, gb)
        expectClose(try ga.toArray(), a, tolerance: 0, "first part")
        expectClose(try gb.toArray(), b, tolerance: 0, "second part")
        #expect(throws: EngineError.self) {
            try Elementwise.concatenateChannels(ga, gb, into: Tensor(zeros: [2, ca + cb + 1] + spatial, layout: layout))
        }
    }
}

@Suite("Losses")
struct LossTests {
    static let cases: [[Int]] = [[2, 4, 5, 3], [1, 4, 3, 2, 4], [3, 2, 7, 1]]

    @Test("softmax, cross-entropy and Dice match the reference; gradients match finite differences", arguments: cases)
    func losses(_ dims: [Int]) throws {
        var rng = SeededRandom(29)
        let z = rounded(rng.values(dims.reduce(1, *), scale: 3))
        let voxels = dims[0] * dims.dropFirst(2).reduce(1, *)
        let labels = rng.labels(voxels, classes: dims[1])
        let target = try Labels(dims: [dims[0], 1] + dims.dropFirst(2), values: labels)
        let logits = try tensor(dims, z)

        expectClose(try Losses.softmax(logits).toArray(), Reference.softmax(z, dims: dims), "softmax")

        let g = try Tensor(zeros: dims)
        let ce = try Losses.crossEntropy(logits: logits, target: target, gradient: g)
        let refCE = Reference.crossEntropy(z, dims: dims, target: labels)
        #expect(abs(Double(ce) - refCE.loss) <= 1e-5 * max(1, refCE.loss))
        expectClose(try g.toArray(), refCE.gradient, "cross-entropy gradient")
        let numCE = numericGradient(z) { Reference.crossEntropy($0, dims: dims, target: labels).loss }
        expectClose(refCE.gradient.map(Float.init), numCE, tolerance: 1e-6, "reference CE gradient")

        let gd = try Tensor(zeros: dims)
        let dice = try Losses.dice(logits: logits, target: target, gradient: gd, scale: 0.5)
        let refDice = Reference.dice(z, dims: dims, target: labels)
        #expect(abs(Double(dice) - refDice) <= 1e-5)
        let numDice = numericGradient(z) { Reference.dice($0, dims: dims, target: labels) }
        expectClose(try gd.toArray(), numDice.map { 0.5 * $0 }, "Dice gradient (scaled 0.5)")

        // Gradients accumulate into one buffer: CE + Dice.
        try Losses.dice(logits: logits, target: target, gradient: g)
        expectClose(try g.toArray(), zip(refCE.gradient, numDice).map(+), "accumulated CE + Dice gradient")

        // Both in two passes: the same losses and the same sum of gradients.
        let gb = try Tensor(zeros: dims)
        let both = try Losses.diceAndCrossEntropy(logits: logits, target: target, gradient: gb, scale: 0.5)
        #expect(abs(Double(both.dice) - refDice) <= 1e-5)
        #expect(abs(Double(both.crossEntropy) - refCE.loss) <= 1e-5 * max(1, refCE.loss))
        expectClose(try gb.toArray(), zip(refCE.gradient, numDice).map { 0.5 * ($0 + $1) }, "Dice + CE gradient in two passes")
    }

    /// Logits far apart (softmax probabilities below float's range) and equal: finite losses and gradients that
    /// match the float64 reference, and -log p_t taken as log-sum-exp, not clipped where p_t underflows.
    @Test("extreme logits give the reference's losses and gradients")
    func extremeLogits() throws {
        let dims = [1, 4, 5, 7]  // 35 voxels: two full vectors of 16 and a partial one
        var rng = SeededRandom(37)
        let z = rounded(rng.values(dims.reduce(1, *), scale: 1).enumerated().map { i, v in i % 3 == 0 ? v * 200 : (i % 3 == 1 ? 0 : v) })
        let labels = rng.labels(35, classes: 4)
        let target = try Labels(dims: [1, 1, 5, 7], values: labels)
        let g = try Tensor(zeros: dims)
        let both = try Losses.diceAndCrossEntropy(logits: tensor(dims, z), target: target, gradient: g)
        let refCE = Reference.crossEntropy(z, dims: dims, target: labels)
        #expect(both.crossEntropy.isFinite && both.dice.isFinite)
        #expect(abs(Double(both.crossEntropy) - refCE.loss) <= 1e-5 * max(1, refCE.loss), "\(both.crossEntropy) vs \(refCE.loss)")
        #expect(abs(Double(both.dice) - Reference.dice(z, dims: dims, target: labels)) <= 1e-5)
        let numDice = numericGradient(z) { Reference.dice($0, dims: dims, target: labels) }
        expectClose(try g.toArray(), zip(refCE.gradient, numDice).map(+), "gradient")
    }

    @Test("losses over many parallel units match the reference, the same with 1 thread as with several")
    func manyUnits() throws {
        let dims = [3, 4, 96, 80]  // 23,040 voxels: two units of the losses' parallel split
        var rng = SeededRandom(31)
        let z = rounded(rng.values(dims.reduce(1, *), scale: 3))
        let labels = rng.labels(dims[0] * 96 * 80, classes: dims[1])
        let target = try Labels(dims: [dims[0], 1, 96, 80], values: labels)
        let logits = try tensor(dims, z)
        func run() throws -> (Float, Float, [Float]) {
            let g = try Tensor(zeros: dims)
            let ce = try Losses.crossEntropy(logits: logits, target: target, gradient: g)
            let dice = try Losses.dice(logits: logits, target: target, gradient: g, scale: 0.5)
            return (ce, dice, try g.toArray())
        }
        let several = try run()
        let threads = Runtime.threads
        Runtime.setThreads(1)
        let one = try run()
        Runtime.setThreads(threads)
        #expect(one.0 == several.0 && one.1 == several.1 && one.2 == several.2)
        let refCE = Reference.crossEntropy(z, dims: dims, target: labels)
        #expect(abs(Double(several.0) - refCE.loss) <= 1e-5 * max(1, refCE.loss))
        #expect(abs(Double(several.1) - Reference.dice(z, dims: dims, target: labels)) <= 1e-5)
        // Without a Dice gradient reference at this size: the CE part alone.
        let ceOnly = try Tensor(zeros: dims)
        _ = try Losses.crossEntropy(logits: logits, target: target, gradient: ceOnly)
        expectClose(try ceOnly.toArray(), refCE.gradient, "cross-entropy gradient")
    }

    @Test("Dice is 0 for a confident correct prediction and handles absent classes")
    func diceLimits() throws {
        let dims = [1, 3, 2, 2]
        let labels: [UInt8] = [0, 1, 1, 0]   // class 2 absent
        var z = [Double](repeating: -20, count: 12)
        for (v, t) in labels.enumerated() { z[Int(t) * 4 + v] = 20 }
        let loss = try Losses.dice(logits: tensor(dims, z), target: Labels(dims: [1, 1, 2, 2], values: labels))
        #expect(loss < 1e-4)
    }

    @Test("bad targets throw")
    func rejectsBadTargets() throws {
        let logits = try Tensor(zeros: [1, 4, 2, 2])
        #expect(throws: EngineError.self) {
            try Losses.crossEntropy(logits: logits, target: Labels(dims: [1, 1, 2, 2], values: [0, 1, 4, 0]))
        }
        #expect(throws: EngineError.self) {
            try Losses.dice(logits: logits, target: Labels(dims: [1, 1, 2, 3], values: [UInt8](repeating: 0, count: 6)))
        }
        #expect(throws: EngineError.self) { try Labels(dims: [1, 2, 2, 2], values: [UInt8](repeating: 0, count: 8)) }
        #expect(throws: EngineError.self) {
            try Losses.dice(logits: Tensor(zeros: [1, 4, 2, 2], layout: .native),
                            target: Labels(dims: [1, 1, 2, 2], values: [0, 0, 0, 0]))
        }
    }
}
