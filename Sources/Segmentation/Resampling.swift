import Foundation
import MedicalImaging

/// Resizing along axes of arrays: the zoom augmentation (C order), and trilinear resampling between voxel grids
/// of one field of view (x fastest), to predict a case at the spacing its model was trained at.
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

    // MARK: Resampling between grids (voxel centres aligned as PyTorch's interpolate(mode="trilinear",
    // align_corners=False)).

    /// The grid (X, Y, Z) that covers `loaded`'s field of view at `spacing` (mm), or nil when its own spacing is
    /// within 2% of it on every axis (no resampling).
    static func grid(of loaded: LoadedCase, at spacing: [Double]) -> [Int]? {
        let own = loaded.header.spacing
        guard own.count >= 3, spacing.count == 3 else { return nil }
        if (0 ..< 3).allSatisfy({ abs(own[$0] - spacing[$0]) <= 0.02 * spacing[$0] }) { return nil }
        return (0 ..< 3).map { max(1, Int((Double(loaded.shape[$0]) * own[$0] / spacing[$0]).rounded())) }
    }

    /// The case's channels on `grid`; its header's spacing and affine follow. Voxels outside the brain (zero in
    /// every channel, resampled by nearest neighbour) stay exactly zero: interpolation would otherwise give the
    /// brain a rim of small values that preprocessing counts as brain.
    static func resample(_ loaded: LoadedCase, to grid: [Int]) -> LoadedCase {
        var out = loaded
        let n = loaded.shape.reduce(1, *)
        var outside = [Float](repeating: 1, count: n)
        for c in loaded.channels { for i in 0 ..< n where c[i] != 0 { outside[i] = 0 } }
        let mask = nearest(outside, from: loaded.shape, to: grid)
        out.channels = loaded.channels.map { channel in
            var v = trilinear(channel, from: loaded.shape, to: grid)
            for i in v.indices where mask[i] != 0 { v[i] = 0 }
            return v
        }
        out.shape = grid
        var header = loaded.header
        let rows = header.affine.rows
        var affine = rows
        for a in 0 ..< 3 {
            let f = Double(loaded.shape[a]) / Double(grid[a])
            for r in 0 ..< 3 {
                affine[r][a] = rows[r][a] * f
                affine[r][3] += rows[r][a] * (0.5 * f - 0.5)  // new voxel 0's centre in old voxel units
            }
        }
        header.shape = grid
        header.setAffine(Affine(rows: affine))
        out.header = header
        return out
    }

    /// `values` (x fastest, shape `from` = (X, Y, Z)) on the grid `to`: linear interpolation along x, then y,
    /// then z (separable, so each pass is one line at a time).
    static func trilinear(_ values: [Float], from: [Int], to: [Int]) -> [Float] {
        var v = values
        var shape = from
        for axis in 0 ..< 3 where shape[axis] != to[axis] {
            v = along(axis, v, shape, to[axis])
            shape[axis] = to[axis]
        }
        return v
    }

    /// `values` on the grid `to` by nearest neighbour (source index floor((i + 0.5) x from / to) per axis).
    static func nearest(_ values: [Float], from: [Int], to: [Int]) -> [Float] {
        let index = (0 ..< 3).map { a in (0 ..< to[a]).map { min(from[a] - 1, Int((Double($0) + 0.5) * Double(from[a]) / Double(to[a]))) } }
        var out = [Float](repeating: 0, count: to.reduce(1, *))
        for z in 0 ..< to[2] { for y in 0 ..< to[1] {
            let src = (index[2][z] * from[1] + index[1][y]) * from[0], dst = (z * to[1] + y) * to[0]
            for x in 0 ..< to[0] { out[dst + x] = values[src + index[0][x]] }
        } }
        return out
    }

    /// Resamples axis `axis` of `v` (shape `shape`, x fastest) to `n` points.
    private static func along(_ axis: Int, _ v: [Float], _ shape: [Int], _ n: Int) -> [Float] {
        let m = shape[axis]
        let stride = axis == 0 ? 1 : (axis == 1 ? shape[0] : shape[0] * shape[1])
        let outer = shape.reduce(1, *) / (m * stride)
        // For each output index: the two source indices and the weight of the second.
        let scale = Double(m) / Double(n)
        let taps: [(Int, Int, Float)] = (0 ..< n).map { i in
            let x = min(max((Double(i) + 0.5) * scale - 0.5, 0), Double(m - 1))
            let lo = Int(x)
            return (lo, min(lo + 1, m - 1), Float(x - Double(lo)))
        }
        var out = [Float](repeating: 0, count: outer * n * stride)
        v.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for o in 0 ..< outer {
                    let s0 = o * m * stride, d0 = o * n * stride
                    for (i, (lo, hi, w)) in taps.enumerated() {
                        let a = s0 + lo * stride, b = s0 + hi * stride, d = d0 + i * stride
                        for j in 0 ..< stride { dst[d + j] = src[a + j] + w * (src[b + j] - src[a + j]) }
                    }
                }
            }
        }
        return out
    }
}
