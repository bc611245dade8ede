import Engine
import Foundation

/// The recipe's UNet, built from a configuration (see REFERENCE: NVIDIA nnUNet / Composer).
public struct UNetConfig: Codable, Sendable, Equatable {
    /// 2 or 3 spatial dimensions.
    public var dimension: Int
    public var inputChannels: Int
    public var classes: Int
    /// Filters per level (depth = count): f_i = min(2^(5+i), cap) in the presets.
    public var filters: [Int]
    /// Kernel size per level (3 in the recipe).
    public var kernels: [Int]
    /// Stride per level: 1 for the input block, then 2.
    public var strides: [Int]
    public var residual: Bool
    public var norm: NormKind
    public var negativeSlope: Float
    /// Extra 1x1 output heads on the decoder levels below full resolution (0 = off; NVIDIA uses 2).
    public var deepSupervisionHeads: Int

    public var depth: Int { filters.count }

    public init(dimension: Int, inputChannels: Int = 4, classes: Int = 4, depth: Int = 6, filterCap: Int,
                kernel: Int = 3, residual: Bool, norm: NormKind, negativeSlope: Float = 0.01, deepSupervisionHeads: Int = 0) {
        self.dimension = dimension
        self.inputChannels = inputChannels
        self.classes = classes
        filters = (0 ..< depth).map { min(1 << (5 + $0), filterCap) }
        kernels = [Int](repeating: kernel, count: depth)
        strides = [1] + [Int](repeating: 2, count: max(0, depth - 1))
        self.residual = residual
        self.norm = norm
        self.negativeSlope = negativeSlope
        self.deepSupervisionHeads = deepSupervisionHeads
    }

    /// Composer's 2D network: 6 levels, filters 32...512, residual blocks, batch norm (24,543,268 parameters).
    public static let composer2D = UNetConfig(dimension: 2, filterCap: 512, residual: true, norm: .batch)
    /// NVIDIA's 3D network: 6 levels, filters 32...320, plain blocks, instance norm (31,192,868 parameters).
    public static let nvidia3D = UNetConfig(dimension: 3, filterCap: 320, residual: false, norm: .instance)

    public static func preset(_ name: String) -> UNetConfig? {
        switch name {
        case "composer-2d": return .composer2D
        case "nvidia-3d": return .nvidia3D
        default: return nil
        }
    }

    public func validate() throws {
        guard dimension == 2 || dimension == 3 else { throw NetworkError.configuration("dimension must be 2 or 3, got \(dimension)") }
        guard depth >= 2 else { throw NetworkError.configuration("depth must be at least 2, got \(depth)") }
        guard kernels.count == depth, strides.count == depth else {
            throw NetworkError.configuration("\(depth) levels need \(depth) kernel sizes and strides, got \(kernels.count) and \(strides.count)")
        }
        guard inputChannels >= 1, classes >= 2, filters.allSatisfy({ $0 >= 1 }) else {
            throw NetworkError.configuration("channels, classes (>= 2) and filters must be positive")
        }
        guard kernels.allSatisfy({ $0 >= 1 && $0 % 2 == 1 }), strides.allSatisfy({ $0 >= 1 }) else {
            throw NetworkError.configuration("kernel sizes must be odd and strides positive")
        }
        guard deepSupervisionHeads >= 0, deepSupervisionHeads <= depth - 2 else {
            throw NetworkError.configuration("at most \(depth - 2) deep supervision heads for depth \(depth)")
        }
    }

    /// Product of the strides: spatial sizes must be divisible by it.
    public var totalStride: Int { strides.reduce(1, *) }
}

/// The network: parameters in a `ParameterSet` under PyTorch's names, explicit forward and backward.
///
/// Input: plain (N, C, H, W) or (N, C, D, H, W) with spatial sizes divisible by `config.totalStride`.
/// Output: logits, plain (N, classes, spatial...), plus the deep supervision heads' logits at
/// 1/2, 1/4... resolution when enabled (training only).
public final class UNet {
    public let config: UNetConfig
    public let parameters: ParameterSet
    let context: Context
    let inputBlock: Block
    let downsamples: [Block]
    let bottleneck: Block
    let upsamples: [UpsampleBlock]
    let outputBlock: ConvUnit
    let heads: [ConvUnit]

    /// Training mode: batch norm uses batch statistics and updates its running statistics.
    public var training: Bool {
        get { context.training }
        set { context.training = newValue }
    }

    /// What the convolutions multiply in: .fp32, or .bf16 mixed precision (bf16 activations and
    /// weights inside convolutions; master weights, optimizer state, normalization statistics, loss
    /// and softmax stay float32, and weight files are float32 either way). Setting .bf16 on a CPU
    /// without AVX512_BF16 throws `EngineError.unsupportedByCPU`.
    public func setPrecision(_ precision: Precision) throws {
        try precision.checkSupported()
        context.precision = precision
    }

    public var precision: Precision { context.precision }

    nonisolated(unsafe) private static var fixedWeightsKeys: UInt64 = 0
    private static let keysLock = NSLock()

    /// Runs `body`, in which the caller promises not to change the weights (inference over many batches):
    /// convolutions keep what they derive from their weights (the Winograd kernel's transformed weights,
    /// about 4x the weights of the 3x3 layers in 2D and 2.4x in 3D) instead of deriving it on every call,
    /// and free it when `body` returns.
    public func withFixedWeights<R>(_ body: () throws -> R) rethrows -> R {
        guard context.fixedWeights == 0 else { return try body() }  // already inside one
        context.fixedWeights = Self.keysLock.withLock { Self.fixedWeightsKeys += 1; return Self.fixedWeightsKeys }
        defer {
            context.fixedWeights = 0
            for op in context.keeping { op.keepWeights(0) }
            context.keeping = []
        }
        return try body()
    }

    /// Trains as one member of `group` (nil: alone): each training step's batch is this member's share of a
    /// global batch; the loss's sums and means run over the global batch and the gradients are summed over the
    /// group before the update, so every member applies the same update. With `synchronizedBatchNorm`, batch
    /// norm's statistics are the global batch's too, and the members compute what one process computes on the
    /// whole batch; without it each member normalises with its share's statistics (as PyTorch DDP does).
    public func shareTraining(with group: ProcessGroup?, synchronizedBatchNorm: Bool) {
        context.group = group
        context.synchronizedBatchNorm = synchronizedBatchNorm
    }

    public var group: ProcessGroup? { context.group }

    /// Called by `backward` after each block with the lowest offset into the flat gradient buffer from which every
    /// gradient is final (backward runs from the last-registered parameters to the first, so the finished part
    /// grows down from the end); 0 at the end. Lets gradient sums start while backward still runs.
    var onGradientsReady: ((Int) throws -> Void)?

    /// Gradients summed together, in floats: large enough for the network to move them at full speed, small
    /// enough that the first sum starts early in backward (PyTorch DDP's default bucket is 25 MB). `Int.max`:
    /// one sum after backward (no overlap).
    public var gradientBucket = 4 << 20

    /// Seconds the last training step waited after backward for the gradient sums to finish (the communication
    /// that backward did not hide); 0 without a group.
    public internal(set) var lastGradientWait = 0.0

    /// The first flat-buffer offset of each top-level part's parameters ("input_block", "downsamples.0", ...).
    private lazy var partOffsets: [String: Int] = {
        var first: [String: Int] = [:]
        for e in parameters.entries where e.kind == .trainable {
            let words = e.name.split(separator: ".")
            let part = ["downsamples", "upsamples", "deep_supervision_heads"].contains(String(words[0])) ? words.prefix(2).joined(separator: ".") : String(words[0])
            first[part] = min(first[part] ?? .max, e.offset)
        }
        return first
    }()

    private func gradientsReady(from parts: [String]) throws {
        guard let onGradientsReady else { return }
        try onGradientsReady(parts.compactMap { partOffsets[$0] }.min() ?? 0)
    }

    /// Makes every member's batch norm running statistics member `root`'s (they differ between members when
    /// batch norm is not synchronised), as DDP's buffer broadcast does; before validation and checkpoints.
    public func adoptStatistics(from root: Int) throws {
        guard let group = context.group, parameters.bufferCount > 0 else { return }
        try parameters.withFlatStatistics { try group.broadcast(UnsafeMutableRawPointer($0.baseAddress!), count: $0.count * 4, from: root) }
    }

    /// `initialized: false` leaves every parameter zero, for a caller that loads all of them next.
    public init(config: UNetConfig, layout: Layout = .native, initialized: Bool = true) throws {
        try config.validate()
        self.config = config
        let ps = ParameterSet()
        parameters = ps
        let r = config.dimension, f = config.filters, k = config.kernels, s = config.strides
        let slope = config.negativeSlope
        func block(_ name: String, _ i: Int, input: Int) -> Block {
            config.residual
                ? ResidualBlock(ps, name: name, rank: r, input: input, output: f[i], kernel: k[i], stride: s[i], norm: config.norm, slope: slope)
                : ConvBlock(ps, name: name, rank: r, input: input, output: f[i], kernel: k[i], stride: s[i], norm: config.norm, slope: slope)
        }
        inputBlock = block("input_block", 0, input: config.inputChannels)
        downsamples = (1 ..< config.depth - 1).map { block("downsamples.\($0 - 1)", $0, input: f[$0 - 1]) }
        bottleneck = block("bottleneck", config.depth - 1, input: f[config.depth - 2])
        upsamples = (0 ..< config.depth - 1).map { j in
            let level = config.depth - 2 - j  // the level this block returns to
            return UpsampleBlock(ps, name: "upsamples.\(j)", rank: r, input: f[level + 1], output: f[level], kernel: k[level],
                                 stride: s[level + 1], norm: config.norm, slope: slope)
        }
        outputBlock = ConvUnit(ps, name: "output_block.conv", geometry: recipeGeometry(r, f[0], config.classes, 1, 1, bias: true))
        heads = (0 ..< config.deepSupervisionHeads).map { i in
            ConvUnit(ps, name: "deep_supervision_heads.\(i).conv", geometry: recipeGeometry(r, f[i + 1], config.classes, 1, 1, bias: true))
        }
        try ps.allocate()
        context = Context(parameters: ps, layout: layout)
        if initialized { initialize(seed: 0) }
    }

    /// Kaiming-normal initialisation (a = negative slope, fan-in) of convolutions, zero conv biases, norm
    /// weight 1 and bias 0, running mean 0 / variance 1; transposed convolutions keep PyTorch's default
    /// (uniform in +-1/sqrt(fan_in), fan_in = out * k^d, as the reference leaves them). Seeded.
    public func initialize(seed: UInt64) {
        var rng = SplitMix64(state: 0x5DEE_CE66_D1CE_4E5B ^ seed)
        let gain = (2 / (1 + Double(config.negativeSlope * config.negativeSlope))).squareRoot()
        let transposedBiases = Set(upsamples.compactMap { $0.transposed.bias })
        for (h, e) in parameters.entries.enumerated() {
            let t = parameters.value(h)
            let name = e.name
            t.withUnsafeMutableFloats { v in
                if name.hasSuffix("running_var") || (name.hasSuffix(".weight") && e.dims.count == 1) {
                    v.update(repeating: 1)
                } else if e.dims.count == 1 && !transposedBiases.contains(h) {
                    v.update(repeating: 0)  // norm biases, running means, conv biases
                } else if name.contains("transp_conv") {
                    let fanIn = name.hasSuffix(".bias") ? parameters.entries[h - 1].dims.dropFirst().reduce(1, *) : e.dims.dropFirst().reduce(1, *)
                    let bound = 1 / Double(fanIn).squareRoot()
                    for i in 0 ..< v.count { v[i] = Float((2 * rng.uniform() - 1) * bound) }
                } else {
                    let std = gain / Double(e.dims.dropFirst().reduce(1, *)).squareRoot()
                    for i in 0 ..< v.count { v[i] = Float(rng.normal() * std) }
                }
            }
        }
        for key in parameters.batchesTracked.keys { parameters.batchesTracked[key] = 0 }
    }

    /// Checks an input's dims; returns a readable error otherwise.
    public func checkInput(_ dims: [Int]) throws {
        guard dims.count == config.dimension + 2, dims[1] == config.inputChannels, dims[0] >= 1 else {
            throw NetworkError.invalidArgument("input of shape \(dims): expected (N, \(config.inputChannels), \(config.dimension) spatial sizes)")
        }
        let t = config.totalStride
        guard dims.dropFirst(2).allSatisfy({ $0 >= t && $0 % t == 0 }) else {
            throw NetworkError.invalidArgument("input spatial size \(Array(dims.dropFirst(2))) must be a multiple of \(t) (the total stride)")
        }
    }

    private var input: Tensor?
    private var headInputs: [Tensor] = []
    private var logitsInput: Tensor?

    /// Forward pass. In training mode keeps what `backward` needs. Returns the logits (main first).
    public func forward(_ x: Tensor) throws -> [Tensor] {
        try checkInput(x.dims)
        releaseSaved()
        let c = context
        let ws = c.workspace
        let xin = try ws.take(x.dims)
        try xin.copy(from: x)
        var skips: [Tensor] = []
        var h = try inputBlock.forward(xin, c)
        if !c.training { ws.give(xin) } else { input = xin }
        for d in downsamples {
            skips.append(h)
            h = try d.forward(h, c)
        }
        skips.append(h)
        h = try bottleneck.forward(h, c)
        var decoderOutputs: [Tensor] = []
        for (j, u) in upsamples.enumerated() {
            let skip = skips[skips.count - 1 - j]
            let y = try u.forward(h, skip: skip, c)
            if !c.training { ws.give(h); ws.give(skip) }
            h = y
            decoderOutputs.append(y)
        }
        var outputs: [Tensor] = []
        let logits = try outputBlock.forward(h, c)
        outputs.append(try logits.converted(to: .plain))
        ws.give(logits)
        if c.training {
            logitsInput = h
            // Heads on the decoder outputs at 1/2, 1/4... resolution, nearest first.
            headInputs = []
            for (i, head) in heads.enumerated() {
                let hin = decoderOutputs[decoderOutputs.count - 2 - i]
                headInputs.append(hin)
                let l = try head.forward(hin, c)
                outputs.append(try l.converted(to: .plain))
                ws.give(l)
            }
        } else {
            ws.give(h)
        }
        return outputs
    }

    /// Backward pass from the logits' gradients (plain, same dims as `forward`'s outputs; deep supervision
    /// heads' gradients after the main one). Adds into `parameters`' gradients; call `zeroGradients()` first.
    public func backward(_ logitGradients: [Tensor]) throws {
        guard training, let logitsInput, let input else { throw NetworkError.invalidArgument("backward needs a training-mode forward first") }
        guard logitGradients.count == 1 + heads.count else {
            throw NetworkError.invalidArgument("\(1 + heads.count) logit gradients expected, got \(logitGradients.count)")
        }
        let c = context
        let ws = c.workspace
        func blocked(_ g: Tensor) throws -> Tensor {
            let t = try ws.take(g.dims)
            try t.copy(from: g)
            return t
        }
        // Gradients flowing into each decoder output (main head on the last, deep heads on earlier ones).
        var pending: [Int: Tensor] = [:]
        let last = upsamples.count - 1
        let g0 = try blocked(logitGradients[0])
        pending[last] = try outputBlock.backward(input: logitsInput, outputGradient: g0, needInput: true, c)!
        ws.give(g0)
        for (i, head) in heads.enumerated() {
            let gi = try blocked(logitGradients[1 + i])
            let dx = try head.backward(input: headInputs[i], outputGradient: gi, needInput: true, c)!
            ws.give(gi)
            let level = last - 1 - i
            if let p = pending[level] { try Elementwise.accumulate(dx, into: p); ws.give(dx) } else { pending[level] = dx }
        }
        try gradientsReady(from: ["output_block"] + heads.indices.map { "deep_supervision_heads.\($0)" })
        // Decoder in reverse; skip gradients collected per encoder level.
        var skipGradients: [Tensor] = []
        var dy = pending[last]!
        for j in stride(from: last, through: 0, by: -1) {
            if j < last, let extra = pending[j] { try Elementwise.accumulate(extra, into: dy); ws.give(extra) }
            let (dx, dskip) = try upsamples[j].backward(dy, c)
            try gradientsReady(from: ["upsamples.\(j)"])
            ws.give(dy)
            skipGradients.append(dskip)  // j runs from the full-resolution block down: index = level
            dy = dx
        }
        let encoder = [inputBlock] + downsamples
        var g = try bottleneck.backward(dy, needInput: true, c)!
        try gradientsReady(from: ["bottleneck"])
        ws.give(dy)
        for level in stride(from: encoder.count - 1, through: 0, by: -1) {
            let skip = skipGradients[level]
            try Elementwise.accumulate(skip, into: g)
            ws.give(skip)
            let next = try encoder[level].backward(g, needInput: level > 0, c)
            try gradientsReady(from: [level == 0 ? "input_block" : "downsamples.\(level - 1)"])
            ws.give(g)
            guard let next else { break }
            g = next
        }
        ws.give(input)
        self.input = nil
        self.logitsInput = nil
        headInputs = []
    }

    /// Releases activations kept by a training forward that will not be followed by backward.
    public func releaseSaved() {
        guard input != nil || logitsInput != nil else { return }
        let c = context
        for b in [inputBlock] + downsamples + [bottleneck] { b.release(c) }
        for u in upsamples { u.release(c) }
        c.workspace.give(input)
        input = nil
        logitsInput = nil
        headInputs = []
    }

    /// Convolution FLOPs (2 x multiply-adds) of the last forward pass.
    public var lastForwardFlops: Double { convolutionUnits.reduce(0) { $0 + $1.lastFlops } }

    private var convolutionUnits: [ConvUnit] {
        var units: [ConvUnit] = [outputBlock] + heads
        func collect(_ b: Block) {
            if let l = b as? ConvLayer { units.append(l.conv) }
            if let cb = b as? ConvBlock { units += [cb.conv1.conv, cb.conv2.conv] }
            if let r = b as? ResidualBlock { units += [r.conv1.conv, r.conv2] + (r.downsample.map { [$0] } ?? []) }
        }
        for b in [inputBlock] + downsamples + [bottleneck] { collect(b) }
        for u in upsamples { units.append(u.transposed); collect(u.block) }
        return units
    }

    /// Workspace memory in bytes: the most ever in use at once, and what it holds now.
    public var workspaceBytes: (peakInUse: Int, held: Int) { (context.workspace.peakInUse * 4, context.workspace.held * 4) }

    /// Drops cached activation memory (e.g. before switching between very different input shapes).
    public func clearWorkspace() { context.workspace.clear() }
}
