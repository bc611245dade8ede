import CDNNL

/// Leaky ReLU: y = x > 0 ? x : slope * x, over a whole tensor in any layout (the zero channel
/// padding of blocked layouts stays zero). In-place use (output == input) is allowed.
public final class LeakyReLU: @unchecked Sendable {
    public let dims: [Int]
    public let layout: Layout
    public let slope: Float
    private let handle: OpaquePointer
    private let op = "leaky ReLU"

    public init(dims: [Int], layout: Layout = .native, slope: Float = 0.01) throws {
        try Tensor.validate(dims: dims, layout: layout)
        self.dims = dims
        self.layout = layout
        self.slope = slope
        var h: OpaquePointer?
        try check(cdnnl_leaky_relu_create(&h, Int64(Tensor.storedCount(dims: dims, layout: layout)), slope),
                  "leaky ReLU \(shapeText(dims))")
        handle = h!
    }

    deinit { cdnnl_eltwise_destroy(handle) }

    public func forward(input: Tensor, output: Tensor) throws {
        try require(input, dims: dims, layout: layout, op, "input")
        try require(output, dims: dims, layout: layout, op, "output")
        try withExtendedLifetime((input.storage, output.storage)) {
            try check(cdnnl_eltwise_forward(handle, input.floats, output.floats), op)
        }
    }

    /// inputGradient = outputGradient * (input > 0 ? 1 : slope). `input` may be the forward
    /// output instead (same sign for slope > 0), which lets the forward run in place.
    public func backward(input: Tensor, outputGradient: Tensor, inputGradient: Tensor) throws {
        try require(input, dims: dims, layout: layout, op, "input")
        try require(outputGradient, dims: dims, layout: layout, op, "output gradient")
        try require(inputGradient, dims: dims, layout: layout, op, "input gradient")
        try withExtendedLifetime((input.storage, outputGradient.storage, inputGradient.storage)) {
            try check(cdnnl_eltwise_backward(handle, input.floats, outputGradient.floats, inputGradient.floats), "\(op) backward")
        }
    }
}

/// Pointwise transforms of activation tensors used to save memory in training.
public enum Pointwise {
    /// out = f(y) * scale[c] + shift[c] with f the inverse of leaky ReLU (slope `slope`), per channel c
    /// (or per sample and channel when `perSample`: scale and shift hold N x C values). `out` may be `y`.
    /// With scale = sigma / gamma and shift = mean - beta * sigma / gamma this recovers a normalization's
    /// input from its activated output.
    public static func unactivateAffine(_ y: Tensor, into out: Tensor, slope: Float, scale: [Float], shift: [Float], perSample: Bool) throws {
        let op = "unactivate"
        try require(out, dims: y.dims, layout: y.layout, op, "output")
        guard y.dims.count >= 3, slope != 0 else { throw EngineError.invalidArgument(op: op, message: "needs (N, C, spatial...) and a nonzero slope") }
        let n = perSample ? y.batch * y.channels : y.channels
        guard scale.count == n, shift.count == n else {
            throw EngineError.shapeMismatch(op: op, expected: "\(n) scale and shift values", got: "\(scale.count) and \(shift.count)")
        }
        withExtendedLifetime((y.storage, out.storage)) {
            cdnnl_unactivate_affine(y.floats, out.floats, Int64(y.batch), Int64(y.channels), Int64(y.spatial.reduce(1, *)),
                                    y.layout.cValue, slope, scale, shift, perSample ? 1 : 0)
        }
    }
}
