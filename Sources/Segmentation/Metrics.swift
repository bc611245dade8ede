import Foundation
import MedicalImaging

/// Overlap and surface metrics of segmentations on a voxel grid (x fastest, spacing in mm).
public enum Metrics {
    /// Dice of two binary masks; 1 when both are empty (nothing to find, nothing found).
    public static func dice(_ a: [Bool], _ b: [Bool]) -> Double {
        var tp = 0, fp = 0, fn = 0
        for i in 0 ..< a.count {
            if a[i] && b[i] { tp += 1 } else if a[i] { fp += 1 } else if b[i] { fn += 1 }
        }
        return tp + fp + fn == 0 ? 1 : 2 * Double(tp) / Double(2 * tp + fp + fn)
    }

    /// Adds the voxel counts of (truth class t, predicted class p) to `confusion[t * K + p]`; labels >= K are
    /// counted as class K - 1 (they cannot occur in a prediction, and preprocessing checks the truth).
    public static func accumulateConfusion(_ confusion: inout [Int], prediction: [UInt8], truth: [UInt8], classes K: Int) {
        precondition(prediction.count == truth.count && confusion.count == K * K)
        confusion.withUnsafeMutableBufferPointer { m in
            prediction.withUnsafeBufferPointer { p in
                truth.withUnsafeBufferPointer { t in
                    for i in 0 ..< p.count { m[min(Int(t[i]), K - 1) * K + min(Int(p[i]), K - 1)] += 1 }
                }
            }
        }
    }

    /// Dice of the voxels whose class is in `labels`, from a K x K confusion matrix (truth-major); 1 when both
    /// masks are empty, as `dice(_:_:)`.
    public static func dice(confusion m: [Int], classes K: Int, of labels: Set<UInt8>) -> Double {
        var tp = 0, fp = 0, fn = 0
        for t in 0 ..< K { for p in 0 ..< K {
            let (inT, inP) = (labels.contains(UInt8(t)), labels.contains(UInt8(p)))
            if inT && inP { tp += m[t * K + p] } else if inP { fp += m[t * K + p] } else if inT { fn += m[t * K + p] }
        } }
        return tp + fp + fn == 0 ? 1 : 2 * Double(tp) / Double(2 * tp + fp + fn)
    }

    /// The recipe's per-class score of one volume: the class's Dice when the truth has it, else 1 when the
    /// prediction has it nowhere either and 0 when it does.
    public static func recipeClassDice(confusion m: [Int], classes K: Int, label c: UInt8) -> Double {
        let k = Int(c)
        let inTruth = (0 ..< K).contains { m[k * K + $0] > 0 }, inPrediction = (0 ..< K).contains { m[$0 * K + k] > 0 }
        return inTruth ? dice(confusion: m, classes: K, of: [c]) : (inPrediction ? 0 : 1)
    }

    /// 95th percentile Hausdorff distance in mm between the surfaces of `a` and `b` (medpy's hd95: the
    /// percentile of the union of both directed surface distances; a surface voxel is a mask voxel with a
    /// 6-neighbour outside the mask or the image). Both empty: 0. One empty: `emptyPenalty` (BraTS scores
    /// such cases with a fixed large distance; by default the image diagonal in mm).
    public static func hd95(_ a: [Bool], _ b: [Bool], shape: [Int], spacing: [Double], emptyPenalty: Double? = nil) -> Double {
        let (X, Y, Z) = (shape[0], shape[1], shape.count > 2 ? shape[2] : 1)
        let sp = [spacing[0], spacing.count > 1 ? spacing[1] : 1, spacing.count > 2 ? spacing[2] : 1]
        let anyA = a.contains(true), anyB = b.contains(true)
        if !anyA && !anyB { return 0 }
        if !anyA || !anyB {
            return emptyPenalty ?? ((Double(X) * sp[0]) * (Double(X) * sp[0]) + (Double(Y) * sp[1]) * (Double(Y) * sp[1]) + (Double(Z) * sp[2]) * (Double(Z) * sp[2])).squareRoot()
        }
        // Work inside the box holding both masks: every surface voxel (the EDT's features) lies in it.
        var lo = [X, Y, Z], hi = [-1, -1, -1]
        for z in 0 ..< Z { for y in 0 ..< Y { for x in 0 ..< X {
            let i = (z * Y + y) * X + x
            if a[i] || b[i] {
                lo = [min(lo[0], x), min(lo[1], y), min(lo[2], z)]
                hi = [max(hi[0], x), max(hi[1], y), max(hi[2], z)]
            }
        } } }
        let size = (0 ..< 3).map { hi[$0] - lo[$0] + 1 }
        func surface(_ m: [Bool]) -> [Bool] {
            var s = [Bool](repeating: false, count: size[0] * size[1] * size[2])
            func inside(_ x: Int, _ y: Int, _ z: Int) -> Bool {
                x >= 0 && y >= 0 && z >= 0 && x < X && y < Y && z < Z && m[(z * Y + y) * X + x]
            }
            for z in 0 ..< size[2] { for y in 0 ..< size[1] { for x in 0 ..< size[0] {
                let (gx, gy, gz) = (x + lo[0], y + lo[1], z + lo[2])
                guard m[(gz * Y + gy) * X + gx] else { continue }
                let border = !inside(gx - 1, gy, gz) || !inside(gx + 1, gy, gz) || !inside(gx, gy - 1, gz)
                    || !inside(gx, gy + 1, gz) || (Z > 1 && (!inside(gx, gy, gz - 1) || !inside(gx, gy, gz + 1)))
                s[(z * size[1] + y) * size[0] + x] = border
            } } }
            return s
        }
        let sa = surface(a), sb = surface(b)
        let da = distanceTransform(features: sb, shape: size, spacing: sp)
        let db = distanceTransform(features: sa, shape: size, spacing: sp)
        var distances: [Double] = []
        for i in 0 ..< sa.count where sa[i] { distances.append(da[i]) }
        for i in 0 ..< sb.count where sb[i] { distances.append(db[i]) }
        return percentile(distances, 95)
    }

    /// Linear-interpolated percentile (numpy's default).
    static func percentile(_ values: [Double], _ q: Double) -> Double {
        let s = values.sorted()
        guard !s.isEmpty else { return .nan }
        let position = Double(s.count - 1) * q / 100
        let i = Int(position.rounded(.down)), f = position - Double(i)
        return i + 1 < s.count ? s[i] + (s[i + 1] - s[i]) * f : s[i]
    }

    /// Exact Euclidean distance (mm) from every voxel to the nearest feature voxel, by separable
    /// lower envelopes of parabolas (Felzenszwalb and Huttenlocher), one axis at a time.
    static func distanceTransform(features: [Bool], shape: [Int], spacing: [Double]) -> [Double] {
        let infinity = 1e30
        var d = features.map { $0 ? 0.0 : infinity }
        let strides = [1, shape[0], shape[0] * shape[1]]
        for axis in 0 ..< 3 where shape[axis] > 1 {
            let n = shape[axis], w = spacing[axis] * spacing[axis], stride = strides[axis]
            var f = [Double](repeating: 0, count: n), out = f
            var v = [Int](repeating: 0, count: n), zBounds = [Double](repeating: 0, count: n + 1)
            let lines = d.count / n
            for line in 0 ..< lines {
                // The start of this line: index with the axis coordinate 0.
                let below = line % stride, above = line / stride
                let base = above * stride * n + below
                for i in 0 ..< n { f[i] = d[base + i * stride] }
                var k = 0
                v[0] = 0; zBounds[0] = -.infinity; zBounds[1] = .infinity
                for q in 1 ..< n {
                    var s: Double
                    repeat {
                        let r = v[k]
                        s = ((f[q] + w * Double(q * q)) - (f[r] + w * Double(r * r))) / (2 * w * Double(q - r))
                        if s <= zBounds[k] { k -= 1 } else { break }
                    } while k >= 0
                    k += 1
                    v[k] = q; zBounds[k] = s; zBounds[k + 1] = .infinity
                }
                k = 0
                for q in 0 ..< n {
                    while zBounds[k + 1] < Double(q) { k += 1 }
                    let r = v[k]
                    out[q] = w * Double((q - r) * (q - r)) + f[r]
                }
                for i in 0 ..< n { d[base + i * stride] = out[i] }
            }
        }
        return d.map { $0.squareRoot() }
    }
}
