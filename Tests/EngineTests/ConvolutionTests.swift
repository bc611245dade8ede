@testable import Engine
import Testing

struct ConvCase: CustomTestStringConvertible, Sendable {
    let name: String
    let inputDims: [Int]
    let geometry: ConvolutionGeometry
    var testDescription: String { name }

    static func make(_ name: String, _ dims: [Int], out: Int, k: Int, s: Int = 1, bias: Bool = false,
                     transposed: Bool = false) -> ConvCase {
        ConvCase(name: name, inputDims: dims,
                 geometry: ConvolutionGeometry(spatialRank: dims.count - 2, inputChannels: dims[1], outputChannels: out,
                                               kernel: k, stride: s, bias: bias, transposed: transposed))
    }
}

/// Shapes the UNet meets: first layer (4 channels), odd sizes (155, 5, 1), odd channel counts,
/// stride 2 on odd sizes, batch > 1, 1x1 output heads, transposed upsampling.
let convCases: [ConvCase] = [
    .make("2D first layer 4->32, 12x10, batch 2", [2, 4, 12, 10], out: 32, k: 3),
    .make("2D 32->64 stride 2 on odd 15x11", [2, 32, 15, 11], out: 64, k: 3, s: 2),
    .make("2D odd channels 3->5 on 155x5", [1, 3, 155, 5], out: 5, k: 3),
    .make("2D 1x1 spatial 16->16", [3, 16, 1, 1], out: 16, k: 3),
    .make("2D output head 1x1 32->4 with bias", [2, 32, 6, 5], out: 4, k: 1, bias: true),
    .make("2D transposed 32->16 stride 2 with bias", [2, 32, 5, 3], out: 16, k: 2, s: 2, bias: true, transposed: true),
    .make("3D first layer 4->8 on 5x6x7", [1, 4, 5, 6, 7], out: 8, k: 3),
    .make("3D 8->16 stride 2 on odd 7x5x9, batch 2", [2, 8, 7, 5, 9], out: 16, k: 3, s: 2),
    .make("3D size-1 axis 3->5 on 1x5x9", [1, 3, 1, 5, 9], out: 5, k: 3),
    .make("3D 16->3 head with bias", [1, 16, 4, 3, 5], out: 3, k: 1, bias: true),
    .make("3D transposed 16->8 stride 2 with bias", [1, 16, 3, 3, 2], out: 8, k: 2, s: 2, bias: true, transposed: true),
    .make("3D 32->32 at 8^3", [1, 32, 8, 8, 8], out: 32, k: 3),
]

@Suite("Convolution")
struct ConvolutionTests {
    @Test("forward and backward match the reference", arguments: convCases, allLayouts)
    func matchesReference(_ c: ConvCase, layout: Layout) throws {
        var rng = SeededRandom(7)
        let g = c.geometry
        let x = rounded(rng.values(c.inputDims.reduce(1, *)))
        let w = rounded(rng.values(g.weightDims.reduce(1, *), scale: 0.3))
        let b = g.bias ? rounded(rng.values(g.outputChannels)) : nil
        let conv = try Convolution(g, inputDims: c.inputDims, layout: layout)
        let ref = Reference.convolution(x, inputDims: c.inputDims, weight: w, bias: b, g)
        #expect(conv.outputDims == ref.dims)

        let tx = try tensor(c.inputDims, x, layout: layout)
        let tw = try tensor(g.weightDims, w)
        let tb = try b.map { try tensor([g.outputChannels], $0) }
        let y = try conv(tx, weight: tw, bias: tb)
        expectClose(try y.toArray(), ref.values, "\(c.name) forward")

        let dy = rounded(rng.values(ref.values.count))
        let refBack = Reference.convolutionBackward(x, inputDims: c.inputDims, weight: w, outputGradient: dy, g)
        let tdy = try tensor(conv.outputDims, dy, layout: layout)
        let dx = try Tensor(zeros: c.inputDims, layout: layout)
        try conv.backwardData(outputGradient: tdy, weight: tw, inputGradient: dx)
        expectClose(try dx.toArray(), refBack.input, "\(c.name) backward data")

        // Parameter gradients accumulate: two calls give twice the gradient.
        let dw = try Tensor(zeros: g.weightDims)
        let db = g.bias ? try Tensor(zeros: [g.outputChannels]) : nil
        try conv.backwardWeights(input: tx, outputGradient: tdy, weightGradient: dw, biasGradient: db)
        expectClose(try dw.toArray(), refBack.weight, "\(c.name) backward weights")
        if let db { expectClose(try db.toArray(), refBack.bias, "\(c.name) backward bias") }
        try conv.backwardWeights(input: tx, outputGradient: tdy, weightGradient: dw, biasGradient: db)
        expectClose(try dw.toArray(), refBack.weight.map { 2 * $0 }, "\(c.name) accumulated weights")
    }

    @Test("reference backward matches finite differences (Double)", arguments: [
        ConvCase.make("2D k3 s2 odd", [2, 2, 5, 4], out: 3, k: 3, s: 2, bias: true),
        ConvCase.make("3D k3 s1", [1, 2, 3, 4, 3], out: 2, k: 3),
        ConvCase.make("2D transposed", [1, 3, 3, 2], out: 2, k: 2, s: 2, bias: true, transposed: true),
        ConvCase.make("3D transposed", [1, 2, 2, 2, 3], out: 2, k: 2, s: 2, transposed: true),
    ])
    func finiteDifferences(_ c: ConvCase) throws {
        var rng = SeededRandom(11)
        let g = c.geometry
        let x = rng.values(c.inputDims.reduce(1, *))
        let w = rng.values(g.weightDims.reduce(1, *))
        let b = g.bias ? rng.values(g.outputChannels) : nil
        let outCount = Reference.convolution(x, inputDims: c.inputDims, weight: w, bias: b, g).values.count
        let r = rng.values(outCount) // L = <r, y>, so dL/dy = r
        let back = Reference.convolutionBackward(x, inputDims: c.inputDims, weight: w, outputGradient: r, g)
        let nx = numericGradient(x) { dot(r, Reference.convolution($0, inputDims: c.inputDims, weight: w, bias: b, g).values) }
        let nw = numericGradient(w) { dot(r, Reference.convolution(x, inputDims: c.inputDims, weight: $0, bias: b, g).values) }
        expectClose(back.input.map(Float.init), nx, tolerance: 1e-6, "dx")
        expectClose(back.weight.map(Float.init), nw, tolerance: 1e-6, "dw")
        if let b {
            let nb = numericGradient(b) { dot(r, Reference.convolution(x, inputDims: c.inputDims, weight: w, bias: $0, g).values) }
            expectClose(back.bias.map(Float.init), nb, tolerance: 1e-6, "db")
        }
        // The fast kernels on the same tiny case agree with the finite differences too.
        let conv = try Convolution(g, inputDims: c.inputDims)
        let tx = try tensor(c.inputDims, x, layout: .native)
        let dx = try Tensor(zeros: c.inputDims, layout: .native)
        let tr = try tensor(conv.outputDims, r, layout: .native)
        try conv.backwardData(outputGradient: tr, weight: try tensor(g.weightDims, w), inputGradient: dx)
        expectClose(try dx.toArray(), nx, "fast dx vs finite differences")
        _ = tx
    }

    @Test("wrong shapes, channels and layouts throw")
    func rejectsBadInput() throws {
        let g = ConvolutionGeometry(spatialRank: 2, inputChannels: 4, outputChannels: 8, kernel: 3)
        #expect(throws: EngineError.self) { try Convolution(g, inputDims: [1, 3, 8, 8]) }       // channels
        #expect(throws: EngineError.self) { try Convolution(g, inputDims: [1, 4, 8, 8, 8]) }    // rank
        let big = ConvolutionGeometry(spatialRank: 2, inputChannels: 4, outputChannels: 8, kernel: 5, padding: 0)
        #expect(throws: EngineError.self) { try Convolution(big, inputDims: [1, 4, 3, 3]) }     // kernel > input
        let conv = try Convolution(g, inputDims: [1, 4, 8, 8])
        let w = try Tensor(zeros: g.weightDims)
        #expect(throws: EngineError.self) {                                                     // wrong input size
            try conv.forward(input: Tensor(zeros: [1, 4, 8, 9], layout: .native), weight: w,
                             output: Tensor(zeros: conv.outputDims, layout: .native))
        }
        #expect(throws: EngineError.self) {                                                     // wrong layout
            try conv.forward(input: Tensor(zeros: [1, 4, 8, 8]), weight: w,
                             output: Tensor(zeros: conv.outputDims, layout: .native))
        }
        #expect(throws: EngineError.self) {                                                     // wrong weight shape
            try conv.forward(input: Tensor(zeros: [1, 4, 8, 8], layout: .native), weight: Tensor(zeros: [8, 4, 3, 2]),
                             output: Tensor(zeros: conv.outputDims, layout: .native))
        }
        let withBias = try Convolution(ConvolutionGeometry(spatialRank: 2, inputChannels: 4, outputChannels: 8, kernel: 1, bias: true),
                                       inputDims: [1, 4, 2, 2])
        #expect(throws: EngineError.self) {                                                     // missing bias
            try withBias.forward(input: Tensor(zeros: [1, 4, 2, 2], layout: .native), weight: Tensor(zeros: [8, 4, 1, 1]),
                                 output: Tensor(zeros: [1, 8, 2, 2], layout: .native))
        }
    }
}

@Suite("Convolution kernels")
struct ConvolutionKernelTests {
    /// Backward-weights on blocked rows of >= 32 outputs (3D, where oneDNN has only im2col + GEMM) or
    /// >= 64 (2D) runs on SwiftUNet's own kernel, in each width this CPU has (blocked8 with AVX2,
    /// blocked16 with AVX-512): check it against the reference on shapes that exercise its edges (odd
    /// sizes, stride 2, padded channels, a one-vector tail tile, batch > 1, bias).
    @Test("3D backward weights on blocked layouts matches the reference", arguments: [
        ConvCase.make("24->40 on 3x2x33", [1, 24, 3, 2, 33], out: 40, k: 3),
        ConvCase.make("4->16 stride 2 on 3x4x67", [1, 4, 3, 4, 67], out: 16, k: 3, s: 2),
        ConvCase.make("13->5 1x1 with bias, batch 2", [2, 13, 2, 2, 40], out: 5, k: 1, bias: true),
        ConvCase.make("8->8 on 1x1x32", [1, 8, 1, 1, 32], out: 8, k: 3),
        // 2D runs through the same kernel as depth-1 3D when output rows are >= 64 wide.
        ConvCase.make("2D 12->24 on 3x70, batch 3", [3, 12, 3, 70], out: 24, k: 3),
        ConvCase.make("2D 4->16 stride 2 on 5x131 with bias", [2, 4, 5, 131], out: 16, k: 3, s: 2, bias: true),
    ], Runtime.ownKernelLayouts)
    func backwardWeightsBlocked(_ c: ConvCase, layout: Layout) throws {
        var rng = SeededRandom(31)
        let g = c.geometry
        let x = rounded(rng.values(c.inputDims.reduce(1, *)))
        let w = rounded(rng.values(g.weightDims.reduce(1, *)))
        let conv = try Convolution(g, inputDims: c.inputDims, layout: layout)
        let dy = rounded(rng.values(conv.outputDims.reduce(1, *)))
        let ref = Reference.convolutionBackward(x, inputDims: c.inputDims, weight: w, outputGradient: dy, g)
        let dw = try Tensor(dims: g.weightDims, values: [Float](repeating: 0.5, count: w.count))
        let db = g.bias ? try Tensor(zeros: [g.outputChannels]) : nil
        try conv.backwardWeights(input: tensor(c.inputDims, x, layout: layout),
                                 outputGradient: tensor(conv.outputDims, dy, layout: layout),
                                 weightGradient: dw, biasGradient: db)
        expectClose(try dw.toArray(), ref.weight.map { $0 + 0.5 }, "\(c.name): weights (accumulated onto 0.5)")
        if let db { expectClose(try db.toArray(), ref.bias, "\(c.name): bias") }
        let impl = conv.implementation(.backwardWeights)
        #expect(!impl.isEmpty && !impl.contains("gemm"), "\(c.name) ran on \(impl)")
        if c.name.hasPrefix("2D") { #expect(impl.hasPrefix("SwiftUNet"), "\(c.name) ran on \(impl)") }
    }
}

@Suite("Transposed convolution routes")
struct TransposedRouteTests {
    /// kernel == stride upsampling runs on SwiftUNet's own forward (fused on blocked8 + AVX2,
    /// 1x1 convolution + shuffle otherwise); other cases stay on oneDNN. All match the reference.
    /// The second case's weights (over 1 MiB) take the tiles across rows, partial channel blocks and a partial
    /// last tile included; the first takes rows.
    static let cases = [
        ConvCase.make("3D 16->16 up, odd 3x2x5", [2, 16, 3, 2, 5], out: 16, k: 2, s: 2, bias: true, transposed: true),
        ConvCase.make("2D 280->272 up on 2x5 (deep: tiles across rows)", [1, 280, 2, 5], out: 272, k: 2, s: 2, bias: true, transposed: true),
    ]

    @Test("upsampling forward takes SwiftUNet's route and matches the reference", arguments: cases, allLayouts)
    func route(_ c: ConvCase, layout: Layout) throws {
        var rng = SeededRandom(37)
        let g = c.geometry
        let x = rounded(rng.values(c.inputDims.reduce(1, *))), w = rounded(rng.values(g.weightDims.reduce(1, *)))
        let b = rounded(rng.values(g.outputChannels))
        let conv = try Convolution(g, inputDims: c.inputDims, layout: layout)
        let y = try conv(tensor(c.inputDims, x, layout: layout), weight: tensor(g.weightDims, w), bias: tensor([g.outputChannels], b))
        expectClose(try y.toArray(), Reference.convolution(x, inputDims: c.inputDims, weight: w, bias: b, g).values, "\(c.name) forward")
        #expect(conv.implementation(.forward).hasPrefix("SwiftUNet"), "ran on \(conv.implementation(.forward))")
    }
}

@Suite("Winograd convolution")
struct WinogradTests {
    /// Edge tiles on every axis (sizes not multiples of the tile), output channels that half-fill
    /// the last GEMM panel (two vectors wide), batch > 1, bias; both the per-thread (small kernel)
    /// and the shared-chunk (kernel over 12 MB transformed) paths; for each width this CPU has.
    static let cases8 = [
        ConvCase.make("2D 16->24 on 7x11, batch 2, bias", [2, 16, 7, 11], out: 24, k: 3, bias: true),
        ConvCase.make("2D 8->8 on 1x1", [1, 8, 1, 1], out: 8, k: 3),
        ConvCase.make("2D 296->296 on 5x6 (shared chunks)", [1, 296, 5, 6], out: 296, k: 3),
        ConvCase.make("2D 16->24 on 17x14, batch 2, bias, F(6x6)", [2, 16, 17, 14], out: 24, k: 3, bias: true),
        ConvCase.make("2D 8->16 on 9x20, batch 2 (runs of inner F(4x4) tiles)", [2, 8, 9, 20], out: 16, k: 3),
        ConvCase.make("2D 8->8 on 13x30, batch 2, F(6x6) (runs of inner tiles)", [2, 8, 13, 30], out: 8, k: 3),
        ConvCase.make("3D 8->16 on 5x3x7, bias", [1, 8, 5, 3, 7], out: 16, k: 3, bias: true),
        ConvCase.make("3D 16->8 on 4x4x4, batch 2", [2, 16, 4, 4, 4], out: 8, k: 3),
        ConvCase.make("3D 8->8 on 12x12x11 (weight gradients: several chunks per thread)", [1, 8, 12, 12, 11], out: 8, k: 3),
        ConvCase.make("3D 8->16 on 16x16x13, F(4x4x4)", [1, 8, 16, 16, 13], out: 16, k: 3),
    ]
    static let cases16 = [
        ConvCase.make("2D 16->48 on 7x11, batch 2, bias", [2, 16, 7, 11], out: 48, k: 3, bias: true),
        ConvCase.make("2D 16->16 on 1x1", [1, 16, 1, 1], out: 16, k: 3),
        ConvCase.make("2D 304->304 on 5x6 (shared chunks)", [1, 304, 5, 6], out: 304, k: 3),
        ConvCase.make("2D 16->48 on 17x14, batch 2, F(6x6)", [2, 16, 17, 14], out: 48, k: 3),
        ConvCase.make("2D 16->16 on 9x20, batch 2 (runs of inner F(4x4) tiles)", [2, 16, 9, 20], out: 16, k: 3),
        ConvCase.make("2D 16->16 on 13x30, batch 2, F(6x6) (runs of inner tiles)", [2, 16, 13, 30], out: 16, k: 3),
        ConvCase.make("3D 16->32 on 5x3x7, bias", [1, 16, 5, 3, 7], out: 32, k: 3, bias: true),
        ConvCase.make("3D 32->16 on 4x4x4, batch 2", [2, 32, 4, 4, 4], out: 16, k: 3),
        ConvCase.make("3D 16->16 on 12x12x11 (weight gradients: several chunks per thread)", [1, 16, 12, 12, 11], out: 16, k: 3),
        ConvCase.make("3D 16->32 on 16x16x13, F(4x4x4)", [1, 16, 16, 16, 13], out: 32, k: 3),
    ]
    static var cases: [(ConvCase, Layout)] {
        Runtime.ownKernelLayouts.flatMap { layout in (layout == .blocked16 ? cases16 : cases8).map { ($0, layout) } }
    }

    @Test("forward and backward data match the reference", arguments: cases)
    func matchesReference(_ c: ConvCase, layout: Layout) throws {
        var rng = SeededRandom(41)
        let g = c.geometry
        let x = rounded(rng.values(c.inputDims.reduce(1, *)))
        let w = rounded(rng.values(g.weightDims.reduce(1, *), scale: 0.3))
        let b = g.bias ? rounded(rng.values(g.outputChannels)) : nil
        let conv = try Convolution(g, inputDims: c.inputDims, layout: layout, algorithm: .winograd)
        #expect(conv.implementation(.forward).contains("winograd"), "ran on \(conv.implementation(.forward))")
        // 3D layers of 64 tiles of 4x4x4 or more take F(4x4x4), smaller ones F(2x2x2); 2D layers whose tiles
        // of 6x6 save 15% of the products F(6x6), others F(4x4): all are covered.
        #expect(conv.implementation(.forward).contains("F(4x4x4") == c.name.contains("F(4x4x4)"), "\(conv.implementation(.forward))")
        #expect(conv.implementation(.forward).contains("F(6x6") == c.name.contains("F(6x6)"), "\(conv.implementation(.forward))")
        let ref = Reference.convolution(x, inputDims: c.inputDims, weight: w, bias: b, g)
        let tw = try tensor(g.weightDims, w)
        let y = try conv(tensor(c.inputDims, x, layout: layout), weight: tw, bias: b.map { try tensor([g.outputChannels], $0) })
        expectClose(try y.toArray(), ref.values, "\(c.name) forward")

        let dy = rounded(rng.values(ref.values.count))
        let refBack = Reference.convolutionBackward(x, inputDims: c.inputDims, weight: w, outputGradient: dy, g)
        let dx = try Tensor(zeros: c.inputDims, layout: layout)
        try conv.backwardData(outputGradient: tensor(conv.outputDims, dy, layout: layout), weight: tw, inputGradient: dx)
        expectClose(try dx.toArray(), refBack.input, "\(c.name) backward data")
        #expect(conv.implementation(.backwardData).contains("winograd"))

        // Weight gradients add onto what is there; without bias they go through Winograd too.
        let dw = try Tensor(dims: g.weightDims, values: [Float](repeating: 0.5, count: w.count))
        let db = g.bias ? try Tensor(zeros: [g.outputChannels]) : nil
        try conv.backwardWeights(input: tensor(c.inputDims, x, layout: layout),
                                 outputGradient: tensor(conv.outputDims, dy, layout: layout), weightGradient: dw, biasGradient: db)
        expectClose(try dw.toArray(), refBack.weight.map { $0 + 0.5 }, "\(c.name) backward weights")
        if let db { expectClose(try db.toArray(), refBack.bias, "\(c.name) backward bias") }
        #expect(conv.implementation(.backwardWeights).contains("winograd") == !g.bias, "\(conv.implementation(.backwardWeights))")
        // 2D weight gradients stay on F(4x4) whatever the forward's tile.
        if !g.bias && g.spatialRank == 2 { #expect(conv.implementation(.backwardWeights).contains("F(4x4,"), "\(conv.implementation(.backwardWeights))") }
    }

    @Test("forward reads an input joined along channels from its two parts, as from the concatenation",
          arguments: Runtime.ownKernelLayouts)
    func joinedInput(layout: Layout) throws {
        var rng = SeededRandom(53)
        let v = layout.block, (c1, c2, o) = (2 * layout.block, layout.block, 3 * layout.block)
        // 17x14: F(6x6) edge tiles and inner ones; batch 2: the second sample of each part is read at its own offset.
        let dims1 = [2, c1, 17, 14], dims2 = [2, c2, 17, 14], joined = [2, c1 + c2, 17, 14]
        let g = ConvolutionGeometry(spatialRank: 2, inputChannels: c1 + c2, outputChannels: o, kernel: 3)
        let a = rounded(rng.values(dims1.reduce(1, *))), b = rounded(rng.values(dims2.reduce(1, *)))
        let w = rounded(rng.values(g.weightDims.reduce(1, *), scale: 0.3))
        let scale = rng.values(o).map(Float.init), shift = rng.values(o).map(Float.init)
        let conv = try Convolution(g, inputDims: joined, layout: layout, algorithm: .winograd)
        #expect(conv.readsJoined(firstChannels: c1))
        #expect(!conv.readsJoined(firstChannels: c1 + c2) && !conv.readsJoined(firstChannels: 0))
        #expect(!conv.readsJoined(firstChannels: v / 2), "a split inside a channel block")
        let ref = Reference.convolution(Reference.concatenate(a, b, batch: 2), inputDims: joined, weight: w, bias: nil, g)
        let expected = ref.values.indices.map { i -> Double in
            let y = ref.values[i] * Double(scale[(i / (17 * 14)) % o]) + Double(shift[(i / (17 * 14)) % o])
            return y > 0 ? y : 0.01 * y
        }
        let y = try Tensor(zeros: conv.outputDims, layout: layout)
        try conv.forward(input: tensor(dims1, a, layout: layout), joinedWith: tensor(dims2, b, layout: layout),
                         weight: tensor(g.weightDims, w), output: y, epilogue: ConvolutionEpilogue(scale: scale, shift: shift, slope: 0.01))
        expectClose(try y.toArray(), expected, "joined input, \(layout)")
        // Parts that do not add up to the input are an error, as is a kernel that cannot read them (direct).
        #expect(throws: EngineError.self) {
            try conv.forward(input: tensor(dims1, a, layout: layout), joinedWith: tensor(dims1, a, layout: layout),
                             weight: tensor(g.weightDims, w), output: y, epilogue: ConvolutionEpilogue(scale: scale, shift: shift))
        }
        let direct = try Convolution(g, inputDims: joined, layout: layout, algorithm: .direct)
        #expect(!direct.readsJoined(firstChannels: c1))
        #expect(throws: EngineError.self) {
            try direct.forward(input: tensor(dims1, a, layout: layout), joinedWith: tensor(dims2, b, layout: layout),
                               weight: tensor(g.weightDims, w), output: y, epilogue: ConvolutionEpilogue(scale: scale, shift: shift))
        }
    }

    @Test("a kept transformed kernel is reused under its key and derived again under a new one", arguments: cases)
    func keptKernel(_ c: ConvCase, layout: Layout) throws {
        var rng = SeededRandom(47)
        let g = c.geometry
        let x = rounded(rng.values(c.inputDims.reduce(1, *)))
        let w = rounded(rng.values(g.weightDims.reduce(1, *), scale: 0.3)), w2 = w.map { $0 * -0.5 }
        let b = g.bias ? try tensor([g.outputChannels], rounded(rng.values(g.outputChannels))) : nil
        let conv = try Convolution(g, inputDims: c.inputDims, layout: layout, algorithm: .winograd)
        let input = try tensor(c.inputDims, x, layout: layout), weights = try tensor(g.weightDims, w)
        let plain = try conv(input, weight: weights, bias: b).toArray()
        conv.keepWeights(7)
        #expect(try conv(input, weight: weights, bias: b).toArray() == plain)
        // Same key, same tensor: the kernel transformed from the old values is used (the caller broke its promise).
        weights.withUnsafeMutableFloats { v in for i in v.indices { v[i] = Float(w2[i]) } }
        #expect(try conv(input, weight: weights, bias: b).toArray() == plain)
        // A new key derives it again from the new values, as does keeping nothing.
        conv.keepWeights(8)
        let changed = try conv(input, weight: weights, bias: b).toArray()
        conv.keepWeights(0)
        #expect(try conv(input, weight: weights, bias: b).toArray() == changed)
        expectClose(changed, Reference.convolution(x, inputDims: c.inputDims, weight: w2, bias: nil, g).values.enumerated().map { i, v in
            v + (g.bias ? Double(try! b!.toArray()[(i / c.inputDims.dropFirst(2).reduce(1, *)) % g.outputChannels]) : 0)
        }, "\(c.name) after new weights")
    }

    @Test("automatic choice: Winograd on a UNet-sized 3x3 layer, direct where it does not apply",
          arguments: Runtime.ownKernelLayouts)
    func automaticChoice(layout: Layout) throws {
        let unetLayer = ConvolutionGeometry(spatialRank: 2, inputChannels: 32, outputChannels: 32, kernel: 3)
        let big = try Convolution(unetLayer, inputDims: [2, 32, 48, 40], layout: layout)
        #expect(big.implementation(.forward).contains("winograd"))
        // Weight gradients at 32 channels, 2D and 3D: Winograd with AVX-512 (measured faster there), direct with AVX2.
        #expect(big.implementation(.backwardWeights).contains("winograd") == (layout == .blocked16), "\(big.implementation(.backwardWeights))")
        // 3D: F(2x2x2) (12^3: too few tiles of 4^3) as 2D; F(4x4x4) (16^3) on both widths.
        let geometry3D = ConvolutionGeometry(spatialRank: 3, inputChannels: 32, outputChannels: 32, kernel: 3)
        let layer3D = try Convolution(geometry3D, inputDims: [1, 32, 12, 12, 12], layout: layout)
        #expect(layer3D.implementation(.forward).contains("F(2x2x2"), "\(layer3D.implementation(.forward))")
        #expect(layer3D.implementation(.backwardWeights).contains("winograd") == (layout == .blocked16), "\(layer3D.implementation(.backwardWeights))")
        let tiles4 = try Convolution(geometry3D, inputDims: [1, 32, 16, 16, 16], layout: layout)
        #expect(tiles4.implementation(.backwardWeights).contains("F(4x4x4"), "\(tiles4.implementation(.backwardWeights))")
        // bf16 precision keeps the fp32 Winograd kernel where it applies (4x fewer multiplications beat bf16's 2x rate).
        if Runtime.cpuFeatures.contains(.avx512BF16) {
            #expect(try Convolution(unetLayer, inputDims: [2, 32, 48, 40], layout: layout, precision: .bf16).implementation(.forward).contains("winograd"))
        }
        // Too few tiles (6x5: tiles would compute 8x8 for 30 outputs) and stride 2 stay direct.
        let small = try Convolution(unetLayer, inputDims: [16, 32, 6, 5], layout: layout)
        #expect(!small.implementation(.forward).contains("winograd"))
        let strided = ConvolutionGeometry(spatialRank: 2, inputChannels: 32, outputChannels: 32, kernel: 3, stride: 2)
        #expect(!(try Convolution(strided, inputDims: [2, 32, 48, 40], layout: layout)).implementation(.forward).contains("winograd"))
        #expect(!(try Convolution(unetLayer, inputDims: [2, 32, 48, 40], layout: layout, algorithm: .direct))
            .implementation(.forward).contains("winograd"))
    }

    @Test("asking for Winograd where it cannot run is a clear error")
    func refusesImpossible() {
        let strided = ConvolutionGeometry(spatialRank: 2, inputChannels: 16, outputChannels: 16, kernel: 3, stride: 2)
        #expect(throws: EngineError.self) { try Convolution(strided, inputDims: [1, 16, 8, 8], layout: .blocked8, algorithm: .winograd) }
        let odd = ConvolutionGeometry(spatialRank: 2, inputChannels: 4, outputChannels: 16, kernel: 3)
        #expect(throws: EngineError.self) { try Convolution(odd, inputDims: [1, 4, 8, 8], layout: .blocked8, algorithm: .winograd) }
        let plain = ConvolutionGeometry(spatialRank: 2, inputChannels: 16, outputChannels: 16, kernel: 3)
        #expect(throws: EngineError.self) { try Convolution(plain, inputDims: [1, 16, 8, 8], layout: .plain, algorithm: .winograd) }
        // blocked16 needs channel counts divisible by 16 (and AVX-512, without which it is refused too).
        let eight = ConvolutionGeometry(spatialRank: 2, inputChannels: 8, outputChannels: 16, kernel: 3)
        #expect(throws: EngineError.self) { try Convolution(eight, inputDims: [1, 8, 8, 8], layout: .blocked16, algorithm: .winograd) }
    }
}

@Suite("Streaming stores")
struct StreamingStoreTests {
    /// Outputs over `Runtime.streamingStoreThreshold` are stored around the caches; forcing that on small
    /// layers (threshold 0) must write the very same values, for Winograd with an epilogue and for the
    /// upsampling kernel. (Other tests running meanwhile only see a different kind of store.)
    @Test(arguments: Runtime.ownKernelLayouts)
    func sameValues(layout: Layout) throws {
        var rng = SeededRandom(53)
        let c = layout == .blocked16 ? 32 : 16
        let wino = ConvolutionGeometry(spatialRank: 2, inputChannels: c, outputChannels: c, kernel: 3, bias: true)
        let up = ConvolutionGeometry(spatialRank: 3, inputChannels: c, outputChannels: c, kernel: 2, stride: 2, bias: true, transposed: true)
        for (g, dims) in [(wino, [2, c, 9, 11]), (up, [1, c, 3, 4, 5])] {
            let conv = try Convolution(g, inputDims: dims, layout: layout, algorithm: g.transposed ? .automatic : .winograd)
            #expect(conv.implementation(.forward).contains(g.transposed ? "upsample" : "winograd"), "\(conv.implementation(.forward))")
            let x = try tensor(dims, rounded(rng.values(dims.reduce(1, *))), layout: layout)
            let w = try tensor(g.weightDims, rounded(rng.values(g.weightDims.reduce(1, *), scale: 0.3)))
            let b = try tensor([c], rounded(rng.values(c)))
            let n = conv.outputDims.reduce(1, *)
            let epilogue = g.transposed ? nil : ConvolutionEpilogue(
                scale: rng.values(c).map(Float.init), shift: rng.values(c).map(Float.init),
                residual: try tensor(conv.outputDims, rounded(rng.values(n)), layout: layout), slope: 0.01)
            func run() throws -> [Float] {
                let y = try Tensor(zeros: conv.outputDims, layout: layout)
                if let epilogue { try conv.forward(input: x, weight: w, bias: b, output: y, epilogue: epilogue) }
                else { try conv.forward(input: x, weight: w, bias: b, output: y) }
                return try y.toArray()
            }
            let cached = try run()
            let saved = Runtime.streamingStoreThreshold
            Runtime.streamingStoreThreshold = 0
            defer { Runtime.streamingStoreThreshold = saved }
            let streamed = try run()
            #expect(streamed == cached, "\(g.transposed ? "upsample" : "winograd") \(layout)")
            #expect(cached.contains { $0 != 0 })
        }
    }
}

@Suite("Convolution epilogue")
struct ConvolutionEpilogueTests {
    /// y = leakyReLU(conv * scale + shift + residual) on the direct and the Winograd routes matches
    /// the reference convolution followed by the same arithmetic.
    static var routes: [(ConvolutionAlgorithm, Layout)] {
        [(.direct, .blocked8), (.direct, .blocked16), (.direct, .plain)] + Runtime.ownKernelLayouts.map { (.winograd, $0) }
    }

    @Test(arguments: routes)
    func matchesConvThenAffine(algorithm: ConvolutionAlgorithm, layout: Layout) throws {
        var rng = SeededRandom(43)
        let dims = [2, 16, 9, 7]
        // Output channels that half-fill the last GEMM panel of either width.
        let o = layout == .blocked16 ? 48 : 24
        let g = ConvolutionGeometry(spatialRank: 2, inputChannels: 16, outputChannels: o, kernel: 3, bias: true)
        let x = rounded(rng.values(dims.reduce(1, *))), w = rounded(rng.values(g.weightDims.reduce(1, *), scale: 0.3))
        let b = rounded(rng.values(o)), scale = rng.values(o).map(Float.init), shift = rng.values(o).map(Float.init)
        let conv = try Convolution(g, inputDims: dims, layout: layout, algorithm: algorithm)
        let ref = Reference.convolution(x, inputDims: dims, weight: w, bias: b, g)
        let residual = rounded(rng.values(ref.values.count))
        let spatial = 9 * 7
        // Without a residual oneDNN's direct kernels take the epilogue as post-ops (made for each slope).
        for (withResidual, slope) in [(true, Float(0.01)), (false, Float(1)), (false, Float(0.01))] {
            let expected = ref.values.indices.map { i -> Double in
                let ch = (i / spatial) % o
                let v = ref.values[i] * Double(scale[ch]) + Double(shift[ch]) + (withResidual ? residual[i] : 0)
                return v > 0 ? v : v * Double(slope)
            }
            let y = try Tensor(zeros: conv.outputDims, layout: layout)
            let r = withResidual ? try tensor(conv.outputDims, residual, layout: layout) : nil
            try conv.forward(input: tensor(dims, x, layout: layout), weight: tensor(g.weightDims, w), bias: tensor([o], b),
                             output: y, epilogue: ConvolutionEpilogue(scale: scale, shift: shift, residual: r, slope: slope))
            expectClose(try y.toArray(), expected, "\(algorithm) \(layout) residual \(withResidual)")
        }
    }

    @Test func badEpiloguesAreErrors() throws {
        let g = ConvolutionGeometry(spatialRank: 2, inputChannels: 8, outputChannels: 8, kernel: 3)
        let conv = try Convolution(g, inputDims: [1, 8, 6, 6], layout: .blocked8)
        let x = try Tensor(zeros: [1, 8, 6, 6], layout: .blocked8), w = try Tensor(zeros: g.weightDims)
        let y = try Tensor(zeros: conv.outputDims, layout: .blocked8)
        let ones = [Float](repeating: 1, count: 8)
        #expect(throws: EngineError.self) {
            try conv.forward(input: x, weight: w, output: y, epilogue: ConvolutionEpilogue(scale: [1], shift: ones))
        }
        #expect(throws: EngineError.self) {
            try conv.forward(input: x, weight: w, output: y, epilogue: ConvolutionEpilogue(scale: ones, shift: ones, slope: 2))
        }
        #expect(throws: EngineError.self) {
            try conv.forward(input: x, weight: w, output: y, epilogue: ConvolutionEpilogue(scale: ones, shift: ones, residual: y))
        }
    }
}

@Suite("bf16 convolution")
struct BF16ConvolutionTests {
    /// bf16 precision: inputs and weights rounded to bfloat16 inside the kernel, float32 results. Against
    /// the float64 reference the error is of bf16's rounding (2^-9 relative per operand), far above
    /// fp32's; on CPUs without AVX512_BF16 creating one is a typed refusal.
    @Test(arguments: [Layout.blocked16, .blocked8, .plain])
    func matchesReferenceToBF16Rounding(layout: Layout) throws {
        let c = ConvCase.make("2D 16->32 on 12x10, batch 2, bias", [2, 16, 12, 10], out: 32, k: 3, bias: true)
        let g = c.geometry
        guard Runtime.cpuFeatures.contains(.avx512BF16) else {
            #expect(throws: EngineError.self) { try Convolution(g, inputDims: c.inputDims, layout: layout, precision: .bf16) }
            return
        }
        var rng = SeededRandom(47)
        let x = rounded(rng.values(c.inputDims.reduce(1, *)))
        let w = rounded(rng.values(g.weightDims.reduce(1, *), scale: 0.3))
        let b = rounded(rng.values(g.outputChannels))
        let conv = try Convolution(g, inputDims: c.inputDims, layout: layout, precision: .bf16)
        let ref = Reference.convolution(x, inputDims: c.inputDims, weight: w, bias: b, g)
        let y = try conv(tensor(c.inputDims, x, layout: layout), weight: tensor(g.weightDims, w), bias: tensor([g.outputChannels], b))
        let dy = rounded(rng.values(ref.values.count))
        let refBack = Reference.convolutionBackward(x, inputDims: c.inputDims, weight: w, outputGradient: dy, g)
        let dx = try Tensor(zeros: c.inputDims, layout: layout)
        try conv.backwardData(outputGradient: tensor(conv.outputDims, dy, layout: layout), weight: tensor(g.weightDims, w), inputGradient: dx)
        let dw = try Tensor(zeros: g.weightDims), db = try Tensor(zeros: [g.outputChannels])
        try conv.backwardWeights(input: tensor(c.inputDims, x, layout: layout), outputGradient: tensor(conv.outputDims, dy, layout: layout),
                                 weightGradient: dw, biasGradient: db)
        for (name, got, want) in [("forward", try y.toArray(), ref.values), ("backward data", try dx.toArray(), refBack.input),
                                  ("backward weights", try dw.toArray(), refBack.weight)] {
            var diff = 0.0, scale = 0.0
            for (a, e) in zip(got, want) { diff = max(diff, abs(Double(a) - e)); scale = max(scale, abs(e)) }
            #expect(diff <= 2e-2 * scale, "\(name): \(diff / scale) of the largest value")
            #expect(diff > 1e-6 * scale, "\(name) agrees to \(diff / scale): not computed in bf16")
        }
        for d in [Convolution.Direction.forward, .backwardData, .backwardWeights] {
            #expect(conv.implementation(d).contains("bf16"), "\(d) ran on \(conv.implementation(d))")
        }
    }

    /// bf16 is worth running only where bf16 dot products outrun fp32 FMAs; fp32 is always itself. The rate is
    /// measured (in assembly, so a debug build measures what a release one does): every CPU with AVX512_BF16
    /// seen so far runs them at 0.5x (Intel Xeon) or 2x (AMD Zen 4) the fp32 FMA's flop rate.
    @Test func bf16OnlyWhereItsDotProductsAreFaster() {
        #expect(Precision.fp32.worthwhileOnThisCPU == .fp32)
        guard let speedup = Precision.bf16DotProductSpeedup else {
            #expect(!Runtime.cpuFeatures.contains(.avx512BF16))
            return
        }
        #expect(speedup > 0.3 && speedup < 3, "bf16 dot products at \(speedup)x the FMA rate")
        #expect(Precision.bf16.worthwhileOnThisCPU == (speedup >= 1.5 ? .bf16 : .fp32))
    }

    /// In bf16 precision the weight gradients of transposed convolutions, and of 2D layers with output rows of 64
    /// and more, stay in f32 (measured faster than oneDNN's bf16 kernels there): f32-accurate, not bf16-rounded.
    @Test(arguments: [
        ConvCase.make("2D transposed 32->16 stride 2 with bias", [2, 32, 5, 3], out: 16, k: 2, s: 2, bias: true, transposed: true),
        ConvCase.make("2D 16->16 stride 2, output rows of 65", [1, 16, 4, 130], out: 16, k: 3, s: 2),
    ])
    func weightGradientsStayFP32WhereFaster(_ c: ConvCase) throws {
        guard Runtime.cpuFeatures.contains(.avx512BF16) else { return }
        let g = c.geometry
        var rng = SeededRandom(48)
        let x = rng.values(c.inputDims.reduce(1, *)), w = rng.values(g.weightDims.reduce(1, *), scale: 0.3)
        let conv = try Convolution(g, inputDims: c.inputDims, layout: .blocked16, precision: .bf16)
        let dy = rng.values(conv.outputDims.reduce(1, *))
        let ref = Reference.convolutionBackward(x, inputDims: c.inputDims, weight: w, outputGradient: dy, g)
        let dw = try Tensor(zeros: g.weightDims), db = try Tensor(zeros: [g.outputChannels])
        try conv.backwardWeights(input: tensor(c.inputDims, x, layout: .blocked16), outputGradient: tensor(conv.outputDims, dy, layout: .blocked16),
                                 weightGradient: dw, biasGradient: g.bias ? db : nil)
        var diff = 0.0, scale = 0.0
        for (a, e) in zip(try dw.toArray(), ref.weight) { diff = max(diff, abs(Double(a) - e)); scale = max(scale, abs(e)) }
        #expect(diff <= 1e-5 * scale, "weight gradient: \(diff / scale) of the largest value")
        #expect(!conv.implementation(.backwardWeights).contains("bf16"), "ran on \(conv.implementation(.backwardWeights))")
    }
}
