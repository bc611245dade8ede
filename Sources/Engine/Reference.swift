#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Naive implementations of every engine op in Double precision on plain row-major arrays:
/// the oracle the fast kernels are tested against (and, in Double, precise enough for
/// finite-difference checks of their own backward passes). Written for clarity, not speed.
///
/// Activation arrays are (N, C, spatial...) row-major; weights in PyTorch layout.
public enum Reference {
    // MARK: Convolution

    /// Spatial index triples (input position, output position, kernel tap) linked by the
    /// convolution: conv: in = out*s - p + k; transposed: out = in*s - p + k.
    private static func taps(_ g: ConvolutionGeometry, input: [Int]) -> (out: [Int], list: [(Int, Int, Int)]) {
        let out = g.outputSpatial(input)
        let r = g.spatialRank
        var list: [(Int, Int, Int)] = []
        let driver = g.transposed ? input : out
        let kCount = g.kernelSize.reduce(1, *)
        let driverCount = driver.reduce(1, *)
        for a in 0..<driverCount {
            var aIdx = [Int](repeating: 0, count: r)
            var rem = a
            for i in stride(from: r - 1, through: 0, by: -1) { aIdx[i] = rem % driver[i]; rem /= driver[i] }
            for k in 0..<kCount {
                var kIdx = [Int](repeating: 0, count: r)
                var kr = k
                for i in stride(from: r - 1, through: 0, by: -1) { kIdx[i] = kr % g.kernelSize[i]; kr /= g.kernelSize[i] }
                var other = [Int](repeating: 0, count: r)
                var valid = true
                let bound = g.transposed ? out : input
                for i in 0..<r {
                    other[i] = aIdx[i] * g.stride[i] - g.padding[i] + kIdx[i]
                    if other[i] < 0 || other[i] >= bound[i] { valid = false }
                }
                guard valid else { continue }
                var o = 0
                for i in 0..<r { o = o * bound[i] + other[i] }
                list.append(g.transposed ? (a, o, k) : (o, a, k))
            }
        }
        return (out, list)
    }

    /// Forward convolution. input (N, I, spatial), weight `g.weightDims`, bias (O) -> (N, O, out).
    public static func convolution(_ x: [Double], inputDims: [Int], weight: [Double], bias: [Double]?,
                                   _ g: ConvolutionGeometry) -> (values: [Double], dims: [Int]) {
        let (out, list) = taps(g, input: Array(inputDims.dropFirst(2)))
        let (n, ci, co) = (inputDims[0], g.inputChannels, g.outputChannels)
        let (si, so, kc) = (inputDims.dropFirst(2).reduce(1, *), out.reduce(1, *), g.kernelSize.reduce(1, *))
        var y = [Double](repeating: 0, count: n * co * so)
        for b in 0..<n {
            for o in 0..<co {
                let bo = bias?[o] ?? 0
                for p in 0..<so { y[(b * co + o) * so + p] = bo }
                for i in 0..<ci {
                    let wBase = g.transposed ? (i * co + o) * kc : (o * ci + i) * kc
                    for (pi, po, k) in list {
                        y[(b * co + o) * so + po] += weight[wBase + k] * x[(b * ci + i) * si + pi]
                    }
                }
            }
        }
        return (y, [n, co] + out)
    }

    /// Gradients of the convolution given dL/dy: (dL/dx, dL/dw, dL/db).
    public static func convolutionBackward(_ x: [Double], inputDims: [Int], weight: [Double], outputGradient dy: [Double],
                                           _ g: ConvolutionGeometry) -> (input: [Double], weight: [Double], bias: [Double]) {
        let (out, list) = taps(g, input: Array(inputDims.dropFirst(2)))
        let (n, ci, co) = (inputDims[0], g.inputChannels, g.outputChannels)
        let (si, so, kc) = (inputDims.dropFirst(2).reduce(1, *), out.reduce(1, *), g.kernelSize.reduce(1, *))
        var dx = [Double](repeating: 0, count: x.count)
        var dw = [Double](repeating: 0, count: weight.count)
        var db = [Double](repeating: 0, count: co)
        for b in 0..<n {
            for o in 0..<co {
                for p in 0..<so { db[o] += dy[(b * co + o) * so + p] }
                for i in 0..<ci {
                    let wBase = g.transposed ? (i * co + o) * kc : (o * ci + i) * kc
                    for (pi, po, k) in list {
                        let d = dy[(b * co + o) * so + po]
                        dx[(b * ci + i) * si + pi] += weight[wBase + k] * d
                        dw[wBase + k] += x[(b * ci + i) * si + pi] * d
                    }
                }
            }
        }
        return (dx, dw, db)
    }

    // MARK: Normalization

    /// Statistics groups: batch norm groups (all samples, one channel); instance norm groups
    /// (one sample, one channel). Returns for each group the element indices' (start, stride) runs.
    private static func groups(_ dims: [Int], perSample: Bool) -> [[Int]] {
        let (n, c, s) = (dims[0], dims[1], dims.dropFirst(2).reduce(1, *))
        var out: [[Int]] = []
        for b in 0..<(perSample ? n : 1) {
            for ch in 0..<c {
                var idx: [Int] = []
                for bb in (perSample ? b..<(b + 1) : 0..<n) {
                    let base = (bb * c + ch) * s
                    idx.append(contentsOf: base..<(base + s))
                }
                out.append(idx)
            }
        }
        return out
    }

    /// Normalises each group with its mean and biased variance, then scale/shift per channel.
    /// Returns y and the per-group mean and biased variance.
    public static func normalization(_ x: [Double], dims: [Int], scale: [Double], shift: [Double], epsilon: Double,
                                     perSample: Bool) -> (y: [Double], mean: [Double], variance: [Double]) {
        var y = x
        var means: [Double] = [], vars: [Double] = []
        for (gi, idx) in groups(dims, perSample: perSample).enumerated() {
            let ch = gi % dims[1]
            let m = idx.reduce(0) { $0 + x[$1] } / Double(idx.count)
            let v = idx.reduce(0) { $0 + (x[$1] - m) * (x[$1] - m) } / Double(idx.count)
            for i in idx { y[i] = (x[i] - m) / (v + epsilon).squareRoot() * scale[ch] + shift[ch] }
            means.append(m)
            vars.append(v)
        }
        return (y, means, vars)
    }

    /// Batch-norm inference with given statistics.
    public static func batchNormInference(_ x: [Double], dims: [Int], scale: [Double], shift: [Double],
                                          mean: [Double], variance: [Double], epsilon: Double) -> [Double] {
        var y = x
        for (ch, idx) in groups(dims, perSample: false).enumerated() {
            for i in idx { y[i] = (x[i] - mean[ch]) / (variance[ch] + epsilon).squareRoot() * scale[ch] + shift[ch] }
        }
        return y
    }

    /// Backward of `normalization` (batch statistics): (dx, dscale, dshift).
    public static func normalizationBackward(_ x: [Double], dims: [Int], scale: [Double], outputGradient dy: [Double],
                                             epsilon: Double, perSample: Bool) -> (input: [Double], scale: [Double], shift: [Double]) {
        var dx = x
        var ds = [Double](repeating: 0, count: dims[1]), dsh = ds
        for (gi, idx) in groups(dims, perSample: perSample).enumerated() {
            let ch = gi % dims[1]
            let m = Double(idx.count)
            let mean = idx.reduce(0) { $0 + x[$1] } / m
            let v = idx.reduce(0) { $0 + (x[$1] - mean) * (x[$1] - mean) } / m
            let inv = 1 / (v + epsilon).squareRoot()
            var sdy = 0.0, sdyx = 0.0
            for i in idx {
                let xh = (x[i] - mean) * inv
                sdy += dy[i]
                sdyx += dy[i] * xh
            }
            ds[ch] += sdyx
            dsh[ch] += sdy
            for i in idx {
                let xh = (x[i] - mean) * inv
                dx[i] = scale[ch] * inv * (dy[i] - sdy / m - xh * sdyx / m)
            }
        }
        return (dx, ds, dsh)
    }

    // MARK: Pointwise and structural

    public static func leakyReLU(_ x: [Double], slope: Double) -> [Double] { x.map { $0 > 0 ? $0 : slope * $0 } }

    public static func leakyReLUBackward(_ x: [Double], outputGradient dy: [Double], slope: Double) -> [Double] {
        zip(x, dy).map { $0 > 0 ? $1 : slope * $1 }
    }

    /// Channel concatenation of (N, Ca, S) and (N, Cb, S).
    public static func concatenate(_ a: [Double], _ b: [Double], batch: Int) -> [Double] {
        let (fa, fb) = (a.count / batch, b.count / batch)
        var out: [Double] = []
        for n in 0..<batch { out += a[(n * fa)..<((n + 1) * fa)]; out += b[(n * fb)..<((n + 1) * fb)] }
        return out
    }

    // MARK: Losses (logits (N, C, spatial), labels (N, spatial))

    public static func softmax(_ z: [Double], dims: [Int]) -> [Double] {
        let (n, c, s) = (dims[0], dims[1], dims.dropFirst(2).reduce(1, *))
        var p = z
        for b in 0..<n {
            for v in 0..<s {
                let idx = (0..<c).map { (b * c + $0) * s + v }
                let mx = idx.map { z[$0] }.max()!
                let sum = idx.reduce(0) { $0 + exp(z[$1] - mx) }
                for i in idx { p[i] = exp(z[i] - mx) / sum }
            }
        }
        return p
    }

    /// Mean cross-entropy and its gradient.
    public static func crossEntropy(_ z: [Double], dims: [Int], target: [UInt8]) -> (loss: Double, gradient: [Double]) {
        let (n, c, s) = (dims[0], dims[1], dims.dropFirst(2).reduce(1, *))
        let p = softmax(z, dims: dims)
        var loss = 0.0
        var g = p
        let m = Double(n * s)
        for b in 0..<n {
            for v in 0..<s {
                let t = Int(target[b * s + v])
                loss -= log(p[(b * c + t) * s + v])
                for k in 0..<c { g[(b * c + k) * s + v] = (p[(b * c + k) * s + v] - (k == t ? 1 : 0)) / m }
            }
        }
        return (loss / m, g)
    }

    /// The recipe's soft Dice loss (forward only; its gradient is checked by finite differences).
    public static func dice(_ z: [Double], dims: [Int], target: [UInt8], smooth: Double = 1e-5) -> Double {
        let (n, c, s) = (dims[0], dims[1], dims.dropFirst(2).reduce(1, *))
        let p = softmax(z, dims: dims)
        var total = 0.0
        for k in 1..<c {
            var inter = 0.0, ps = 0.0, gs = 0.0
            for b in 0..<n {
                for v in 0..<s {
                    let g: Double = Int(target[b * s + v]) == k ? 1 : 0
                    inter += p[(b * c + k) * s + v] * g
                    ps += p[(b * c + k) * s + v]
                    gs += g
                }
            }
            total += 1 - (2 * inter + smooth) / (gs + ps + smooth)
        }
        return total / Double(c - 1)
    }
}
