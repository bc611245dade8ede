import Engine
import Foundation
import MedicalImaging

/// The recipe's training augmentations (Composer's set by default), applied per sample in this order:
/// crop -> (zoom) -> flips -> noise -> blur -> brightness -> contrast.
public struct Augmentations: Codable, Sendable, Equatable {
    /// Probability that a sample is centred on foreground (a random present class, within its largest
    /// connected component); otherwise a uniformly random slice / position.
    public var foregroundProbability = 0.33
    /// Spatial axes of the sample (0 = H, 1 = W in 2D) each flipped with probability 0.5. Composer in
    /// practice flips H only; NVIDIA flips every axis.
    public var flipAxes: [Int] = [0]
    /// Gaussian noise: probability 0.15, std ~ U(0, 0.33).
    public var noise = true
    /// Gaussian blur: probability 0.15, sigma ~ U(0.5, 1.5), kernel 3 (reflecting borders).
    public var blur = true
    /// Brightness: probability 0.15, multiply by U(0.7, 1.3).
    public var brightness = true
    /// Contrast: probability 0.15, multiply by U(0.65, 1.5), then clamp to the sample's original range.
    public var contrast = true
    /// Zoom (NVIDIA's; Composer omits it): probability 0.15, scale ~ U(0.7, 1.0): the centred scale x sample
    /// box resized back (cubic for the image, nearest for the label). Applied after the crop, before flips.
    public var zoom = false

    public static let probability = 0.15
    public static let none = Augmentations(foregroundProbability: 0, flipAxes: [], noise: false, blur: false, brightness: false, contrast: false)
    /// NVIDIA's 3D set: foreground probability 0.4 (its newer code), flips on every axis (zoom is an option).
    public static let nvidia3D = Augmentations(foregroundProbability: 0.4, flipAxes: [0, 1, 2], noise: true, blur: true, brightness: true, contrast: true)
    public init() {}
    public init(foregroundProbability: Double, flipAxes: [Int], noise: Bool, blur: Bool, brightness: Bool, contrast: Bool) {
        self.foregroundProbability = foregroundProbability
        self.flipAxes = flipAxes
        self.noise = noise
        self.blur = blur
        self.brightness = brightness
        self.contrast = contrast
    }

    /// Which steps a sample received (for tests and logs).
    public struct Applied: OptionSet, Sendable {
        public let rawValue: Int
        public init(rawValue: Int) { self.rawValue = rawValue }
        public static let foreground = Applied(rawValue: 1), flip = Applied(rawValue: 2), noise = Applied(rawValue: 4)
        public static let blur = Applied(rawValue: 8), brightness = Applied(rawValue: 16), contrast = Applied(rawValue: 32)
        public static let zoom = Applied(rawValue: 64)
    }

    /// Intensity and flip augmentations of one 2D sample in place: image (C, H, W), label (H, W).
    func apply(image: inout [Float], label: inout [UInt8], channels C: Int, height H: Int, width W: Int,
               rng: inout SplitMix64) -> Applied {
        apply(image: &image, label: &label, channels: C, spatial: [H, W], rng: &rng)
    }

    /// The augmentations after the crop, in place: image (C, spatial...), label (spatial...), C order, 2 or 3
    /// spatial axes. Random draws happen in a fixed order, so a seeded stream gives the same sample.
    func apply(image: inout [Float], label: inout [UInt8], channels C: Int, spatial: [Int],
               rng: inout SplitMix64) -> Applied {
        var applied: Applied = []
        if zoom && rng.chance(Self.probability) {
            applied.insert(.zoom)
            let scale = rng.uniform(0.7, 1.0)
            Resampling.zoom(image: &image, label: &label, channels: C, spatial: spatial, scale: scale)
        }
        for axis in flipAxes where axis < spatial.count && rng.chance(0.5) {
            applied.insert(.flip)
            Self.flip(image: &image, label: &label, channels: C, spatial: spatial, axis: axis)
        }
        if noise && rng.chance(Self.probability) {
            applied.insert(.noise)
            Self.addNoise(to: &image, std: Float(rng.uniform(0, 0.33)), rng: &rng)
        }
        if blur && rng.chance(Self.probability) {
            applied.insert(.blur)
            Self.blur(&image, channels: C, spatial: spatial, sigma: rng.uniform(0.5, 1.5))
        }
        if brightness && rng.chance(Self.probability) {
            applied.insert(.brightness)
            Self.scale(&image, by: Float(rng.uniform(0.7, 1.3)))
        }
        if contrast && rng.chance(Self.probability) {
            applied.insert(.contrast)
            Self.contrast(&image, by: Float(rng.uniform(0.65, 1.5)))
        }
        return applied
    }

    // The steps, each a loop over raw buffers (no per-voxel closures or bounds checks, no temporaries but
    // blur's one copy). Image (C, spatial...), label (spatial...), C order.

    /// Reverses spatial axis `axis` of image and label.
    public static func flip(image: inout [Float], label: inout [UInt8], channels C: Int, spatial: [Int], axis: Int) {
        let inner = spatial[(axis + 1)...].reduce(1, *), n = spatial[axis], outer = spatial[..<axis].reduce(1, *)
        func reverse<T>(_ v: UnsafeMutableBufferPointer<T>, blocks: Int) {
            let p = v.baseAddress!
            for o in 0 ..< blocks { for i in 0 ..< n / 2 {
                let (a, b) = (p + (o * n + i) * inner, p + (o * n + n - 1 - i) * inner)
                for k in 0 ..< inner { let t = a[k]; a[k] = b[k]; b[k] = t }
            } }
        }
        image.withUnsafeMutableBufferPointer { reverse($0, blocks: C * outer) }
        label.withUnsafeMutableBufferPointer { reverse($0, blocks: outer) }
    }

    /// Adds Gaussian noise of standard deviation `std` to every value.
    public static func addNoise(to image: inout [Float], std: Float, rng: inout SplitMix64) {
        image.withUnsafeMutableBufferPointer { v in
            var i = 0
            while i < v.count {
                let (a, b) = rng.normalFloats()
                v[i] += std * a
                if i + 1 < v.count { v[i + 1] += std * b }
                i += 2
            }
        }
    }

    /// Separable 3-tap Gaussian blur of every channel, last axis first, borders reflected (d c b | a b c d | c b a).
    public static func blur(_ image: inout [Float], channels C: Int, spatial: [Int], sigma: Double) {
        let side = Float(exp(-1 / (2 * sigma * sigma)))
        let (k0, k1) = (side / (1 + 2 * side), 1 / (1 + 2 * side))
        var tmp = image
        for axis in spatial.indices.reversed() {
            let inner = spatial[(axis + 1)...].reduce(1, *), n = spatial[axis]
            let outer = C * spatial[..<axis].reduce(1, *)
            swap(&tmp, &image)  // tmp: input of this pass, image: its output
            tmp.withUnsafeBufferPointer { src in
                image.withUnsafeMutableBufferPointer { dst in
                    let (s, d) = (src.baseAddress!, dst.baseAddress!)
                    for o in 0 ..< outer { for i in 0 ..< n {
                        let l = i > 0 ? i - 1 : min(1, n - 1), r = i < n - 1 ? i + 1 : max(n - 2, 0)
                        let (out, lo, mid, hi) = (d + (o * n + i) * inner, s + (o * n + l) * inner, s + (o * n + i) * inner, s + (o * n + r) * inner)
                        for k in 0 ..< inner { out[k] = k0 * lo[k] + k1 * mid[k] + k0 * hi[k] }
                    } }
                }
            }
        }
    }

    /// Multiplies every value by `factor` (brightness).
    public static func scale(_ image: inout [Float], by factor: Float) {
        image.withUnsafeMutableBufferPointer { v in for i in v.indices { v[i] *= factor } }
    }

    /// Multiplies every value by `factor`, then clamps to the sample's original range (contrast).
    public static func contrast(_ image: inout [Float], by factor: Float) {
        image.withUnsafeMutableBufferPointer { v in
            guard var lo = v.first else { return }
            var hi = lo
            for x in v { lo = min(lo, x); hi = max(hi, x) }
            for i in v.indices { v[i] = min(hi, max(lo, v[i] * factor)) }
        }
    }
}

/// Training batches from a preprocessed folder (CASE_x.npy (C, D, H, W), CASE_y.npy (1, D, H, W)), read in
/// place from memory-mapped files: one sample per training volume per epoch (the recipe's epoch), shuffled,
/// seeded, with the recipe's augmentations. A sample is a whole slice (H, W) in 2D, a patch (pd, ph, pw) in 3D.
/// Every sample's randomness derives from (seed, epoch, position), so batches do not depend on timing or
/// threads, and a run resumed at an epoch boundary sees the same data.
public final class TrainingLoader: @unchecked Sendable {
    struct Case {
        let id: String
        let x: Npy.Mapped
        let y: Npy.Mapped
        /// (D, H, W).
        let size: [Int]
        /// For each class 1...3 present: the linear index of every voxel of its largest connected component.
        var foreground: [[Int]]
    }

    public let dimension: Int
    public let channels: Int
    /// Spatial shape of a sample: (H, W) in 2D, the patch (pd, ph, pw) in 3D.
    public let sampleShape: [Int]
    public let augmentations: Augmentations
    public let seed: UInt64
    private var cases: [Case] = []
    public var ids: [String] { cases.map(\.id) }

    /// `patch`: the 3D patch (every case must be at least this large; `unet preprocess --dim 3` pads to 128^3);
    /// nil for 2D slices.
    public init(folder: String, ids: [String], patch: [Int]? = nil, augmentations: Augmentations, seed: UInt64) throws {
        self.dimension = patch == nil ? 2 : 3
        self.augmentations = augmentations
        self.seed = seed
        if let patch, patch.count != 3 || patch.contains(where: { $0 < 1 }) {
            throw SegmentationError.invalidArgument("a 3D patch has 3 positive sizes, got \(patch)")
        }
        var first: (file: String, channels: Int, slice: [Int])?
        for id in ids {
            let files = Preprocessing.files(folder, id)
            let x = try Npy.map(files.image), y = try Npy.map(files.label)
            guard x.layout.datatype == .float32, !x.layout.fortranOrder, !x.layout.bigEndian, x.layout.shape.count == 4 else {
                throw SegmentationError.invalidFile(files.image, "expected little-endian C-order float32 (C, D, H, W), found \(x.layout.datatype) \(x.layout.shape)")
            }
            guard y.layout.datatype == .uint8, !y.layout.fortranOrder, y.layout.shape == [1] + x.layout.shape.dropFirst() else {
                throw SegmentationError.invalidFile(files.label, "expected uint8 (1, D, H, W) matching \(x.layout.shape), found \(y.layout.datatype) \(y.layout.shape)")
            }
            let size = Array(x.layout.shape.dropFirst())
            if let first, first.channels != x.layout.shape[0] {
                throw SegmentationError.invalidFile(files.image, "has \(x.layout.shape[0]) channels, \(first.file) has \(first.channels)")
            }
            if let patch {
                guard zip(size, patch).allSatisfy({ $0 >= $1 }) else {
                    throw SegmentationError.invalidFile(files.image, "volume \(size) (D, H, W) is smaller than the patch \(patch); 3D preprocessing pads volumes to at least 128^3")
                }
            } else if let first, first.slice != Array(size.dropFirst()) {
                throw SegmentationError.invalidFile(files.image, "slices are \(Array(size.dropFirst())) (H, W), \(first.file) has \(first.slice): preprocess for 2D first")
            }
            if first == nil { first = (files.image, x.layout.shape[0], Array(size.dropFirst())) }
            cases.append(Case(id: id, x: x, y: y, size: size, foreground: try Self.foreground(y)))
        }
        guard let first else { throw SegmentationError.invalidArgument("no training cases") }
        channels = first.channels
        sampleShape = patch ?? first.slice
    }

    /// Linear voxel indices of each present class's largest 6-connected component.
    static func foreground(_ y: Npy.Mapped) throws -> [[Int]] {
        let (D, H, W) = (y.layout.shape[1], y.layout.shape[2], y.layout.shape[3])
        var labels = [UInt8](repeating: 0, count: D * H * W)
        labels.withUnsafeMutableBufferPointer { y.copyBytes(from: 0, count: D * H * W, into: $0.baseAddress!) }
        var result: [[Int]] = []
        for c in UInt8(1) ... 3 where labels.contains(c) {
            var seen = [Bool](repeating: false, count: labels.count)
            var best: [Int] = []
            var stack: [Int] = []
            for start in 0 ..< labels.count where labels[start] == c && !seen[start] {
                var component: [Int] = []
                seen[start] = true
                stack.append(start)
                while let v = stack.popLast() {
                    component.append(v)
                    let (z, r) = (v / (H * W), v % (H * W))
                    let (h, w) = (r / W, r % W)
                    for (dz, dh, dw) in [(-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)] {
                        let (nz, nh, nw) = (z + dz, h + dh, w + dw)
                        guard nz >= 0, nz < D, nh >= 0, nh < H, nw >= 0, nw < W else { continue }
                        let n = (nz * H + nh) * W + nw
                        if labels[n] == c && !seen[n] { seen[n] = true; stack.append(n) }
                    }
                }
                if component.count > best.count { best = component }
            }
            result.append(best)
        }
        return result
    }

    /// Batches of an epoch: case indices in a seeded shuffled order, `batch` per step, the remainder dropped
    /// (one sample per training volume per epoch).
    public func epochPlan(_ epoch: Int, batch: Int) -> [[Int]] {
        var order = Array(cases.indices)
        var rng = SplitMix64(mixing: seed &* 0x9E37_79B9 &+ UInt64(epoch))
        order.shuffle(using: &rng)
        let steps = max(1, order.count / batch)
        return (0 ..< steps).map { s in (0 ..< batch).map { order[(s * batch + $0) % order.count] } }
    }

    /// One sample: case `index` at epoch `epoch`, position `position` in the epoch (for its random stream).
    /// Image (C, sampleShape...), label (sampleShape...), C order.
    public func sample(case index: Int, epoch: Int, position: Int) -> (image: [Float], label: [UInt8], applied: Augmentations.Applied) {
        var rng = SplitMix64(mixing: (seed &* 1_000_003 &+ UInt64(epoch)) &* 1_000_033 &+ UInt64(position))
        let c = cases[index]
        let (D, H, W) = (c.size[0], c.size[1], c.size[2])
        var applied: Augmentations.Applied = []
        // The sample's corner (z, y, x): a whole slice in 2D, a patch in 3D.
        let extent = dimension == 2 ? [1, H, W] : sampleShape
        var corner: [Int]
        if !c.foreground.isEmpty && rng.chance(augmentations.foregroundProbability) {
            applied.insert(.foreground)
            let voxels = c.foreground[Int.random(in: 0 ..< c.foreground.count, using: &rng)]
            let v = voxels[Int.random(in: 0 ..< voxels.count, using: &rng)]
            let centre = [v / (H * W), v / W % H, v % W]
            corner = (0 ..< 3).map { a in min(max(centre[a] - extent[a] / 2, 0), c.size[a] - extent[a]) }
        } else if dimension == 2 {
            corner = [Int.random(in: 0 ..< D, using: &rng), 0, 0]
        } else {
            corner = (0 ..< 3).map { a in Int.random(in: 0 ... c.size[a] - extent[a], using: &rng) }
        }
        if dimension == 2 { corner[1] = 0; corner[2] = 0 }
        let count = extent.reduce(1, *)
        var image = [Float](repeating: 0, count: channels * count)
        var label = [UInt8](repeating: 0, count: count)
        image.withUnsafeMutableBufferPointer { p in
            label.withUnsafeMutableBufferPointer { l in
                // Rows of the box, each extent[2] contiguous voxels.
                for z in 0 ..< extent[0] { for y in 0 ..< extent[1] {
                    let source = ((corner[0] + z) * H + corner[1] + y) * W + corner[2]
                    let row = (z * extent[1] + y) * extent[2]
                    for ch in 0 ..< channels { c.x.copyFloats(from: ch * D * H * W + source, count: extent[2], into: p.baseAddress! + ch * count + row) }
                    c.y.copyBytes(from: source, count: extent[2], into: l.baseAddress! + row)
                } }
            }
        }
        applied.formUnion(augmentations.apply(image: &image, label: &label, channels: channels, spatial: sampleShape, rng: &rng))
        return (image, label, applied)
    }

    /// The batch of step `step` in `epoch` as tensors: input (N, C, sampleShape...), labels (N, 1, sampleShape...).
    /// `workers` threads prepare the samples (each sample's randomness is its own, so the batch is the same
    /// for any count). `share`: only these positions of the batch (one process's share of a batch that several
    /// train on; the samples are those the whole batch has at these positions).
    public func batch(epoch: Int, step: Int, size: Int, workers: Int = 1, share: Range<Int>? = nil) throws -> (Tensor, Labels) {
        let plan = epochPlan(epoch, batch: size)
        let share = share ?? 0 ..< size
        let items = Array(plan[step % plan.count][share])
        let voxels = sampleShape.reduce(1, *), values = channels * voxels
        var image = [Float](repeating: 0, count: items.count * values)
        var label = [UInt8](repeating: 0, count: items.count * voxels)
        image.withUnsafeMutableBufferPointer { i in
            label.withUnsafeMutableBufferPointer { l in
                let out = SampleSlots(image: i.baseAddress!, label: l.baseAddress!)
                _ = Parallel.map(count: items.count, workers: workers) { k in
                    let s = self.sample(case: items[k], epoch: epoch, position: step * size + share.lowerBound + k)
                    s.image.withUnsafeBufferPointer { (out.image + k * values).update(from: $0.baseAddress!, count: values) }
                    s.label.withUnsafeBufferPointer { (out.label + k * voxels).update(from: $0.baseAddress!, count: voxels) }
                }
            }
        }
        return (try Tensor(dims: [items.count, channels] + sampleShape, values: image),
                try Labels(dims: [items.count, 1] + sampleShape, values: label))
    }
}

/// Where the workers of `TrainingLoader.batch` put their samples (disjoint ranges of one batch).
private struct SampleSlots: @unchecked Sendable {
    let image: UnsafeMutablePointer<Float>
    let label: UnsafeMutablePointer<UInt8>
}
