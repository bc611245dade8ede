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
    private var activation: LeakyReLU?

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
    /// `slope` != 1: the output goes through leaky ReLU with that slope as well (in the same pass). `residual`
    /// (input's dims and layout): added before the activation, output = leaky_relu(norm(input) + residual), in the
    /// same pass where the own kernels run (a residual block's sum).
    public func forwardTraining(input: Tensor, scale: Tensor, shift: Tensor, output: Tensor,
                                mean: Tensor, variance: Tensor,
                                runningMean: Tensor, runningVariance: Tensor, across group: ProcessGroup? = nil,
                                slope: Float = 1, residual: Tensor? = nil) throws {
        try require(input, dims: dims, layout: layout, op, "input")
        try require(output, dims: dims, layout: layout, op, "output")
        if let residual { try require(residual, dims: dims, layout: layout, op, "residual") }
        for (t, n) in [(scale, "weight"), (shift, "bias"), (mean, "mean"), (variance, "variance"),
                       (runningMean, "running_mean"), (runningVariance, "running_var")] {
            try require(t, count: channels, op, n)
        }
        if let group {
            return try synchronizedForward(input: input, scale: scale, shift: shift, output: output, mean: mean, variance: variance,
                                           runningMean: runningMean, runningVariance: runningVariance, group: group, slope: slope,
                                           residual: residual)
        }
        if let stats = OwnNormKernels.statistics(input) {
            // Per channel over the samples: the samples' means and squared deviations combined (equal counts).
            let N = dims[0], C = channels, S = Double(dims.dropFirst(2).reduce(1, *))
            var mu = [Double](repeating: 0, count: C), v = mu
            for c in 0 ..< C {
                var m = 0.0
                for n in 0 ..< N { m += stats.mean[n * C + c] }
                m /= Double(N)
                var m2 = 0.0
                for n in 0 ..< N { let d = stats.mean[n * C + c] - m; m2 += stats.m2[n * C + c] + S * d * d }
                mu[c] = m
                v[c] = m2 / (Double(N) * S)
            }
            withExtendedLifetime((mean.storage, variance.storage)) {
                for c in 0 ..< C { mean.floats[c] = Float(mu[c]); variance.floats[c] = Float(v[c]) }
            }
            try OwnNormKernels.normalize(input, into: output, mean: { mu[$0 % C] }, variance: { v[$0 % C] }, scale: scale, shift: shift,
                                         epsilon: epsilon, slope: slope, residual: residual)
        } else {
            try withExtendedLifetime((input.storage, scale.storage, shift.storage, output.storage, mean.storage, variance.storage)) {
                try check(cdnnl_bnorm_forward_training(handle, input.floats, scale.floats, shift.floats, output.floats,
                                                       mean.floats, variance.floats), "\(op) forward \(shapeText(dims))")
            }
            if let residual {
                // output = leaky_relu(output * 1 + 0 + residual) in one pass.
                let ones = [Float](repeating: 1, count: channels), zeros = [Float](repeating: 0, count: channels)
                withExtendedLifetime((residual.storage, output.storage)) {
                    cdnnl_affine_activate(output.floats, residual.floats, output.floats, Int64(dims[0]), Int64(channels),
                                          Int64(dims.dropFirst(2).reduce(1, *)), layout.cValue, slope, ones, zeros)
                }
            } else if slope != 1 {
                try OwnNormKernels.activate(output, slope: slope, op: &activation)
            }
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
    /// `backward` of the leaky ReLU (`slope` > 0) of this training forward's output, taken from that activated `output`
    /// alone (the input is not needed): `inputGradient` (may be `outputGradient`) gets d(loss)/dx, the scale and shift
    /// gradients are added. False, with nothing written, where the own kernels do not run (plain layout, no AVX2); the
    /// caller then runs the activation's backward and `backward`.
    public func backwardThroughActivation(output: Tensor, slope: Float, outputGradient: Tensor, scale: Tensor, shift: Tensor,
                                          mean: Tensor, variance: Tensor, inputGradient: Tensor, scaleGradient: Tensor,
                                          shiftGradient: Tensor) throws -> Bool {
        for (t, n) in [(output, "output"), (outputGradient, "output gradient"), (inputGradient, "input gradient")] {
            try require(t, dims: dims, layout: layout, op, n)
        }
        for (t, n) in [(scale, "weight"), (shift, "bias"), (mean, "mean"), (variance, "variance"),
                       (scaleGradient, "weight gradient"), (shiftGradient, "bias gradient")] {
            try require(t, count: channels, op, n)
        }
        return try OwnNormKernels.backwardThroughActivation(
            output: output, slope: slope, outputGradient: outputGradient, inputGradient: inputGradient, scale: scale, shift: shift,
            mean: mean, variance: variance, epsilon: epsilon, perSample: false, scaleGradient: scaleGradient, shiftGradient: shiftGradient)
    }

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
                                     runningMean: Tensor, runningVariance: Tensor, group: ProcessGroup, slope: Float,
                                     residual: Tensor?) throws {
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
        withExtendedLifetime((input.storage, output.storage, residual?.storage)) {
            cdnnl_affine_activate(input.floats, residual?.floats, output.floats, Int64(dims[0]), Int64(C), Int64(dims.dropFirst(2).reduce(1, *)),
                                  layout.cValue, slope, a, b)
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
    private var activation: LeakyReLU?

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
    /// `slope` != 1: the output goes through leaky ReLU with that slope as well (in the same pass).
    public func forward(input: Tensor, scale: Tensor, shift: Tensor, output: Tensor,
                        mean: Tensor, variance: Tensor, slope: Float = 1) throws {
        try require(input, dims: dims, layout: layout, op, "input")
        try require(output, dims: dims, layout: layout, op, "output")
        try require(scale, count: channels, op, "weight")
        try require(shift, count: channels, op, "bias")
        try require(mean, count: dims[0] * channels, op, "mean")
        try require(variance, count: dims[0] * channels, op, "variance")
        if let stats = OwnNormKernels.statistics(input) {
            let S = Double(dims.dropFirst(2).reduce(1, *))
            let v = stats.m2.map { $0 / S }
            withExtendedLifetime((mean.storage, variance.storage)) {
                for i in v.indices { mean.floats[i] = Float(stats.mean[i]); variance.floats[i] = Float(v[i]) }
            }
            return try OwnNormKernels.normalize(input, into: output, mean: { stats.mean[$0] }, variance: { v[$0] }, scale: scale,
                                                shift: shift, epsilon: epsilon, slope: slope)
        }
        try withExtendedLifetime((input.storage, scale.storage, shift.storage, output.storage, mean.storage, variance.storage)) {
            for n in 0..<dims[0] {
                try check(cdnnl_bnorm_forward_training(handle, input.floats + n * sampleStride, scale.floats, shift.floats,
                                                       output.floats + n * sampleStride, mean.floats + n * channels,
                                                       variance.floats + n * channels), "\(op) forward \(shapeText(dims))")
            }
        }
        if slope != 1 { try OwnNormKernels.activate(output, slope: slope, op: &activation) }
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

    /// As BatchNormalization.backwardThroughActivation, with the per-sample statistics of this forward.
    public func backwardThroughActivation(output: Tensor, slope: Float, outputGradient: Tensor, scale: Tensor, shift: Tensor,
                                          mean: Tensor, variance: Tensor, inputGradient: Tensor, scaleGradient: Tensor,
                                          shiftGradient: Tensor) throws -> Bool {
        for (t, n) in [(output, "output"), (outputGradient, "output gradient"), (inputGradient, "input gradient")] {
            try require(t, dims: dims, layout: layout, op, n)
        }
        for (t, n) in [(scale, "weight"), (shift, "bias"), (scaleGradient, "weight gradient"), (shiftGradient, "bias gradient")] {
            try require(t, count: channels, op, n)
        }
        try require(mean, count: dims[0] * channels, op, "mean")
        try require(variance, count: dims[0] * channels, op, "variance")
        return try OwnNormKernels.backwardThroughActivation(
            output: output, slope: slope, outputGradient: outputGradient, inputGradient: inputGradient, scale: scale, shift: shift,
            mean: mean, variance: variance, epsilon: epsilon, perSample: true, scaleGradient: scaleGradient, shiftGradient: shiftGradient)
    }
}

/// The own kernels for normalization on blocked activations (blocked8 with AVX2, blocked16 with AVX-512):
/// statistics in one read, then normalize + leaky ReLU in one read and one write, where oneDNN's
/// normalization and a separate activation pass read five times and write twice. Arguments are checked
/// by the callers.
enum OwnNormKernels {
    /// Per (sample, channel), indexed n * C + c: the mean and the sum of squared deviations over the
    /// positions; nil when the layout has no such kernel on this CPU.
    static func statistics(_ x: Tensor) -> (mean: [Double], m2: [Double])? {
        let dims = x.dims, layout = x.layout
        guard layout != .plain, cdnnl_own_kernels_available(layout.cValue) != 0 else { return nil }
        let N = dims[0], C = dims[1], B = layout.block, CB = (C + B - 1) / B, S = dims.dropFirst(2).reduce(1, *)
        var raw = [Double](repeating: 0, count: N * CB * 3 * B)
        let rc = raw.withUnsafeMutableBufferPointer { r in
            withExtendedLifetime(x.storage) { cdnnl_norm_stats(x.floats, Int64(N), Int64(C), Int64(S), layout.cValue, r.baseAddress!) }
        }
        guard rc == 0 else { return nil }
        var mean = [Double](repeating: 0, count: N * C), m2 = mean
        for n in 0 ..< N {
            for c in 0 ..< C {
                let u = n * CB + c / B, l = c % B
                let k = raw[3 * u * B + l], s1 = raw[(3 * u + 1) * B + l], s2 = raw[(3 * u + 2) * B + l]
                mean[n * C + c] = k + s1 / Double(S)
                m2[n * C + c] = max(0, s2 - s1 * s1 / Double(S))
            }
        }
        return (mean, m2)
    }

    /// output = leaky_relu(scale * (x - mean) / sqrt(variance + epsilon) + shift [+ residual]) with `slope` (1: none);
    /// mean and variance given per (sample, channel) index n * C + c. Only after `statistics` gave values (same layout).
    static func normalize(_ x: Tensor, into output: Tensor, mean: (Int) -> Double, variance: (Int) -> Double, scale: Tensor,
                          shift: Tensor, epsilon: Float, slope: Float, residual: Tensor? = nil) throws {
        let dims = x.dims, layout = x.layout
        let N = dims[0], C = dims[1], B = layout.block, CB = (C + B - 1) / B
        let gamma = try scale.toArray(), beta = try shift.toArray()
        var a = [Float](repeating: 0, count: N * CB * B), b = a
        for n in 0 ..< N {
            for c in 0 ..< C {
                let i = n * C + c, k = Double(gamma[c]) / (variance(i) + Double(epsilon)).squareRoot()
                a[(n * CB + c / B) * B + c % B] = Float(k)
                b[(n * CB + c / B) * B + c % B] = Float(Double(beta[c]) - mean(i) * k)
            }
        }
        try apply(x, into: output, a: a, b: b, slope: slope, residual: residual)
    }

    /// Leaky ReLU in place (the fallback after oneDNN's normalization); `op` keeps the primitive between calls.
    static func activate(_ y: Tensor, slope: Float, op: inout LeakyReLU?) throws {
        if op == nil || op!.dims != y.dims || op!.layout != y.layout || op!.slope != slope {
            op = try LeakyReLU(dims: y.dims, layout: y.layout, slope: slope)
        }
        try op!.forward(input: y, output: y)
    }

    /// The backward of y = leaky_relu(norm(x)) from y: dx into `inputGradient` (may be `outputGradient`), the scale and
    /// shift gradients added. Statistics per channel (batch norm over the batch) or per (sample, channel)
    /// (`perSample`, instance norm). False, with nothing written, where the own kernels do not run.
    static func backwardThroughActivation(output y: Tensor, slope: Float, outputGradient dy: Tensor, inputGradient dx: Tensor,
                                          scale: Tensor, shift: Tensor, mean: Tensor, variance: Tensor, epsilon: Float,
                                          perSample: Bool, scaleGradient: Tensor, shiftGradient: Tensor) throws -> Bool {
        let dims = y.dims, layout = y.layout
        guard layout != .plain, slope > 0, cdnnl_own_kernels_available(layout.cValue) != 0 else { return false }
        let N = dims[0], C = dims[1], B = layout.block, CB = (C + B - 1) / B, S = dims.dropFirst(2).reduce(1, *)
        let gamma = try scale.toArray(), beta = try shift.toArray(), v = try variance.toArray()
        let lanes = N * CB * B
        func at(_ n: Int, _ c: Int) -> Int { (n * CB + c / B) * B + c % B }
        var ia = [Float](repeating: 0, count: lanes), ib = ia
        for n in 0 ..< N {
            for c in 0 ..< C {
                ia[at(n, c)] = 1 / gamma[c]
                ib[at(n, c)] = -beta[c] / gamma[c]
            }
        }
        var sums = [Double](repeating: 0, count: 2 * lanes)
        let rc = sums.withUnsafeMutableBufferPointer { out in
            withExtendedLifetime((y.storage, dy.storage)) {
                cdnnl_norm_act_backward_sums(y.floats, dy.floats, Int64(N), Int64(C), Int64(S), layout.cValue, slope, ia, ib, out.baseAddress!)
            }
        }
        guard rc == 0 else { return false }
        func sum(_ j: Int, _ n: Int, _ c: Int) -> Double { sums[(2 * (n * CB + c / B) + j) * B + c % B] }
        var A = [Float](repeating: 0, count: lanes), B1 = A, B2 = A
        var dGamma = [Double](repeating: 0, count: C), dBeta = dGamma
        for c in 0 ..< C {
            var t1 = 0.0, t2 = 0.0
            for n in 0 ..< N { t1 += sum(0, n, c); t2 += sum(1, n, c) }
            dBeta[c] = t1
            dGamma[c] = t2
            for n in 0 ..< N {
                let (s1, s2, count, varianceIndex) = perSample ? (sum(0, n, c), sum(1, n, c), Double(S), n * C + c)
                                                               : (t1, t2, Double(N * S), c)
                A[at(n, c)] = Float(Double(gamma[c]) / (Double(v[varianceIndex]) + Double(epsilon)).squareRoot())
                B1[at(n, c)] = Float(s1 / count)
                B2[at(n, c)] = Float(s2 / count)
            }
        }
        let rd = withExtendedLifetime((y.storage, dy.storage, dx.storage)) {
            cdnnl_norm_act_backward_data(y.floats, dy.floats, dx.floats, Int64(N), Int64(C), Int64(S), layout.cValue, slope, ia, ib, A, B1, B2)
        }
        try check(rd, "normalization backward \(shapeText(dims))")
        withExtendedLifetime((scaleGradient.storage, shiftGradient.storage)) {
            for c in 0 ..< C {
                scaleGradient.floats[c] += Float(dGamma[c])
                shiftGradient.floats[c] += Float(dBeta[c])
            }
        }
        return true
    }

    private static func apply(_ x: Tensor, into output: Tensor, a: [Float], b: [Float], slope: Float, residual: Tensor? = nil) throws {
        let dims = x.dims
        let rc = withExtendedLifetime((x.storage, output.storage, residual?.storage)) {
            cdnnl_norm_affine_activate(x.floats, residual?.floats, output.floats, Int64(dims[0]), Int64(dims[1]), Int64(dims.dropFirst(2).reduce(1, *)),
                                       x.layout.cValue, a, b, slope)
        }
        try check(rc, "normalization \(shapeText(dims))")
    }
}
