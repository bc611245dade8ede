import Engine
import Foundation
import MedicalImaging

/// The recipe's training augmentations (Composer's set by default), applied per sample in this order:
/// crop -> flips -> noise -> blur -> brightness -> contrast.
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

    public static let probability = 0.15
    public static let none = Augmentations(foregroundProbability: 0, flipAxes: [], noise: false, blur: false, brightness: false, contrast: false)
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
    }

    /// Intensity and flip augmentations of one 2D sample in place: image (C, H, W), label (H, W).
    func apply(image: inout [Float], label: inout [UInt8], channels C: Int, height H: Int, width W: Int,
               rng: inout SplitMix64) -> Applied {
        var applied: Applied = []
        for axis in flipAxes where rng.chance(0.5) {
            applied.insert(.flip)
            if axis == 0 {
                for c in 0 ... C { for y in 0 ..< H / 2 { for x in 0 ..< W {
                    if c < C { image.swapAt((c * H + y) * W + x, (c * H + H - 1 - y) * W + x) } else { label.swapAt(y * W + x, (H - 1 - y) * W + x) }
                } } }
            } else {
                for c in 0 ... C { for y in 0 ..< H { for x in 0 ..< W / 2 {
                    if c < C { image.swapAt((c * H + y) * W + x, (c * H + y) * W + W - 1 - x) } else { label.swapAt(y * W + x, y * W + W - 1 - x) }
                } } }
            }
        }
        if noise && rng.chance(Self.probability) {
            applied.insert(.noise)
            let std = Float(rng.uniform(0, 0.33))
            var i = 0
            while i < image.count {
                let (a, b) = rng.normalFloats()
                image[i] += std * a
                if i + 1 < image.count { image[i + 1] += std * b }
                i += 2
            }
        }
        if blur && rng.chance(Self.probability) {
            applied.insert(.blur)
            let sigma = rng.uniform(0.5, 1.5)
            let side = Float(exp(-1 / (2 * sigma * sigma)))
            let (k0, k1) = (side / (1 + 2 * side), 1 / (1 + 2 * side))
            var tmp = image
            for c in 0 ..< C { for y in 0 ..< H { for x in 0 ..< W {  // along W, reflecting borders
                let row = (c * H + y) * W
                let l = x > 0 ? x - 1 : min(1, W - 1), r = x < W - 1 ? x + 1 : max(W - 2, 0)
                tmp[row + x] = k0 * image[row + l] + k1 * image[row + x] + k0 * image[row + r]
            } } }
            for c in 0 ..< C { for y in 0 ..< H { for x in 0 ..< W {  // along H
                let u = y > 0 ? y - 1 : min(1, H - 1), d = y < H - 1 ? y + 1 : max(H - 2, 0)
                image[(c * H + y) * W + x] = k0 * tmp[(c * H + u) * W + x] + k1 * tmp[(c * H + y) * W + x] + k0 * tmp[(c * H + d) * W + x]
            } } }
        }
        if brightness && rng.chance(Self.probability) {
            applied.insert(.brightness)
            let f = Float(rng.uniform(0.7, 1.3))
            for i in 0 ..< image.count { image[i] *= f }
        }
        if contrast && rng.chance(Self.probability) {
            applied.insert(.contrast)
            let lo = image.min() ?? 0, hi = image.max() ?? 0
            let f = Float(rng.uniform(0.65, 1.5))
            for i in 0 ..< image.count { image[i] = min(hi, max(lo, image[i] * f)) }
        }
        return applied
    }
}

/// 2D training batches from a preprocessed folder (CASE_x.npy (C, D, H, W), CASE_y.npy (1, D, H, W)), read in
/// place from memory-mapped files: one slice per case per epoch (the recipe's epoch), shuffled, seeded, with
/// the recipe's augmentations. Every sample's randomness derives from (seed, epoch, position), so batches do
/// not depend on timing or threads, and a run resumed at an epoch boundary sees the same data.
public final class SliceLoader: @unchecked Sendable {
    struct Case {
        let id: String
        let x: Npy.Mapped
        let y: Npy.Mapped
        let depth: Int
        /// For each class 1...3 present: slice index of every voxel of its largest connected component.
        var foregroundSlices: [[Int]]
    }

    public let channels: Int, height: Int, width: Int
    public let augmentations: Augmentations
    public let seed: UInt64
    private var cases: [Case] = []
    public var ids: [String] { cases.map(\.id) }

    public init(folder: String, ids: [String], augmentations: Augmentations, seed: UInt64) throws {
        self.augmentations = augmentations
        self.seed = seed
        var shape: [Int]?
        for id in ids {
            let files = Preprocessing.files(folder, id)
            let x = try Npy.map(files.image), y = try Npy.map(files.label)
            guard x.layout.datatype == .float32, !x.layout.fortranOrder, !x.layout.bigEndian, x.layout.shape.count == 4 else {
                throw SegmentationError.invalidFile(files.image, "expected little-endian C-order float32 (C, D, H, W), found \(x.layout.datatype) \(x.layout.shape)")
            }
            guard y.layout.datatype == .uint8, !y.layout.fortranOrder, y.layout.shape == [1] + x.layout.shape.dropFirst() else {
                throw SegmentationError.invalidFile(files.label, "expected uint8 (1, D, H, W) matching \(x.layout.shape), found \(y.layout.datatype) \(y.layout.shape)")
            }
            let s = [x.layout.shape[0]] + x.layout.shape.dropFirst(2)
            if let shape, shape != s {
                throw SegmentationError.invalidFile(files.image, "slices are \(s) (C, H, W), other cases have \(shape): preprocess for 2D first")
            }
            shape = s
            cases.append(Case(id: id, x: x, y: y, depth: x.layout.shape[1], foregroundSlices: try Self.foreground(y, file: files.label)))
        }
        guard let shape else { throw SegmentationError.invalidArgument("no training cases") }
        (channels, height, width) = (shape[0], shape[1], shape[2])
    }

    /// Slice indices of the voxels of each present class's largest 6-connected component.
    static func foreground(_ y: Npy.Mapped, file: String) throws -> [[Int]] {
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
            result.append(best.map { $0 / (H * W) })
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
    public func sample(case index: Int, epoch: Int, position: Int) -> (image: [Float], label: [UInt8], applied: Augmentations.Applied) {
        var rng = SplitMix64(mixing: (seed &* 1_000_003 &+ UInt64(epoch)) &* 1_000_033 &+ UInt64(position))
        let c = cases[index]
        var applied: Augmentations.Applied = []
        let z: Int
        if !c.foregroundSlices.isEmpty && rng.chance(augmentations.foregroundProbability) {
            applied.insert(.foreground)
            let voxels = c.foregroundSlices[Int.random(in: 0 ..< c.foregroundSlices.count, using: &rng)]
            z = voxels[Int.random(in: 0 ..< voxels.count, using: &rng)]
        } else {
            z = Int.random(in: 0 ..< c.depth, using: &rng)
        }
        let plane = height * width
        var image = [Float](repeating: 0, count: channels * plane)
        image.withUnsafeMutableBufferPointer { p in
            for ch in 0 ..< channels { c.x.copyFloats(from: (ch * c.depth + z) * plane, count: plane, into: p.baseAddress! + ch * plane) }
        }
        var label = [UInt8](repeating: 0, count: plane)
        label.withUnsafeMutableBufferPointer { c.y.copyBytes(from: z * plane, count: plane, into: $0.baseAddress!) }
        applied.formUnion(augmentations.apply(image: &image, label: &label, channels: channels, height: height, width: width, rng: &rng))
        return (image, label, applied)
    }

    /// The batch of step `step` in `epoch` as tensors: input (N, C, H, W), labels (N, 1, H, W).
    public func batch(epoch: Int, step: Int, size: Int) throws -> (Tensor, Labels) {
        let plan = epochPlan(epoch, batch: size)
        let items = plan[step % plan.count]
        var image = [Float](), label = [UInt8]()
        image.reserveCapacity(items.count * channels * height * width)
        for (k, index) in items.enumerated() {
            let s = sample(case: index, epoch: epoch, position: step * size + k)
            image += s.image
            label += s.label
        }
        return (try Tensor(dims: [items.count, channels, height, width], values: image),
                try Labels(dims: [items.count, 1, height, width], values: label))
    }
}
