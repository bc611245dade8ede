#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Integer class labels (N, 1, spatial...), one byte per voxel, plain row-major order.
public struct Labels: Sendable {
    public let dims: [Int]
    public var values: [UInt8]

    public init(dims: [Int], values: [UInt8]) throws {
        guard dims.count >= 3, dims[1] == 1, dims.allSatisfy({ $0 > 0 }), values.count == dims.reduce(1, *) else {
            throw EngineError.shapeMismatch(op: "Labels", expected: "(N, 1, spatial...) dims matching \(values.count) values",
                                            got: shapeText(dims))
        }
        self.dims = dims
        self.values = values
    }
}

/// Softmax over channels and the recipe's losses on logits (N, C, spatial...) in plain layout.
///
/// Loss functions return the loss and ADD `scale * d(loss)/d(logits)` into `gradient` when one
/// is given (so Dice + cross-entropy, or deep-supervision heads, accumulate into one buffer).
public enum Losses {
    /// Softmax over the channel axis. Returns probabilities with the logits' dims (plain).
    public static func softmax(_ logits: Tensor) throws -> Tensor {
        try checkLogits(logits, nil, "softmax")
        let p = try Tensor(zeros: logits.dims)
        withExtendedLifetime((logits.storage, p.storage)) { softmax(logits, into: p.floats) }
        return p
    }

    /// Mean cross-entropy over every voxel (PyTorch `CrossEntropyLoss()`, no class weights). With a `group`, the
    /// logits are this member's share of a global batch and the mean is over the whole batch: the loss is the
    /// global one on every member, the gradient this share's part of the global gradient.
    public static func crossEntropy(logits: Tensor, target: Labels, gradient: Tensor? = nil, scale: Float = 1,
                                    across group: ProcessGroup? = nil) throws -> Float {
        try checkLogits(logits, target, "cross-entropy")
        if let gradient { try require(gradient, dims: logits.dims, layout: .plain, "cross-entropy", "gradient") }
        let (n, c, s) = (logits.batch, logits.channels, logits.count / (logits.batch * logits.channels))
        let probs = try softmax(logits)
        let m = try group?.sum([Double(n * s)])[0] ?? Double(n * s)
        var total = 0.0
        withExtendedLifetime((probs.storage, gradient?.storage)) {
            let p = probs.floats
            let g = gradient?.floats
            let gs = Float(Double(scale) / m)
            for b in 0..<n {
                for v in 0..<s {
                    let t = Int(target.values[b * s + v])
                    let base = b * c * s + v
                    total -= log(max(Double(p[base + t * s]), 1e-30))
                    if let g {
                        for k in 0..<c { g[base + k * s] += gs * (p[base + k * s] - (k == t ? 1 : 0)) }
                    }
                }
            }
        }
        if let group { total = try group.sum([total])[0] }
        return Float(total / m)
    }

    /// Soft Dice loss of the recipe (MONAI DiceLoss: softmax, one-hot target, background
    /// excluded, sums over batch and voxels, smoothing 1e-5 on both sides), mean over classes 1..C-1. With a
    /// `group`, the sums run over every member's share of the global batch, as `crossEntropy`'s mean does.
    public static func dice(logits: Tensor, target: Labels, gradient: Tensor? = nil, scale: Float = 1,
                            smooth: Double = 1e-5, across group: ProcessGroup? = nil) throws -> Float {
        try checkLogits(logits, target, "Dice loss")
        if let gradient { try require(gradient, dims: logits.dims, layout: .plain, "Dice loss", "gradient") }
        let (n, c, s) = (logits.batch, logits.channels, logits.count / (logits.batch * logits.channels))
        guard c >= 2 else { throw EngineError.invalidArgument(op: "Dice loss", message: "needs at least 2 classes, got \(c)") }
        let probs = try softmax(logits)
        var inter = [Double](repeating: 0, count: c), psum = inter, gsum = inter
        var loss = 0.0
        withExtendedLifetime(probs.storage) {
            let p = probs.floats
            for b in 0..<n {
                for k in 1..<c {
                    let row = p + (b * c + k) * s
                    var ps = 0.0
                    for v in 0..<s { ps += Double(row[v]) }
                    psum[k] += ps
                }
                for v in 0..<s {
                    let t = Int(target.values[b * s + v])
                    if t > 0 {
                        gsum[t] += 1
                        inter[t] += Double(p[(b * c + t) * s + v])
                    }
                }
            }
        }
        if let group {
            let all = try group.sum(inter + psum + gsum)
            (inter, psum, gsum) = (Array(all[0 ..< c]), Array(all[c ..< 2 * c]), Array(all[2 * c ..< 3 * c]))
        }
        for k in 1..<c { loss += 1 - (2 * inter[k] + smooth) / (gsum[k] + psum[k] + smooth) }
        loss /= Double(c - 1)
        guard let gradient else { return Float(loss) }
        // dL/dp_k(v) = -(2 g_k(v) D_k - (2 I_k + s)) / D_k^2 / (C-1), D_k = G_k + P_k + s; then
        // through softmax: dz_j = p_j (dp_j - sum_k p_k dp_k), with dp_0 = 0.
        var a = [Double](repeating: 0, count: c), bcoef = a
        for k in 1..<c {
            let d = gsum[k] + psum[k] + smooth
            a[k] = -2 / d / Double(c - 1)
            bcoef[k] = (2 * inter[k] + smooth) / (d * d) / Double(c - 1)
        }
        withExtendedLifetime((probs.storage, gradient.storage)) {
            let p = probs.floats, g = gradient.floats
            var dp = [Double](repeating: 0, count: c)
            for b in 0..<n {
                for v in 0..<s {
                    let t = Int(target.values[b * s + v])
                    let base = b * c * s + v
                    var dot = 0.0
                    for k in 1..<c {
                        dp[k] = (k == t ? a[k] : 0) + bcoef[k]
                        dot += Double(p[base + k * s]) * dp[k]
                    }
                    for k in 0..<c {
                        let pk = Double(p[base + k * s])
                        g[base + k * s] += Float(Double(scale) * pk * ((k == 0 ? 0 : dp[k]) - dot))
                    }
                }
            }
        }
        return Float(loss)
    }

    private static func softmax(_ logits: Tensor, into out: UnsafeMutablePointer<Float>) {
        let (n, c, s) = (logits.batch, logits.channels, logits.count / (logits.batch * logits.channels))
        let z = logits.floats
        for b in 0..<n {
            for v in 0..<s {
                let base = b * c * s + v
                var mx = -Float.infinity
                for k in 0..<c { mx = max(mx, z[base + k * s]) }
                var sum: Float = 0
                for k in 0..<c {
                    let e = expf(z[base + k * s] - mx)
                    out[base + k * s] = e
                    sum += e
                }
                let inv = 1 / sum
                for k in 0..<c { out[base + k * s] *= inv }
            }
        }
    }

    private static func checkLogits(_ logits: Tensor, _ target: Labels?, _ op: String) throws {
        guard logits.layout == .plain else { throw EngineError.layoutMismatch(op: op, expected: .plain, got: logits.layout) }
        guard logits.dims.count >= 3, logits.count > 0 else {
            throw EngineError.shapeMismatch(op: op, expected: "logits (N, C, spatial...)", got: shapeText(logits.dims))
        }
        guard let target else { return }
        guard target.dims == [logits.batch, 1] + logits.spatial else {
            throw EngineError.shapeMismatch(op: op, expected: "target of shape \(shapeText([logits.batch, 1] + logits.spatial))",
                                            got: shapeText(target.dims))
        }
        if let bad = target.values.first(where: { Int($0) >= logits.channels }) {
            throw EngineError.invalidArgument(op: op, message: "label \(bad) is out of range for \(logits.channels) classes")
        }
    }
}
