import Foundation

/// Resizing along axes of C-order arrays, for the zoom augmentation.
enum Resampling {
    /// The zoom augmentation: per spatial axis, the centred box of round(scale x size) voxels resized back to
    /// the full size: cubic (Keys, a = -0.5) for the image, nearest for the label. image (C, spatial...),
    /// label (spatial...).
    static func zoom(image: inout [Float], label: inout [UInt8], channels C: Int, spatial: [Int], scale: Double) {
        for axis in spatial.indices {
            let n = spatial[axis]
            let length = min(n, max(1, Int((Double(n) * scale).rounded())))
            guard length < n else { continue }
            let start = (n - length) / 2
            let inner = spatial[(axis + 1)...].reduce(1, *), outer = spatial[..<axis].reduce(1, *)
            image = resize(image, blocks: C * outer, n: n, inner: inner, start: start, length: length)
            // Nearest: output i takes source start + floor((i + 0.5) * length / n).
            let source = (0 ..< n).map { start + min(length - 1, Int((Double($0) + 0.5) * Double(length) / Double(n))) }
            var out = label
            for o in 0 ..< outer { for i in 0 ..< n {
                let (dst, src) = ((o * n + i) * inner, (o * n + source[i]) * inner)
                for k in 0 ..< inner { out[dst + k] = label[src + k] }
            } }
            label = out
        }
    }

    /// Cubic resize of the box [start, start + length) of an axis of `n` voxels to `n` voxels (pixel centres
    /// aligned, taps clamped to the box). Array viewed as (blocks, n, inner).
    static func resize(_ v: [Float], blocks: Int, n: Int, inner: Int, start: Int, length: Int) -> [Float] {
        func keys(_ x: Double) -> Double {
            let a = -0.5, x = abs(x)
            if x <= 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
            if x < 2 { return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a }
            return 0
        }
        // Per output position: 4 source indices and weights.
        var taps: [(Int, Float)] = []
        taps.reserveCapacity(4 * n)
        for i in 0 ..< n {
            let t = Double(start) + (Double(i) + 0.5) * Double(length) / Double(n) - 0.5
            let base = Int(t.rounded(.down))
            for j in -1 ... 2 {
                let index = min(max(base + j, start), start + length - 1)
                taps.append((index, Float(keys(t - Double(base + j)))))
            }
        }
        var out = [Float](repeating: 0, count: v.count)
        for b in 0 ..< blocks { for i in 0 ..< n {
            let dst = (b * n + i) * inner
            for j in 0 ..< 4 {
                let (index, w) = taps[4 * i + j]
                let src = (b * n + index) * inner
                for k in 0 ..< inner { out[dst + k] += w * v[src + k] }
            }
        } }
        return out
    }
}
