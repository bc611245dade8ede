import CDNNL

/// Batch normalization (affine) over an activation tensor (N, C, spatial...) in any layout,
/// with PyTorch's semantics: training normalises with the batch statistics (biased variance)
/// and updates running statistics with `momentum` using the unbiased variance; inference uses
/// the running statistics.
///
/// Parameters and statistics are plain tensors of C values.
public final class BatchNormalization: @unchecked Sendable {
    public let dims: [Int]
    public let layout: Layout
    public let epsilon: Float
    public let momentum: Float
    private let handle: OpaquePointer
    private let op = "batch normalization"

    public init(dims: [Int], layout: Layout = .native, epsilon: Float = 1e-5, momentum: Float = 0.1) throws {
        guard (4...5).contains(dims.count), dims.allSatisfy({ $0 > 0 }) else {
            throw EngineError.invalidArgument(op: "batch normalization", message: "needs non-empty (N, C, spatial...) dims, got \(dims)")
        }
        self.dims = dims
        self.layout = layout
        self.epsilon = epsilon
        self.momentum = momentum
        handle = try makeBatchNorm(dims: dims, layout: layout, epsilon: epsilon, op: op)
    }

    deinit { cdnnl_bnorm_destroy(handle) }

    var channels: Int { dims[1] }

    /// Training forward. Writes `output`, the batch `mean` and biased `variance` (kept for
    /// backward), and updates `runningMean`/`runningVariance` in place. With a `group`, the batch is shared by
    /// its members and the statistics are the whole batch's (synchronised batch norm): each member normalises
    /// as one process would the whole batch, and the running statistics (the global count's unbiased
    /// variance) are the same on every member.
    public func forwardTraining(input: Tensor, scale: Tensor, shift: Tensor, output: Tensor,
                                mean: Tensor, variance: Tensor,
                                runningMean: Tensor, runningVariance: Tensor, across group: ProcessGroup? = nil) throws {
        try require(input, dims: dims, layout: layout, op, "input")
        try require(output, dims: dims, layout: layout, op, "output")
        for (t, n) in [(scale, "weight"), (shift, "bias"), (mean, "mean"), (variance, "variance"),
                       (runningMean, "running_mean"), (runningVariance, "running_var")] {
            try require(t, count: channels, op, n)
        }
        if let group {
            return try synchronizedForward(input: input, scale: scale, shift: shift, output: output, mean: mean, variance: variance,
                                           runningMean: runningMean, runningVariance: runningVariance, group: group)
        }
        try withExtendedLifetime((input.storage, scale.storage, shift.storage, output.storage, mean.storage, variance.storage)) {
            try check(cdnnl_bnorm_forward_training(handle, input.floats, scale.floats, shift.floats, output.floats,
                                                   mean.floats, variance.floats), "\(op) forward \(shapeText(dims))")
        }
        let n = Float(dims.count == 0 ? 1 : (dims[0] * dims.dropFirst(2).reduce(1, *)))
        let unbias = n > 1 ? n / (n - 1) : 1
        let m = momentum
        withExtendedLifetime((mean.storage, variance.storage, runningMean.storage, runningVariance.storage)) {
            for c in 0..<channels {
                runningMean.floats[c] = (1 - m) * runningMean.floats[c] + m * mean.floats[c]
                runningVariance.floats[c] = (1 - m) * runningVariance.floats[c] + m * variance.floats[c] * unbias
            }
        }
    }

    /// Inference forward with the running statistics.
    public func forwardInference(input: Tensor, scale: Tensor, shift: Tensor,
                                 runningMean: Tensor, runningVariance: Tensor, output: Tensor) throws {
        try require(input, dims: dims, layout: layout, op, "input")
        try require(output, dims: dims, layout: layout, op, "output")
        for (t, n) in [(scale, "weight"), (shift, "bias"), (runningMean, "running_mean"), (runningVariance, "running_var")] {
            try require(t, count: channels, op, n)
        }
        try withExtendedLifetime((input.storage, scale.storage, shift.storage, output.storage, runningMean.storage, runningVariance.storage)) {
            try check(cdnnl_bnorm_forward_inference(handle, input.floats, scale.floats, shift.floats,
                                                    runningMean.floats, runningVariance.floats, output.floats),
                      "\(op) inference \(shapeText(dims))")
        }
    }

    /// Backward of the training forward. Overwrites `inputGradient`; adds into the
    /// scale and shift gradients. With a `group` (the synchronised forward's), the means of dx's formula run over
    /// the whole batch and the scale and shift gradients added are this member's share (the group's gradient sum
    /// completes them).
    public func backward(input: Tensor, outputGradient: Tensor, scale: Tensor, mean: Tensor, variance: Tensor,
                         inputGradient: Tensor, scaleGradient: Tensor, shiftGradient: Tensor, across group: ProcessGroup? = nil) throws {
        try require(input, dims: dims, layout: layout, op, "input")
        try require(outputGradient, dims: dims, layout: layout, op, "output gradient")
        try require(inputGradient, dims: dims, layout: layout, op, "input gradient")
        for (t, n) in [(scale, "weight"), (mean, "mean"), (variance, "variance"),
                       (scaleGradient, "weight gradient"), (shiftGradient, "bias gradient")] {
            try require(t, count: channels, op, n)
        }
        if let group {
            return try synchronizedBackward(input: input, outputGradient: outputGradient, scale: scale, mean: mean, variance: variance,
                                            inputGradient: inputGradient, scaleGradient: scaleGradient, shiftGradient: shiftGradient, group: group)
        }
        try withExtendedLifetime((input.storage, outputGradient.storage, scale.storage, mean.storage, variance.storage,
                                  inputGradient.storage, scaleGradient.storage, shiftGradient.storage)) {
            try check(cdnnl_bnorm_backward(handle, input.floats, outputGradient.floats, scale.floats, mean.floats,
                                           variance.floats, inputGradient.floats, scaleGradient.floats,
                                           shiftGradient.floats), "\(op) backward \(shapeText(dims))")
        }
    }
}

extension BatchNormalization {
    /// Per channel: [sum of a (C), sum of a * b (C), the values per channel] over this member's batch.
    private func channelSums(_ a: Tensor, _ b: Tensor) -> [Double] {
        let C = channels, positions = dims.dropFirst(2).reduce(1, *)
        var sums = [Double](repeating: 0, count: 2 * C + 1)
        sums.withUnsafeMutableBufferPointer { s in
            withExtendedLifetime((a.storage, b.storage)) {
                cdnnl_channel_sums(a.floats, b.floats, Int64(dims[0]), Int64(C), Int64(positions), layout.cValue, s.baseAddress!, s.baseAddress! + C)
            }
        }
        sums[2 * C] = Double(dims[0] * positions)
        return sums
    }

    /// `forwardTraining` across `group` (arguments checked): the mean and variance from the group's sums of x and x^2.
    private func synchronizedForward(input: Tensor, scale: Tensor, shift: Tensor, output: Tensor, mean: Tensor, variance: Tensor,
                                     runningMean: Tensor, runningVariance: Tensor, group: ProcessGroup) throws {
        let C = channels
        let sums = try group.sum(channelSums(input, input))
        let count = sums[2 * C]
        var a = [Float](repeating: 0, count: C), b = a
        let gamma = try scale.toArray(), beta = try shift.toArray()
        let unbias = count > 1 ? count / (count - 1) : 1
        let m = Double(momentum)
        withExtendedLifetime((mean.storage, variance.storage, runningMean.storage, runningVariance.storage)) {
            for c in 0 ..< C {
                let mu = sums[c] / count
                let v = max(0, sums[C + c] / count - mu * mu)
                let inv = 1 / (v + Double(epsilon)).squareRoot()
                a[c] = Float(Double(gamma[c]) * inv)
                b[c] = Float(Double(beta[c]) - mu * Double(gamma[c]) * inv)
                mean.floats[c] = Float(mu)
                variance.floats[c] = Float(v)
                runningMean.floats[c] = Float((1 - m) * Double(runningMean.floats[c]) + m * mu)
                runningVariance.floats[c] = Float((1 - m) * Double(runningVariance.floats[c]) + m * v * unbias)
            }
        }
        withExtendedLifetime((input.storage, output.storage)) {
            cdnnl_affine_activate(input.floats, nil, output.floats, Int64(dims[0]), Int64(C), Int64(dims.dropFirst(2).reduce(1, *)),
                                  layout.cValue, 1, a, b)
        }
    }

    /// `backward` across `group` (arguments checked): dx = gamma / sigma * (dy - mean(dy) - xhat * mean(dy * xhat)),
    /// the means from the group's sums of dy and dy * x.
    private func synchronizedBackward(input: Tensor, outputGradient: Tensor, scale: Tensor, mean: Tensor, variance: Tensor,
                                      inputGradient: Tensor, scaleGradient: Tensor, shiftGradient: Tensor, group: ProcessGroup) throws {
        let C = channels
        let local = channelSums(outputGradient, input)
        let sums = try group.sum(local)
        let count = sums[2 * C]
        let gamma = try scale.toArray(), mu = try mean.toArray(), v = try variance.toArray()
        var a = [Float](repeating: 0, count: C), b = a, d = a
        withExtendedLifetime((scaleGradient.storage, shiftGradient.storage)) {
            for c in 0 ..< C {
                let m = Double(mu[c]), inv = 1 / (Double(v[c]) + Double(epsilon)).squareRoot()
                // sum dy * xhat = (sum dy * x - mean * sum dy) / sigma
                let dyxhat = (sums[C + c] - m * sums[c]) * inv
                let k = Double(gamma[c]) * inv
                a[c] = Float(k)
                b[c] = Float(-k * dyxhat * inv / count)
                d[c] = Float(-k * sums[c] / count + k * dyxhat * inv * m / count)
                scaleGradient.floats[c] += Float((local[C + c] - m * local[c]) * inv)
                shiftGradient.floats[c] += Float(local[c])
            }
        }
        withExtendedLifetime((outputGradient.storage, input.storage, inputGradient.storage)) {
            cdnnl_channel_combine(outputGradient.floats, input.floats, inputGradient.floats, Int64(dims[0]), Int64(C),
                                  Int64(dims.dropFirst(2).reduce(1, *)), layout.cValue, a, b, d)
        }
    }
}

private func makeBatchNorm(dims: [Int], layout: Layout, epsilon: Float, op: String) throws -> OpaquePointer {
    var h: OpaquePointer?
    let spatial = dims.dropFirst(2).map(Int64.init)
    try check(spatial.withUnsafeBufferPointer {
        cdnnl_bnorm_create(&h, Int32(dims.count - 2), Int64(dims[0]), Int64(dims[1]), $0.baseAddress,
                           layout.cValue, epsilon)
    }, "\(op) \(shapeText(dims))")
    return h!
}

/// Instance normalization (affine): each sample and channel normalised by its own mean and
/// biased variance over the spatial axes, in training and inference alike (PyTorch's
/// `InstanceNorm*d(affine=True)`, which keeps no running statistics).
///
/// Implemented as batch normalization of one sample at a time. Saved statistics are plain
/// tensors of (N, C) values.
public final class InstanceNormalization: @unchecked Sendable {
    public let dims: [Int]
    public let layout: Layout
    public let epsilon: Float
    private let handle: OpaquePointer
    private let op = "instance normalization"

    public init(dims: [Int], layout: Layout = .native, epsilon: Float = 1e-5) throws {
        guard (4...5).contains(dims.count), dims.allSatisfy({ $0 > 0 }) else {
            throw EngineError.invalidArgument(op: "instance normalization", message: "needs non-empty (N, C, spatial...) dims, got \(dims)")
        }
        self.dims = dims
        self.layout = layout
        self.epsilon = epsilon
        handle = try makeBatchNorm(dims: [1] + dims.dropFirst(), layout: layout, epsilon: epsilon, op: "instance normalization")
    }

    deinit { cdnnl_bnorm_destroy(handle) }

    private var channels: Int { dims[1] }
    /// Elements of one sample in storage (the batch is the outermost axis in every layout).
    private var sampleStride: Int { Tensor.storedCount(dims: [1] + dims.dropFirst(), layout: layout) }

    /// Writes `output` and the per-sample statistics `mean`, `variance` (N x C, kept for backward).
    public func forward(input: Tensor, scale: Tensor, shift: Tensor, output: Tensor,
                        mean: Tensor, variance: Tensor) throws {
        try require(input, dims: dims, layout: layout, op, "input")
        try require(output, dims: dims, layout: layout, op, "output")
        try require(scale, count: channels, op, "weight")
        try require(shift, count: channels, op, "bias")
        try require(mean, count: dims[0] * channels, op, "mean")
        try require(variance, count: dims[0] * channels, op, "variance")
        try withExtendedLifetime((input.storage, scale.storage, shift.storage, output.storage, mean.storage, variance.storage)) {
            for n in 0..<dims[0] {
                try check(cdnnl_bnorm_forward_training(handle, input.floats + n * sampleStride, scale.floats, shift.floats,
                                                       output.floats + n * sampleStride, mean.floats + n * channels,
                                                       variance.floats + n * channels), "\(op) forward \(shapeText(dims))")
            }
        }
    }

    /// Overwrites `inputGradient`; adds into the scale and shift gradients (summed over samples).
    public func backward(input: Tensor, outputGradient: Tensor, scale: Tensor, mean: Tensor, variance: Tensor,
                         inputGradient: Tensor, scaleGradient: Tensor, shiftGradient: Tensor) throws {
        try require(input, dims: dims, layout: layout, op, "input")
        try require(outputGradient, dims: dims, layout: layout, op, "output gradient")
        try require(inputGradient, dims: dims, layout: layout, op, "input gradient")
        try require(scale, count: channels, op, "weight")
        try require(mean, count: dims[0] * channels, op, "mean")
        try require(variance, count: dims[0] * channels, op, "variance")
        try require(scaleGradient, count: channels, op, "weight gradient")
        try require(shiftGradient, count: channels, op, "bias gradient")
        try withExtendedLifetime((input.storage, outputGradient.storage, scale.storage, mean.storage, variance.storage,
                                  inputGradient.storage, scaleGradient.storage, shiftGradient.storage)) {
            for n in 0..<dims[0] {
                let o = n * sampleStride
                try check(cdnnl_bnorm_backward(handle, input.floats + o, outputGradient.floats + o, scale.floats,
                                               mean.floats + n * channels, variance.floats + n * channels,
                                               inputGradient.floats + o, scaleGradient.floats, shiftGradient.floats),
                          "\(op) backward \(shapeText(dims))")
            }
        }
    }
}
