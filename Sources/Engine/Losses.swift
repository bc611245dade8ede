import CDNNL
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
        try losses(logits: logits, target: target, gradient: gradient, scale: scale, crossEntropy: true, dice: false,
                   across: group, op: "cross-entropy").crossEntropy
    }

    /// Soft Dice loss of the recipe (MONAI DiceLoss: softmax, one-hot target, background
    /// excluded, sums over batch and voxels, smoothing 1e-5 on both sides), mean over classes 1..C-1. With a
    /// `group`, the sums run over every member's share of the global batch, as `crossEntropy`'s mean does.
    public static func dice(logits: Tensor, target: Labels, gradient: Tensor? = nil, scale: Float = 1,
                            smooth: Double = 1e-5, across group: ProcessGroup? = nil) throws -> Float {
        try losses(logits: logits, target: target, gradient: gradient, scale: scale, smooth: smooth, crossEntropy: false,
                   dice: true, across: group, op: "Dice loss").dice
    }

    /// `dice` and `crossEntropy` of the same logits, their gradients (both times `scale`) added into `gradient`:
    /// two passes over the logits where the two calls take three.
    public static func diceAndCrossEntropy(logits: Tensor, target: Labels, gradient: Tensor? = nil, scale: Float = 1,
                                           smooth: Double = 1e-5, across group: ProcessGroup? = nil) throws -> (dice: Float, crossEntropy: Float) {
        try losses(logits: logits, target: target, gradient: gradient, scale: scale, smooth: smooth, crossEntropy: true,
                   dice: true, across: group, op: "Dice and cross-entropy")
    }

    /// The first pass (cdnnl_softmax_losses) takes the cross-entropy with its gradient and the Dice sums; the
    /// second (cdnnl_dice_gradient) the Dice gradient, which needs the sums over the whole batch.
    private static func losses(logits: Tensor, target: Labels, gradient: Tensor?, scale: Float, smooth: Double = 1e-5,
                               crossEntropy wantCE: Bool, dice wantDice: Bool, across group: ProcessGroup?,
                               op: String) throws -> (dice: Float, crossEntropy: Float) {
        try checkLogits(logits, target, op)
        if let gradient { try require(gradient, dims: logits.dims, layout: .plain, op, "gradient") }
        let (n, c, s) = (logits.batch, logits.channels, logits.count / (logits.batch * logits.channels))
        if wantDice, c < 2 { throw EngineError.invalidArgument(op: op, message: "needs at least 2 classes, got \(c)") }
        guard c <= 255 else { throw EngineError.invalidArgument(op: op, message: "at most 255 classes, got \(c)") }
        let units = unitCount(n * s)
        let m = wantCE ? try group?.sum([Double(n * s)])[0] ?? Double(n * s) : 1
        var partialCE = [Double](repeating: 0, count: wantCE ? units : 0)
        var sums = [Double](repeating: 0, count: wantDice ? 3 * c * units : 0)  // per unit: intersection, prediction, target sums
        withExtendedLifetime((logits.storage, gradient?.storage)) {
            target.values.withUnsafeBufferPointer { labels in
                partialCE.withUnsafeMutableBufferPointer { ce in
                    sums.withUnsafeMutableBufferPointer { d in
                        cdnnl_softmax_losses(logits.floats, labels.baseAddress!, Int64(n), Int64(c), Int64(s), Int64(unitVoxels),
                                             wantCE ? ce.baseAddress : nil, wantDice ? d.baseAddress : nil,
                                             wantCE ? gradient?.floats : nil, Float(Double(scale) / m))
                    }
                }
            }
        }
        var ce: Float = 0
        if wantCE {
            var total = partialCE.reduce(0, +)
            if let group { total = try group.sum([total])[0] }
            ce = Float(total / m)
        }
        guard wantDice else { return (0, ce) }
        var inter = [Double](repeating: 0, count: c), psum = inter, gsum = inter
        for u in 0..<units {
            for k in 0..<c { inter[k] += sums[3 * c * u + k]; psum[k] += sums[3 * c * u + c + k]; gsum[k] += sums[3 * c * u + 2 * c + k] }
        }
        if let group {
            let all = try group.sum(inter + psum + gsum)
            (inter, psum, gsum) = (Array(all[0 ..< c]), Array(all[c ..< 2 * c]), Array(all[2 * c ..< 3 * c]))
        }
        var loss = 0.0
        for k in 1..<c { loss += 1 - (2 * inter[k] + smooth) / (gsum[k] + psum[k] + smooth) }
        loss /= Double(c - 1)
        guard let gradient else { return (Float(loss), ce) }
        // dL/dp_k(v) = -(2 g_k(v) D_k - (2 I_k + s)) / D_k^2 / (C-1), D_k = G_k + P_k + s; then
        // through softmax: dz_j = p_j (dp_j - sum_k p_k dp_k), with dp_0 = 0.
        var a = [Float](repeating: 0, count: c), b = a
        for k in 1..<c {
            let d = gsum[k] + psum[k] + smooth
            a[k] = Float(-2 / d / Double(c - 1))
            b[k] = Float((2 * inter[k] + smooth) / (d * d) / Double(c - 1))
        }
        withExtendedLifetime((logits.storage, gradient.storage)) {
            target.values.withUnsafeBufferPointer { labels in
                cdnnl_dice_gradient(logits.floats, labels.baseAddress!, Int64(n), Int64(c), Int64(s), Int64(unitVoxels), a, b,
                                    scale, gradient.floats)
            }
        }
        return (Float(loss), ce)
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
