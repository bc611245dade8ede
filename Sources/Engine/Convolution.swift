import CDNNL

/// What a convolution computes, independent of the input size.
///
/// PyTorch semantics: symmetric `padding` on each side, output = floor((in + 2p - k) / s) + 1.
/// Transposed convolutions (the UNet's upsampling) use kernel = stride and no padding:
/// output = (in - 1) * s + k.
public struct ConvolutionGeometry: Hashable, Sendable {
    public var inputChannels: Int
    public var outputChannels: Int
    public var kernelSize: [Int]
    public var stride: [Int]
    public var padding: [Int]
    public var bias: Bool
    public var transposed: Bool

    public init(inputChannels: Int, outputChannels: Int, kernelSize: [Int], stride: [Int], padding: [Int],
                bias: Bool, transposed: Bool = false) {
        self.inputChannels = inputChannels
        self.outputChannels = outputChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        self.bias = bias
        self.transposed = transposed
    }

    /// A cubic/square kernel: `kernel` and `stride` repeated over `spatialRank` axes.
    public init(spatialRank: Int, inputChannels: Int, outputChannels: Int, kernel: Int, stride: Int = 1,
                padding: Int? = nil, bias: Bool = false, transposed: Bool = false) {
        self.init(inputChannels: inputChannels, outputChannels: outputChannels,
                  kernelSize: Array(repeating: kernel, count: spatialRank),
                  stride: Array(repeating: stride, count: spatialRank),
                  padding: Array(repeating: padding ?? (transposed ? 0 : (kernel - stride + 1) / 2), count: spatialRank),
                  bias: bias, transposed: transposed)
    }

    public var spatialRank: Int { kernelSize.count }

    /// Weight dims in PyTorch's layout: (O, I, k...) or, transposed, (I, O, k...).
    public var weightDims: [Int] {
        (transposed ? [inputChannels, outputChannels] : [outputChannels, inputChannels]) + kernelSize
    }

    public func outputSpatial(_ input: [Int]) -> [Int] {
        (0..<spatialRank).map { i in
            transposed ? (input[i] - 1) * stride[i] + kernelSize[i] - 2 * padding[i]
                       : (input[i] + 2 * padding[i] - kernelSize[i]) / stride[i] + 1
        }
    }

    func validate(inputDims: [Int]) throws {
        let op = transposed ? "transposed convolution" : "convolution"
        guard spatialRank == 2 || spatialRank == 3, stride.count == spatialRank, padding.count == spatialRank else {
            throw EngineError.invalidArgument(op: op, message: "kernel, stride and padding need 2 or 3 entries each, got \(kernelSize), \(stride), \(padding)")
        }
        guard inputChannels > 0, outputChannels > 0, kernelSize.allSatisfy({ $0 > 0 }),
              stride.allSatisfy({ $0 > 0 }), padding.allSatisfy({ $0 >= 0 }) else {
            throw EngineError.invalidArgument(op: op, message: "channels, kernel and stride must be positive and padding non-negative")
        }
        guard inputDims.count == 2 + spatialRank else {
            throw EngineError.shapeMismatch(op: op, expected: "input with \(2 + spatialRank) dims (N, C, spatial)", got: shapeText(inputDims))
        }
        guard inputDims[1] == inputChannels else {
            throw EngineError.shapeMismatch(op: op, expected: "input with \(inputChannels) channels", got: shapeText(inputDims))
        }
        guard inputDims[0] > 0, inputDims.dropFirst(2).allSatisfy({ $0 > 0 }) else {
            throw EngineError.invalidArgument(op: op, message: "input \(shapeText(inputDims)) has an empty dimension")
        }
        if transposed, padding.contains(where: { $0 != 0 }) {
            throw EngineError.invalidArgument(op: op, message: "padding is not supported for transposed convolution")
        }
        let out = outputSpatial(Array(inputDims.dropFirst(2)))
        guard out.allSatisfy({ $0 > 0 }) else {
            throw EngineError.shapeMismatch(op: op, expected: "input large enough for kernel \(kernelSize) with padding \(padding)",
                                            got: shapeText(inputDims))
        }
    }
}

/// How forward and backward-data are computed. Results agree to float rounding (Winograd's
/// transforms add error of order 1e-5 relative to the output's largest value).
public enum ConvolutionAlgorithm: Int32, Sendable, CaseIterable {
    /// Winograd where it is measured faster (3x3 stride-1 fp32 layers with tiles enough, blocked8 on
    /// AVX2 or blocked16 on AVX-512), oneDNN's direct kernels otherwise.
    case automatic = 0
    /// oneDNN's direct kernels (and SwiftUNet's upsampling kernel).
    case direct = 1
    /// SwiftUNet's Winograd kernel: in 2D F(6x6,3x3) where its tiles save products and its transformed kernel
    /// is small (weight gradients stay on F(4x4,3x3)), else F(4x4,3x3); in 3D F(4x4x4,3x3x3) where the layer
    /// has tiles enough (up to 512 x 256 channels), else F(2x2x2,3x3x3). Only for 3x3 stride-1
    /// padding-1 convolutions on blocked activations (blocked8 with AVX2, blocked16 with AVX-512) with
    /// channel counts divisible by the block.
    case winograd = 2
}

/// What a convolution multiplies in. Tensors given to and returned by the engine are float32 in
/// both; only the kernels' inputs differ.
public enum Precision: String, Sendable, CaseIterable {
    /// float32 throughout.
    case fp32
    /// Mixed precision: activations and weights rounded to bfloat16 as the kernel reads them (AVX512_BF16
    /// dot products, float32 accumulation); outputs, gradients and everything outside convolutions
    /// (normalization statistics, loss, softmax, optimizer, master weights) stay float32. Needs a CPU
    /// with AVX512_BF16; emulating it would be slower than fp32, so other CPUs refuse it. Layers that take
    /// SwiftUNet's Winograd kernel keep it in fp32 (it multiplies 4x less than a direct convolution; bf16
    /// dot products are at most 2x faster, and rounding its transformed tiles to bf16 costs 8x bf16's error).
    /// Where bf16 dot products are no faster than fp32 FMAs, bf16 only loses: see `worthwhileOnThisCPU`.
    /// Weight gradients of transposed convolutions, and of 2D layers with output rows of 64 or more, stay
    /// fp32 as well: oneDNN's bf16 kernels, converting both inputs first, were slower there.
    case bf16

    var cValue: Int32 { self == .bf16 ? Int32(CDNNL_PRECISION_BF16) : Int32(CDNNL_PRECISION_FP32) }

    /// This CPU's bf16 dot-product rate over its fp32 FMA rate, in flops, on one core (register-only loops,
    /// measured once per process, ~30 ms); nil without AVX512_BF16. Measured 2.0 on AMD Zen 4 and 0.5 on an
    /// Intel Xeon (family 6 model 207, no AMX exposed) that issues vdpbf16ps at half the rate of its two FMA ports.
    public static let bf16DotProductSpeedup: Double? = {
        guard Runtime.cpuFeatures.contains(.avx512BF16) else { return nil }
        func flopsPerSecond(_ body: () -> Int64) -> Double {
            var flops: Int64 = 0
            let t = ContinuousClock().measure { flops = body() }.components
            return Double(flops) / max(Double(t.seconds) + Double(t.attoseconds) * 1e-18, 1e-9)
        }
        // Alternated and best of three each, against the minute-to-minute drift of a shared machine.
        var fp32 = 0.0, bf16 = 0.0
        for _ in 0 ..< 3 {
            fp32 = max(fp32, flopsPerSecond { cdnnl_fma_peak_flops(1, 1_000_000) })
            bf16 = max(bf16, flopsPerSecond { cdnnl_bf16_dot_peak_flops(1, 1_000_000) })
        }
        return fp32 > 0 ? bf16 / fp32 : nil
    }()

    /// What to run when `self` is asked for: bf16 only where this CPU's bf16 dot products outrun its fp32 FMAs
    /// by 1.5x or more (`bf16DotProductSpeedup`), fp32 otherwise. bf16 kernels do the same multiplications as
    /// fp32 ones and convert their inputs as well, so at a lower or equal rate they only lose (measured: bf16
    /// training at 0.65x fp32's speed on the Xeon above, 1.12x on Zen 4); fp32 there is faster and exact.
    public var worthwhileOnThisCPU: Precision {
        guard self == .bf16, let speedup = Precision.bf16DotProductSpeedup, speedup < 1.5 else { return self }
        return .fp32
    }

    /// Throws `EngineError.unsupportedByCPU` when this CPU cannot run the precision natively.
    public func checkSupported() throws {
        if self == .bf16, !Runtime.cpuFeatures.contains(.avx512BF16) {
            throw EngineError.unsupportedByCPU(
                feature: "avx512_bf16",
                message: "bf16 precision needs a CPU with bf16 dot products (AVX512_BF16: Intel Xeon since Cooper Lake, "
                    + "AMD since Zen 4); this CPU has none, and emulated bf16 would be slower than fp32")
        }
    }
}

/// Per-output-channel work done on a convolution's output before it is stored:
/// y = leakyReLU(y * scale[o] + shift[o] + residual, slope). slope 1 means no activation.
public struct ConvolutionEpilogue: @unchecked Sendable {
    public var scale: [Float]
    public var shift: [Float]
    public var residual: Tensor?
    public var slope: Float

    public init(scale: [Float], shift: [Float], residual: Tensor? = nil, slope: Float = 1) {
        self.scale = scale
        self.shift = shift
        self.residual = residual
        self.slope = slope
    }
}

/// A convolution (or transposed convolution) bound to one input shape and layout: the oneDNN
/// primitives are built once and reused. Create one per layer and input shape.
///
/// Tensors: input (N, I, spatial...) and output (N, O, spatial_out...) in `layout`;
/// weight and gradients in plain PyTorch layout (`geometry.weightDims`); bias (O).
public final class Convolution: @unchecked Sendable {
    public let geometry: ConvolutionGeometry
    public let inputDims: [Int]
    public let outputDims: [Int]
    public let layout: Layout
    public let algorithm: ConvolutionAlgorithm
    public let precision: Precision
    private let handle: OpaquePointer
    private var op: String { geometry.transposed ? "transposed convolution" : "convolution" }

    /// `precision` .bf16 throws `EngineError.unsupportedByCPU` on a CPU without AVX512_BF16.
    public init(_ geometry: ConvolutionGeometry, inputDims: [Int], layout: Layout = .native,
                algorithm: ConvolutionAlgorithm = .automatic, precision: Precision = .fp32) throws {
        try geometry.validate(inputDims: inputDims)
        try precision.checkSupported()
        self.geometry = geometry
        self.inputDims = inputDims
        self.layout = layout
        self.algorithm = algorithm
        self.precision = precision
        let outSpatial = geometry.outputSpatial(Array(inputDims.dropFirst(2)))
        outputDims = [inputDims[0], geometry.outputChannels] + outSpatial

        var d = cdnnl_conv_desc()
        d.spatial_rank = Int32(geometry.spatialRank)
        d.batch = Int64(inputDims[0])
        d.in_channels = Int64(geometry.inputChannels)
        d.out_channels = Int64(geometry.outputChannels)
        d.has_bias = geometry.bias ? 1 : 0
        d.transposed = geometry.transposed ? 1 : 0
        d.layout = layout.cValue
        d.algorithm = algorithm.rawValue
        d.precision = precision.cValue
        let r = geometry.spatialRank
        _ = withUnsafeMutableBytes(of: &d.in_size) { $0.bindMemory(to: Int64.self).update(fromContentsOf: inputDims.dropFirst(2).map(Int64.init)) }
        _ = withUnsafeMutableBytes(of: &d.out_size) { $0.bindMemory(to: Int64.self).update(fromContentsOf: outSpatial.map(Int64.init)) }
        _ = withUnsafeMutableBytes(of: &d.kernel) { $0.bindMemory(to: Int64.self).update(fromContentsOf: geometry.kernelSize.map(Int64.init)) }
        _ = withUnsafeMutableBytes(of: &d.stride) { $0.bindMemory(to: Int64.self).update(fromContentsOf: geometry.stride.map(Int64.init)) }
        _ = withUnsafeMutableBytes(of: &d.pad_lo) { $0.bindMemory(to: Int64.self).update(fromContentsOf: geometry.padding.map(Int64.init)) }
        // oneDNN wants the right padding that makes its output size formula exact; with PyTorch's
        // floor division this can be less than the left padding.
        var padHi = [Int64](repeating: 0, count: r)
        if !geometry.transposed {
            for i in 0..<r {
                let covered = (outSpatial[i] - 1) * geometry.stride[i] + geometry.kernelSize[i]
                padHi[i] = Int64(covered - inputDims[2 + i] - geometry.padding[i])
            }
        }
        _ = withUnsafeMutableBytes(of: &d.pad_hi) { $0.bindMemory(to: Int64.self).update(fromContentsOf: padHi) }
        var h: OpaquePointer?
        try check(cdnnl_conv_create(&h, &d), "\(geometry.transposed ? "transposed convolution" : "convolution") \(shapeText(inputDims)) -> \(shapeText(outputDims))")
        handle = h!
    }

    deinit { cdnnl_conv_destroy(handle) }

    /// key != 0: the weights passed with this key will not change, so forward may keep what it derives
    /// from them (the Winograd kernel's transformed weights) and reuse it while the key and the weight
    /// tensor stay the same. 0: keep nothing, and free what was kept.
    public func keepWeights(_ key: UInt64) { cdnnl_conv_keep_weights(handle, key) }

    public enum Direction: Int32, Sendable { case forward = 0, backwardData = 1, backwardWeights = 2 }

    /// The kernel that runs `direction` (e.g. "oneDNN jit:avx2"); empty before its first call.
    public func implementation(_ direction: Direction) -> String {
        String(cString: cdnnl_conv_impl(handle, direction.rawValue))
    }

    /// Multiply-adds x 2 of one forward pass (the same for each backward pass).
    public var flops: Double {
        let k = Double(geometry.kernelSize.reduce(1, *))
        let perPosition = 2.0 * Double(geometry.inputChannels * geometry.outputChannels) * k
        let positions = geometry.transposed ? inputDims.dropFirst(2).reduce(1, *) : outputDims.dropFirst(2).reduce(1, *)
        return perPosition * Double(inputDims[0] * positions)
    }

    private func checkParameters(_ weight: Tensor, _ bias: Tensor?, _ name: String, needsBias: Bool = true) throws {
        try require(weight, dims: geometry.weightDims, layout: .plain, op, name)
        if geometry.bias && needsBias {
            guard let bias else { throw EngineError.invalidArgument(op: op, message: "this convolution has a bias; none given") }
            try require(bias, count: geometry.outputChannels, op, "bias")
        }
    }

    /// output = conv(input, weight) + bias. Overwrites `output`.
    public func forward(input: Tensor, weight: Tensor, bias: Tensor? = nil, output: Tensor) throws {
        try require(input, dims: inputDims, layout: layout, op, "input")
        try require(output, dims: outputDims, layout: layout, op, "output")
        try checkParameters(weight, bias, "weight")
        try withExtendedLifetime((input.storage, weight.storage, bias?.storage, output.storage)) {
            try check(cdnnl_conv_forward(handle, input.floats, weight.floats, geometry.bias ? bias!.floats : nil, output.floats),
                      "\(op) forward \(shapeText(inputDims))")
        }
    }

    /// output = leakyReLU((conv(input, weight) + bias) * epilogue.scale + epilogue.shift + epilogue.residual,
    /// epilogue.slope), scale and shift per output channel: the inference form of convolution -> batch norm (running statistics)
    /// [-> + residual] -> leaky ReLU in one call. On the Winograd route the epilogue is applied as the
    /// output is stored; elsewhere it is one extra pass. Overwrites `output`.
    public func forward(input: Tensor, weight: Tensor, bias: Tensor? = nil, output: Tensor, epilogue: ConvolutionEpilogue) throws {
        try require(input, dims: inputDims, layout: layout, op, "input")
        try require(output, dims: outputDims, layout: layout, op, "output")
        try checkParameters(weight, bias, "weight")
        try validate(epilogue, output: output)
        try withExtendedLifetime((input.storage, weight.storage, bias?.storage, output.storage, epilogue.residual?.storage)) {
            try check(cdnnl_conv_forward_epilogue(handle, input.floats, weight.floats, geometry.bias ? bias!.floats : nil, output.floats,
                                                  epilogue.scale, epilogue.shift, epilogue.residual?.floats, epilogue.slope),
                      "\(op) forward \(shapeText(inputDims))")
        }
    }

    private func validate(_ epilogue: ConvolutionEpilogue, output: Tensor) throws {
        let o = geometry.outputChannels
        guard epilogue.scale.count == o, epilogue.shift.count == o else {
            throw EngineError.shapeMismatch(op: op, expected: "\(o) epilogue scale and shift values",
                                            got: "\(epilogue.scale.count) and \(epilogue.shift.count)")
        }
        guard (0 ... 1).contains(epilogue.slope) else {
            throw EngineError.invalidArgument(op: op, message: "epilogue slope must be in [0, 1], got \(epilogue.slope)")
        }
        if let r = epilogue.residual {
            try require(r, dims: outputDims, layout: layout, op, "residual")
            guard r.storage !== output.storage || r.offset != output.offset else {
                throw EngineError.invalidArgument(op: op, message: "the residual must not be the output tensor")
            }
        }
    }

    /// True when this convolution can take its input as two tensors joined along channels, the first with
    /// `firstChannels` channels, read (and its gradient written) where they are: forward and backward data
    /// (`joinedWith:` variants), and with `weightGradients` backward weights too. The Winograd route, split on
    /// a channel block of the layout.
    public func readsJoined(firstChannels: Int, weightGradients: Bool = false) -> Bool {
        let can = cdnnl_conv_reads_joined(handle, Int64(firstChannels))
        return weightGradients ? can == 3 : can & 1 == 1
    }

    /// Checks the two parts of a joined input (or its gradient) against the input's dims and this kernel.
    private func requireParts(_ first: Tensor, _ second: Tensor, _ what: String, weightGradients: Bool = false) throws {
        try require(first, dims: [inputDims[0], first.channels] + inputDims.dropFirst(2), layout: layout, op, what + "'s first part")
        try require(second, dims: [inputDims[0], inputDims[1] - first.channels] + inputDims.dropFirst(2), layout: layout, op,
                    what + "'s second part")
        guard readsJoined(firstChannels: first.channels, weightGradients: weightGradients) else {
            throw EngineError.invalidArgument(op: op, message: "this kernel cannot take its \(what) split at channel \(first.channels)")
        }
    }

    /// `forward(input:weight:bias:output:[epilogue:])` on the channel concatenation of `first` and `second`
    /// (same batch, spatial size and layout; channels adding up to the input's), read where they are:
    /// no joined copy. Requires `readsJoined(firstChannels: first.channels)`.
    public func forward(input first: Tensor, joinedWith second: Tensor, weight: Tensor, bias: Tensor? = nil, output: Tensor,
                        epilogue: ConvolutionEpilogue? = nil) throws {
        try requireParts(first, second, "input")
        try require(output, dims: outputDims, layout: layout, op, "output")
        try checkParameters(weight, bias, "weight")
        if let epilogue { try validate(epilogue, output: output) }
        try withExtendedLifetime((first.storage, second.storage, weight.storage, bias?.storage, output.storage, epilogue?.residual?.storage)) {
            try check(cdnnl_conv_forward_epilogue_joined(handle, first.floats, second.floats, Int64(first.channels), weight.floats,
                                                         geometry.bias ? bias!.floats : nil, output.floats, epilogue?.scale,
                                                         epilogue?.shift, epilogue?.residual?.floats, epilogue?.slope ?? 1),
                      "\(op) forward \(shapeText(inputDims))")
        }
    }

    /// `backwardData` writing the input gradient in two parts: its first `first.channels` channels into
    /// `first`, the rest into `second`. Requires `readsJoined(firstChannels: first.channels)`.
    public func backwardData(outputGradient: Tensor, weight: Tensor, inputGradient first: Tensor, joinedWith second: Tensor) throws {
        try require(outputGradient, dims: outputDims, layout: layout, op, "output gradient")
        try requireParts(first, second, "input gradient")
        try checkParameters(weight, nil, "weight", needsBias: false)
        try withExtendedLifetime((outputGradient.storage, weight.storage, first.storage, second.storage)) {
            try check(cdnnl_conv_backward_data_joined(handle, outputGradient.floats, weight.floats, first.floats, second.floats,
                                                      Int64(first.channels)),
                      "\(op) backward data \(shapeText(inputDims))")
        }
    }

    /// `backwardWeights` (no bias) on an input in two parts as in `forward(input:joinedWith:...)`. Requires
    /// `readsJoined(firstChannels: first.channels, weightGradients: true)`.
    public func backwardWeights(input first: Tensor, joinedWith second: Tensor, outputGradient: Tensor, weightGradient: Tensor) throws {
        try requireParts(first, second, "input", weightGradients: true)
        try require(outputGradient, dims: outputDims, layout: layout, op, "output gradient")
        try checkParameters(weightGradient, nil, "weight gradient", needsBias: false)
        try withExtendedLifetime((first.storage, second.storage, outputGradient.storage, weightGradient.storage)) {
            try check(cdnnl_conv_backward_weights_joined(handle, first.floats, second.floats, Int64(first.channels),
                                                         outputGradient.floats, weightGradient.floats),
                      "\(op) backward weights \(shapeText(inputDims))")
        }
    }

    /// Allocating variant of `forward`.
    public func callAsFunction(_ input: Tensor, weight: Tensor, bias: Tensor? = nil) throws -> Tensor {
        let out = try Tensor(zeros: outputDims, layout: layout)
        try forward(input: input, weight: weight, bias: bias, output: out)
        return out
    }

    /// inputGradient = d(loss)/d(input) given d(loss)/d(output). Overwrites `inputGradient`.
    public func backwardData(outputGradient: Tensor, weight: Tensor, inputGradient: Tensor) throws {
        try require(outputGradient, dims: outputDims, layout: layout, op, "output gradient")
        try require(inputGradient, dims: inputDims, layout: layout, op, "input gradient")
        try checkParameters(weight, nil, "weight", needsBias: false)
        try withExtendedLifetime((outputGradient.storage, weight.storage, inputGradient.storage)) {
            try check(cdnnl_conv_backward_data(handle, outputGradient.floats, weight.floats, inputGradient.floats),
                      "\(op) backward data \(shapeText(inputDims))")
        }
    }

    /// Adds d(loss)/d(weight) (and d(loss)/d(bias)) into the gradients.
    public func backwardWeights(input: Tensor, outputGradient: Tensor, weightGradient: Tensor,
                                biasGradient: Tensor? = nil) throws {
        try require(input, dims: inputDims, layout: layout, op, "input")
        try require(outputGradient, dims: outputDims, layout: layout, op, "output gradient")
        try checkParameters(weightGradient, biasGradient, "weight gradient")
        try withExtendedLifetime((input.storage, outputGradient.storage, weightGradient.storage, biasGradient?.storage)) {
            try check(cdnnl_conv_backward_weights(handle, input.floats, outputGradient.floats, weightGradient.floats,
                                                  geometry.bias ? biasGradient!.floats : nil),
                      "\(op) backward weights \(shapeText(inputDims))")
        }
    }
}
