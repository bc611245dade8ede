import Engine
import Testing

/// Member 1 of a group of two, alone: its sums are left as they are and recorded, so that member 0 can then
/// be run with them. The statistics a batch norm or a loss exchanges do not depend on what comes back
/// (sums of x and x^2, of dy and dy * x; counts and the loss's sums), so the recording is exactly member 1's part.
final class RecordingMember: ProcessGroup, @unchecked Sendable {
    let rank = 1, size = 2
    var sums: [[Double]] = []
    func sum(_ values: UnsafeMutablePointer<Double>, count: Int) throws { sums.append(Array(UnsafeBufferPointer(start: values, count: count))) }
    func sum(_ values: UnsafeMutablePointer<Float>, count: Int) throws { throw EngineError.invalidArgument(op: "test group", message: "float sum") }
    func broadcast(_ bytes: UnsafeMutableRawPointer, count: Int, from root: Int) throws {}
}

/// Member 0 of that group: each sum adds member 1's recorded part, in order.
final class ReplayingMember: ProcessGroup, @unchecked Sendable {
    let rank = 0, size = 2
    var other: [[Double]]
    init(_ other: [[Double]]) { self.other = other }
    func sum(_ values: UnsafeMutablePointer<Double>, count: Int) throws {
        guard let part = other.first, part.count == count else { throw EngineError.invalidArgument(op: "test group", message: "sums out of step") }
        other.removeFirst()
        for i in 0 ..< count { values[i] += part[i] }
    }
    func sum(_ values: UnsafeMutablePointer<Float>, count: Int) throws { throw EngineError.invalidArgument(op: "test group", message: "float sum") }
    func broadcast(_ bytes: UnsafeMutableRawPointer, count: Int, from root: Int) throws {}
}

@Suite("Process groups")
struct ProcessGroupTests {
    /// Samples [from, to) of a plain (N, ...) array.
    static func rows(_ v: [Double], _ dims: [Int], _ r: Range<Int>) -> [Double] {
        let per = dims.dropFirst().reduce(1, *)
        return Array(v[r.lowerBound * per ..< r.upperBound * per])
    }

    @Test("batch norm synchronised over two halves of a batch computes what one batch norm computes on the whole",
          arguments: [[2, 5, 7, 3], [4, 32, 6, 5], [3, 3, 5, 4, 3]], allLayouts)
    func synchronizedBatchNorm(_ dims: [Int], layout: Layout) throws {
        var rng = SeededRandom(11)
        let c = dims[1], n = dims[0]
        let x = rounded(rng.values(dims.reduce(1, *), scale: 3).map { $0 + 1.5 })
        let dy = rounded(rng.values(x.count))
        let scale = rounded(rng.values(c).map { $0 + 1.2 }), shift = rounded(rng.values(c))
        let ref = Reference.normalization(x, dims: dims, scale: scale, shift: shift, epsilon: 1e-5, perSample: false)
        let back = Reference.normalizationBackward(x, dims: dims, scale: scale, outputGradient: dy, epsilon: 1e-5, perSample: false)
        let shares = [0 ..< n / 2, n / 2 ..< n]  // member 0's, member 1's (sizes may differ)

        func run(_ member: Int, _ group: ProcessGroup) throws -> (y: [Float], dx: [Float], mean: [Float], runVar: [Float], ds: [Float]) {
            let share = shares[member]
            let d = [share.count] + dims.dropFirst()
            let bn = try BatchNormalization(dims: d, layout: layout)
            let (tscale, tshift) = (try tensor([c], scale), try tensor([c], shift))
            let (mean, variance) = (try Tensor(zeros: [c]), try Tensor(zeros: [c]))
            let runMean = try Tensor(zeros: [c]), runVar = try Tensor(dims: [c], values: [Float](repeating: 1, count: c))
            let tx = try tensor(d, Self.rows(x, dims, share), layout: layout)
            let y = try Tensor(zeros: d, layout: layout)
            try bn.forwardTraining(input: tx, scale: tscale, shift: tshift, output: y, mean: mean, variance: variance,
                                   runningMean: runMean, runningVariance: runVar, across: group)
            let g = try tensor(d, Self.rows(dy, dims, share), layout: layout)
            let (ds, dsh) = (try Tensor(zeros: [c]), try Tensor(zeros: [c]))
            // In place, as the network's backward runs it.
            try bn.backward(input: tx, outputGradient: g, scale: tscale, mean: mean, variance: variance,
                            inputGradient: g, scaleGradient: ds, shiftGradient: dsh, across: group)
            return (try y.toArray(), try g.toArray(), try mean.toArray(), try runVar.toArray(), try ds.toArray())
        }
        let recording = RecordingMember()
        _ = try run(1, recording)
        let zero = try run(0, ReplayingMember(recording.sums))
        expectClose(zero.y, Self.rows(ref.y, dims, shares[0]), "member 0's output")
        expectClose(zero.mean, ref.mean, "global mean")
        let m = Double(dims[0] * dims.dropFirst(2).reduce(1, *))
        expectClose(zero.runVar, ref.variance.map { 0.9 + 0.1 * $0 * m / (m - 1) }, "running variance (global count)")
        expectClose(zero.dx, Self.rows(back.input, dims, shares[0]), "member 0's input gradient")
        // The members' weight gradients add up to the whole batch's (member 1's is from its own statistics, so
        // only member 0's part is checked against a direct sum over its rows).
        let xhat = Self.rows(ref.y, dims, shares[0]).enumerated().map { i, v in
            let ch = (i / dims.dropFirst(2).reduce(1, *)) % c
            return (v - shift[ch]) / scale[ch]
        }
        let part = (0 ..< c).map { ch in
            xhat.indices.filter { ($0 / dims.dropFirst(2).reduce(1, *)) % c == ch }.reduce(0.0) { $0 + xhat[$1] * Self.rows(dy, dims, shares[0])[$1] }
        }
        expectClose(zero.ds, part, tolerance: 1e-3, "member 0's part of the weight gradient")
    }

    @Test("the loss over two halves of a batch is the whole batch's, and each half gets its rows of the gradient")
    func sharedLoss() throws {
        var rng = SeededRandom(3)
        let dims = [4, 4, 6, 5]
        let z = rounded(rng.values(dims.reduce(1, *), scale: 2))
        let labels = rng.labels(4 * 30, classes: 4)
        let full = try tensor(dims, z)
        let g = try Tensor(zeros: dims)
        let dice = try Losses.dice(logits: full, target: Labels(dims: [4, 1, 6, 5], values: labels), gradient: g, scale: 0.7)
        let ce = try Losses.crossEntropy(logits: full, target: Labels(dims: [4, 1, 6, 5], values: labels), gradient: g, scale: 0.7)
        func half(_ r: Range<Int>, _ group: ProcessGroup) throws -> (Float, Float, [Float]) {
            let d = [r.count, 4, 6, 5]
            let t = try tensor(d, Self.rows(z, dims, r)), gh = try Tensor(zeros: d)
            let y = try Labels(dims: [r.count, 1, 6, 5], values: Array(labels[r.lowerBound * 30 ..< r.upperBound * 30]))
            let a = try Losses.dice(logits: t, target: y, gradient: gh, scale: 0.7, across: group)
            let b = try Losses.crossEntropy(logits: t, target: y, gradient: gh, scale: 0.7, across: group)
            return (a, b, try gh.toArray())
        }
        let recording = RecordingMember()
        _ = try half(1 ..< 4, recording)
        let (d0, c0, g0) = try half(0 ..< 1, ReplayingMember(recording.sums))
        #expect(abs(d0 - dice) <= 1e-6 * max(1, abs(dice)))
        #expect(abs(c0 - ce) <= 1e-6 * max(1, abs(ce)))
        expectClose(g0, Self.rows(try g.toArray().map(Double.init), dims, 0 ..< 1), tolerance: 1e-5, "member 0's gradient rows")
    }

    @Test("a batch is cut into shares that cover it once, their sizes differing by one at most")
    func shares() {
        let group = RecordingMember()
        for batch in [2, 3, 7, 64] {
            let a = group.share(of: batch, rank: 0), b = group.share(of: batch, rank: 1)
            #expect(a.lowerBound == 0 && a.upperBound == b.lowerBound && b.upperBound == batch)
            #expect(abs(a.count - b.count) <= 1)
        }
    }
}
