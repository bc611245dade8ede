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
        let m = try group?.sum([Double(n * s)])[0] ?? Double(n * s)
        let gs = Float(Double(scale) / m)
        let units = unitCount(n * s)
        var partial = [Double](repeating: 0, count: units)
        withExtendedLifetime((logits.storage, gradient?.storage)) {
            let z = logits.floats, g = gradient?.floats
            partial.withUnsafeMutableBufferPointer { part in
                target.values.withUnsafeBufferPointer { labels in
                    overVoxels(n * s, channels: c) { u, range, p in
                        var acc = 0.0
                        for i in range {
                            let base = (i / s) * c * s + i % s, t = Int(labels[i])
                            softmax(z, base, s, c, into: p)
                            acc -= log(max(Double(p[t]), 1e-30))
                            if let g {
                                for k in 0..<c { g[base + k * s] += gs * (p[k] - (k == t ? 1 : 0)) }
                            }
                        }
                        part[u] = acc
                    }
                }
            }
        }
        var total = partial.reduce(0, +)
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
        let units = unitCount(n * s)
        var sums = [Double](repeating: 0, count: 3 * c * units)  // per unit: intersection, prediction, target sums
        withExtendedLifetime(logits.storage) {
            let z = logits.floats
            sums.withUnsafeMutableBufferPointer { all in
                target.values.withUnsafeBufferPointer { labels in
                    overVoxels(n * s, channels: c) { u, range, p in
                        let part = all.baseAddress! + 3 * c * u
                        for i in range {
                            softmax(z, (i / s) * c * s + i % s, s, c, into: p)
                            for k in 1..<c { part[c + k] += Double(p[k]) }
                            let t = Int(labels[i])
                            if t > 0 {
                                part[2 * c + t] += 1
                                part[t] += Double(p[t])
                            }
                        }
                    }
                }
            }
        }
        var inter = [Double](repeating: 0, count: c), psum = inter, gsum = inter
        for u in 0..<units {
            for k in 0..<c { inter[k] += sums[3 * c * u + k]; psum[k] += sums[3 * c * u + c + k]; gsum[k] += sums[3 * c * u + 2 * c + k] }
        }
        var loss = 0.0
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
        withExtendedLifetime((logits.storage, gradient.storage)) {
            let z = logits.floats, g = gradient.floats
            target.values.withUnsafeBufferPointer { labels in
                overVoxels(n * s, channels: c) { _, range, p in
                    var dp = [Double](repeating: 0, count: c)
                    for i in range {
                        let base = (i / s) * c * s + i % s, t = Int(labels[i])
                        softmax(z, base, s, c, into: p)
                        var dot = 0.0
                        for k in 1..<c {
                            dp[k] = (k == t ? a[k] : 0) + bcoef[k]
                            dot += Double(p[k]) * dp[k]
                        }
                        for k in 0..<c {
                            let pk = Double(p[k])
                            g[base + k * s] += Float(Double(scale) * pk * ((k == 0 ? 0 : dp[k]) - dot))
                        }
                    }
                }
            }
        }
        return Float(loss)
    }

    private static func softmax(_ logits: Tensor, into out: UnsafeMutablePointer<Float>) {
        let (n, c, s) = (logits.batch, logits.channels, logits.count / (logits.batch * logits.channels))
        let z = logits.floats
        overVoxels(n * s, channels: c) { _, range, p in
            for i in range {
                let base = (i / s) * c * s + i % s
                softmax(z, base, s, c, into: p)
                for k in 0..<c { out[base + k * s] = p[k] }
            }
        }
    }

    /// Softmax of one voxel's `c` logits (at `base`, channels `s` apart) into p[0 ..< c].
    @inline(__always)
    private static func softmax(_ z: UnsafeMutablePointer<Float>, _ base: Int, _ s: Int, _ c: Int, into p: UnsafeMutablePointer<Float>) {
        var mx = -Float.infinity
        for k in 0..<c { mx = max(mx, z[base + k * s]) }
        var sum: Float = 0
        for k in 0..<c {
            let e = expf(z[base + k * s] - mx)
            p[k] = e
            sum += e
        }
        let inv = 1 / sum
        for k in 0..<c { p[k] *= inv }
    }

    /// Voxels (batch x positions, flattened) per unit of parallel work: a fixed split, so the partial sums
    /// and their order do not depend on the number of threads.
    private static let unitVoxels = 16384
    private static func unitCount(_ voxels: Int) -> Int { (voxels + unitVoxels - 1) / unitVoxels }

    /// Runs body(unit, voxel range, scratch for `channels` floats) for every unit of `voxels` on the compute threads.
    private static func overVoxels(_ voxels: Int, channels: Int,
                                   _ body: (Int, Range<Int>, UnsafeMutablePointer<Float>) -> Void) {
        Runtime.forEachUnit(unitCount(voxels)) { u in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: channels) { p in
                body(u, u * unitVoxels ..< min(voxels, (u + 1) * unitVoxels), p.baseAddress!)
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
