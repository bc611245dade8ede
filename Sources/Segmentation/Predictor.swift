import Engine
import FileSupport
import Foundation
import MedicalImaging
import NeuralNet

/// Segments raw NIfTI cases with a trained network: the training preprocessing, 2D slice batches or a
/// 3D sliding window, optional flip test-time augmentation, back to the original grid, argmax, and a
/// label NIfTI with exactly the input's geometry.
public enum Predictor {
    public struct Options: Sendable {
        /// 3D windows overlap by this fraction of the patch.
        public var overlap = 0.5
        /// Average logits over flips of every spatial axis (2D: 4 combinations, 3D: 8).
        public var testTimeAugmentation = false
        /// Slices per forward pass in 2D.
        public var sliceBatch = 16
        public var patch3D = [128, 128, 128]
        /// Label values written: the Decathlon's (0-3) or BraTS (0, 1, 2, 4).
        public var convention = LabelConvention.decathlon
        public var overwrite = false
        /// Leave cases whose outputs all exist as they are (to finish an interrupted run); a case with only some of
        /// its outputs is done again.
        public var skipExisting = false
        /// Also write the softmax probabilities (CASE_probabilities.nii.gz) and an overlay picture (CASE.png).
        public var saveProbabilities = false
        public var png = false
        /// The spacing (x, y, z, mm) the model was trained at: a case on another grid is resampled to it
        /// (trilinear), predicted, and its probabilities resampled back. nil: predict on the case's own grid.
        public var spacing: [Double]?
        public init() {}
    }

    /// Where one case's seconds went, for the user's progress line and for profiling.
    public struct Timing: Sendable, CustomStringConvertible {
        /// Reading and decompressing the input files.
        public var read = 0.0
        /// Cropping, normalisation and (when the grids differ) resampling to the model's spacing.
        public var preprocess = 0.0
        /// The network's forward passes, and gathering their logits into the volume.
        public var network = 0.0
        /// Ensemble averaging, argmax, back to the original grid.
        public var restore = 0.0
        /// Compressing and writing the outputs.
        public var write = 0.0
        public var total: Double { read + preprocess + network + restore + write }
        public init() {}
        public var description: String {
            String(format: "%.1f s (read %.2f, preprocess %.2f, network %.2f, restore %.2f, write %.2f)",
                   total, read, preprocess, network, restore, write)
        }
    }

    /// Seconds since `start`, and restarts it.
    private static func lap(_ start: inout Date) -> Double {
        let now = Date()
        defer { start = now }
        return now.timeIntervalSince(start)
    }

    /// Cases under `path`: one 4D file, a folder of 4D files, or a folder of nnU-Net channel files
    /// (`CASE_0000.nii.gz`...). macOS `._*` files are ignored.
    public static func inputs(_ path: String) throws -> [(id: String, files: [String])] {
        func id(_ name: String) -> String {
            for ext in [".nii.gz", ".nii"] where name.hasSuffix(ext) { return String(name.dropLast(ext.count)) }
            return name
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw SegmentationError.invalidFile(path, "no such file or folder")
        }
        if !isDirectory.boolValue { return [(id(URL(fileURLWithPath: path).lastPathComponent), [path])] }
        let names = try FileManager.default.contentsOfDirectory(atPath: path)
            .filter { !$0.hasPrefix("._") && ($0.hasSuffix(".nii.gz") || $0.hasSuffix(".nii")) }.sorted()
        guard !names.isEmpty else { throw SegmentationError.invalidFile(path, "holds no .nii or .nii.gz files") }
        // nnU-Net channel files: every stem ends in _XXXX.
        let stems = names.map(id)
        if stems.allSatisfy({ $0.count > 5 && $0.dropLast(4).last == "_" && Int($0.suffix(4)) != nil }) {
            var groups: [String: [String]] = [:]
            for (n, s) in zip(names, stems) { groups[String(s.dropLast(5)), default: []].append(path + "/" + n) }
            return groups.keys.sorted().map { ($0, groups[$0]!.sorted()) }
        }
        return zip(stems, names).map { ($0, [path + "/" + $1]) }
    }

    /// Reads a case's channels (one 4D file or one 3D file per channel) and checks their grids agree.
    public static func load(id: String, files: [String], channels: Int) throws -> LoadedCase {
        var values: [[Float]] = []
        var header = NiftiHeader()
        var shape: [Int] = []
        for (k, file) in files.enumerated() {
            let image = try NiftiImage.read(file)
            if k == 0 { header = image.header; shape = Array(image.shape.prefix(3)) }
            guard image.shape.count >= 3, Array(image.shape.prefix(3)) == shape else {
                throw SegmentationError.invalidFile(file, "shape \(image.shape) differs from \(files[0])'s \(shape)")
            }
            let all = image.floatValues()
            let n = shape.reduce(1, *)
            let count = image.shape.count > 3 ? image.shape[3...].reduce(1, *) : 1
            for c in 0 ..< count { values.append(Array(all[c * n ..< (c + 1) * n])) }
        }
        guard values.count == channels else {
            throw SegmentationError.invalidFile(files[0], "\(values.count) channel(s) for case \(id); the model takes \(channels)")
        }
        return LoadedCase(id: id, shape: shape, channels: values, label: nil, header: header)
    }

    /// Checks that networks can form an ensemble: the same dimension, input channels and classes.
    public static func checkEnsemble(_ networks: [UNet]) throws {
        guard let first = networks.first?.config else { throw SegmentationError.invalidArgument("no network to predict with") }
        for (i, n) in networks.enumerated().dropFirst() {
            let c = n.config
            guard c.dimension == first.dimension, c.inputChannels == first.inputChannels, c.classes == first.classes else {
                throw SegmentationError.invalidArgument("network \(i + 1) of the ensemble is \(c.dimension)D with \(c.inputChannels) input channels and \(c.classes) classes; network 1 is \(first.dimension)D with \(first.inputChannels) and \(first.classes)")
            }
        }
    }

    /// A case's segmentation on its original grid (x fastest): training classes 0-3, and with
    /// `probabilities` the softmax probability of each class (K volumes; outside the crop, background 1).
    /// Several networks form an ensemble: the mean of their softmax probabilities decides.
    public static func segment(_ loaded: LoadedCase, networks: [UNet], options: Options, probabilities: Bool = false) throws
        -> (labels: [UInt8], probabilities: [[Float]]?) {
        var timing = Timing()
        return try segment(loaded, networks: networks, options: options, probabilities: probabilities, timing: &timing)
    }

    /// `segment`, adding the seconds of preprocessing, the network and restoring to `timing`.
    static func segment(_ loaded: LoadedCase, networks: [UNet], options: Options, probabilities: Bool, timing: inout Timing) throws
        -> (labels: [UInt8], probabilities: [[Float]]?) {
        try checkEnsemble(networks)
        let network = networks[0]
        var clock = Date()
        if let target = options.spacing, let grid = Resampling.grid(of: loaded, at: target) {
            // Predict at the model's spacing; bring the probabilities back to the case's own grid.
            let resampled = Resampling.resample(loaded, to: grid)
            timing.preprocess += lap(&clock)
            var inner = options
            inner.spacing = nil
            let (_, p) = try segment(resampled, networks: networks, options: inner, probabilities: true, timing: &timing)
            clock = Date()
            var back: [Float] = []  // (K, voxels) on the case's grid
            for volume in p! { back += Resampling.trilinear(volume, from: grid, to: loaded.shape) }
            let n = loaded.shape.reduce(1, *)
            defer { timing.restore += lap(&clock) }
            return (argmax(back, classes: p!.count), probabilities ? (0 ..< p!.count).map { Array(back[$0 * n ..< ($0 + 1) * n]) } : nil)
        }
        // 2D: whole slices (padded to a size the network divides), not the training crop, so no tissue is left out.
        var preprocessing = PreprocessOptions(dim: network.config.dimension)
        preprocessing.cropInPlane2D = false
        preprocessing.sizeMultiple2D = network.config.totalStride
        let pre = try Preprocessing.transform(loaded, options: preprocessing, channelNames: [], convention: .decathlon)
        timing.preprocess += lap(&clock)
        let K = network.config.classes
        // One network: its logits (their argmax is the probabilities'); an ensemble: the mean probabilities.
        var out = try logits(pre.image, shape: pre.meta.shape, network: network, options: options)
        if networks.count > 1 {
            softmax(&out, classes: K)
            for other in networks.dropFirst() {
                var more = try logits(pre.image, shape: pre.meta.shape, network: other, options: options)
                softmax(&more, classes: K)
                for i in out.indices { out[i] += more[i] }
            }
            let scale = 1 / Float(networks.count)
            for i in out.indices { out[i] *= scale }
        }
        timing.network += lap(&clock)
        defer { timing.restore += lap(&clock) }
        let labels = try Preprocessing.restore(argmax(out, classes: K), meta: pre.meta, fill: 0)
        guard probabilities else { return (labels, nil) }
        if networks.count == 1 { softmax(&out, classes: K) }
        let v = out.count / K
        let restored = try (0 ..< K).map { k in try Preprocessing.restore(Array(out[k * v ..< (k + 1) * v]), meta: pre.meta, fill: k == 0 ? 1 : 0) }
        return (labels, restored)
    }

    /// Logits (K, D, H, W) of a preprocessed volume `image` of `shape` (C, D, H, W), inference mode: 2D slice
    /// batches, or 3D sliding windows of `options.patch3D` with Gaussian weights; averaged over flips with TTA.
    public static func logits(_ image: [Float], shape: [Int], network: UNet, options: Options) throws -> [Float] {
        // Many batches or windows through the same weights: convolutions keep their transformed kernels.
        try network.withFixedWeights { try fixedLogits(image, shape: shape, network: network, options: options) }
    }

    private static func fixedLogits(_ image: [Float], shape: [Int], network: UNet, options: Options) throws -> [Float] {
        let config = network.config
        network.training = false
        let (C, D, H, W) = (shape[0], shape[1], shape[2], shape[3])
        guard C == config.inputChannels, image.count == shape.reduce(1, *) else {
            throw SegmentationError.invalidArgument("volume \(shape) (C, D, H, W) with \(image.count) values; the network takes \(config.inputChannels) channels")
        }
        let K = config.classes
        let flips: [[Int]] = options.testTimeAugmentation
            ? (config.dimension == 2 ? [[], [2], [3], [2, 3]] : [[], [2], [3], [4], [2, 3], [2, 4], [3, 4], [2, 3, 4]]) : [[]]
        var sum = [Float](repeating: 0, count: K * D * H * W)
        if config.dimension == 2 {
            // Slices d of (C, D, H, W) become a batch (n, C, H, W).
            var start = 0
            while start < D {
                let n = min(options.sliceBatch, D - start)
                var batch = [Float](repeating: 0, count: n * C * H * W)
                for s in 0 ..< n { for c in 0 ..< C {
                    let src = (c * D + start + s) * H * W, dst = (s * C + c) * H * W
                    for i in 0 ..< H * W { batch[dst + i] = image[src + i] }
                } }
                let out = try averagedLogits(network, batch, dims: [n, C, H, W], flips: flips)
                for s in 0 ..< n { for k in 0 ..< K {
                    let src = (s * K + k) * H * W, dst = (k * D + start + s) * H * W
                    for i in 0 ..< H * W { sum[dst + i] = out[src + i] }
                } }
                start += n
            }
            return sum
        }
        let patch = options.patch3D
        let size = [D, H, W]
        guard zip(size, patch).allSatisfy({ $0 >= $1 }) else {
            throw SegmentationError.invalidArgument("volume \(size) (D, H, W) is smaller than the 3D patch \(patch)")
        }
        let positions = (0 ..< 3).map { windowStarts(size[$0], patch[$0], overlap: options.overlap) }
        let importance = gaussian(patch)
        var weight = [Float](repeating: 0, count: D * H * W)
        let pv = patch.reduce(1, *)
        for z0 in positions[0] { for y0 in positions[1] { for x0 in positions[2] {
            var window = [Float](repeating: 0, count: C * pv)
            for c in 0 ..< C { for z in 0 ..< patch[0] { for y in 0 ..< patch[1] {
                let src = ((c * D + z0 + z) * H + y0 + y) * W + x0, dst = ((c * patch[0] + z) * patch[1] + y) * patch[2]
                for x in 0 ..< patch[2] { window[dst + x] = image[src + x] }
            } } }
            let out = try averagedLogits(network, window, dims: [1, C] + patch, flips: flips)
            for z in 0 ..< patch[0] { for y in 0 ..< patch[1] { for x in 0 ..< patch[2] {
                let p = (z * patch[1] + y) * patch[2] + x
                let g = ((z0 + z) * H + y0 + y) * W + x0 + x
                let w = importance[p]
                weight[g] += w
                for k in 0 ..< K { sum[k * D * H * W + g] += w * out[k * pv + p] }
            } } }
        } } }
        let v = D * H * W
        for k in 0 ..< K { for g in 0 ..< v { sum[k * v + g] /= weight[g] } }
        return sum
    }

    /// Per voxel, the class with the largest score of (K, V) scores (the first on ties).
    public static func argmax(_ scores: [Float], classes K: Int) -> [UInt8] {
        let v = scores.count / K
        var labels = [UInt8](repeating: 0, count: v)
        for g in 0 ..< v {
            var best = 0
            for k in 1 ..< K where scores[k * v + g] > scores[best * v + g] { best = k }
            labels[g] = UInt8(best)
        }
        return labels
    }

    /// Softmax over the K rows of (K, V) scores, in place.
    static func softmax(_ scores: inout [Float], classes K: Int) {
        let v = scores.count / K
        for g in 0 ..< v {
            var m = -Float.infinity
            for k in 0 ..< K { m = max(m, scores[k * v + g]) }
            var total: Float = 0
            for k in 0 ..< K { let e = Foundation.exp(scores[k * v + g] - m); scores[k * v + g] = e; total += e }
            for k in 0 ..< K { scores[k * v + g] /= total }
        }
    }

    /// Logits (plain, same dims with classes) averaged over the flipped inputs.
    static func averagedLogits(_ network: UNet, _ input: [Float], dims: [Int], flips: [[Int]]) throws -> [Float] {
        var total: [Float] = []
        for axes in flips {
            let x = axes.isEmpty ? input : flip(input, dims: dims, axes: axes)
            let t = try Profile.measure("window in") { try Tensor(dims: dims, values: x) }
            let y = try Profile.measure("window network") { try network.forward(t)[0] }
            var out = try Profile.measure("window out") { try y.toArray() }
            if !axes.isEmpty { out = flip(out, dims: [dims[0], network.config.classes] + dims.dropFirst(2), axes: axes) }
            if total.isEmpty { total = out } else { for i in 0 ..< total.count { total[i] += out[i] } }
        }
        if flips.count > 1 { let s = 1 / Float(flips.count); for i in 0 ..< total.count { total[i] *= s } }
        return total
    }

    /// Reverses `axes` of a C-order array of `dims`.
    static func flip(_ v: [Float], dims: [Int], axes: [Int]) -> [Float] {
        var out = v
        var strides = [Int](repeating: 1, count: dims.count)
        for i in stride(from: dims.count - 2, through: 0, by: -1) { strides[i] = strides[i + 1] * dims[i + 1] }
        for i in 0 ..< v.count {
            var j = 0
            for a in 0 ..< dims.count {
                let idx = i / strides[a] % dims[a]
                j += (axes.contains(a) ? dims[a] - 1 - idx : idx) * strides[a]
            }
            out[j] = v[i]
        }
        return out
    }

    /// Window starts covering [0, size) with windows of `patch` overlapping by `overlap` (evenly spread).
    static func windowStarts(_ size: Int, _ patch: Int, overlap: Double) -> [Int] {
        guard size > patch else { return [0] }
        let step = max(1.0, Double(patch) * (1 - overlap))
        let count = Int((Double(size - patch) / step).rounded(.up)) + 1
        return (0 ..< count).map { Int((Double(size - patch) * Double($0) / Double(count - 1)).rounded()) }
    }

    /// Gaussian importance weights over a patch (sigma = patch / 8 per axis), maximum 1, no zeros.
    static func gaussian(_ patch: [Int]) -> [Float] {
        let sigma = patch.map { Double($0) / 8 }
        var g = [Float](repeating: 0, count: patch.reduce(1, *))
        var i = 0
        for z in 0 ..< patch[0] { for y in 0 ..< patch[1] { for x in 0 ..< patch[2] {
            let coordinates: [Double] = [Double(z), Double(y), Double(x)]
            var d = 0.0
            for a in 0 ..< 3 {
                let centre = (Double(patch[a]) - 1) / 2
                let offset = coordinates[a] - centre
                d += offset * offset / (2 * sigma[a] * sigma[a])
            }
            g[i] = Float(Foundation.exp(-d))
            i += 1
        } } }
        let smallest = g.filter { $0 > 0 }.min() ?? 1
        return g.map { max($0, smallest) }
    }

    /// Segments every case under `input` into `output` with one network or the ensemble of several:
    /// CASE.nii.gz (labels, the input's geometry), with `options.saveProbabilities` CASE_probabilities.nii.gz
    /// (float32 (X, Y, Z, K)), with `options.png` CASE.png (first channel with the prediction, through the
    /// tumour). Returns seconds per case. An output folder this call created is removed again if it fails.
    public static func run(networks: [UNet], input: String, output: String, options: Options,
                           report: (String, Timing) -> Void = { _, _ in }) throws -> [(String, Double)] {
        try checkEnsemble(networks)
        let cases = try inputs(input)
        let fm = FileManager.default
        let created = !fm.fileExists(atPath: output)
        try fm.createDirectory(atPath: output, withIntermediateDirectories: true)
        AtomicFile.removeStale(in: output)  // a killed run's unfinished files
        do {
            return try segmentAll(cases, networks: networks, output: output, options: options, report: report)
        } catch {
            if created { try? fm.removeItem(atPath: output) }
            throw error
        }
    }

    private static func segmentAll(_ cases: [(id: String, files: [String])], networks: [UNet], output: String, options: Options,
                                   report: (String, Timing) -> Void) throws -> [(String, Double)] {
        let network = networks[0]
        var times: [(String, Double)] = []
        for c in cases {
            let path = output + "/\(c.id).nii.gz"
            let (probabilitiesPath, picturePath) = (output + "/\(c.id)_probabilities.nii.gz", output + "/\(c.id).png")
            let written = [path] + (options.saveProbabilities ? [probabilitiesPath] : []) + (options.png ? [picturePath] : [])
            let existing = written.filter { FileManager.default.fileExists(atPath: $0) }
            if options.skipExisting && existing.count == written.count { continue }
            if !options.overwrite && !options.skipExisting, let first = existing.first {
                throw SegmentationError.outputExists(first, "exists")
            }
            var clock = Date()
            var timing = Timing()
            // Refuse what cannot fit before reading it (headers only).
            let headers = try c.files.map(NiftiImage.readHeader)
            let voxels = headers.reduce(0) { $0 + $1.voxelCount }
            let factor = network.config.dimension == 2 ? MemoryBudget.prediction2D : MemoryBudget.prediction3D
            let shape = headers[0].shape.map(String.init).joined(separator: "x")
            try MemoryBudget.check(need: Int(Double(voxels * 4) * factor) + MemoryBudget.fixed + network.parameters.parameterCount * 4 * networks.count,
                                   what: "predicting case \(c.id) (\(shape)\(c.files.count > 1 ? ", \(c.files.count) files" : ""))",
                                   basis: "\(factor)x its \(MemoryBudget.gigabytes(voxels * 4)) of float32 channels, the network and 1 GB")
            let loaded = try load(id: c.id, files: c.files, channels: network.config.inputChannels)
            timing.read = lap(&clock)
            let (classes, probabilities) = try segment(loaded, networks: networks, options: options, probabilities: options.saveProbabilities, timing: &timing)
            clock = Date()
            var header = loaded.header
            header.shape = loaded.shape
            let stored = classes.map { options.convention.storedValue(of: $0) }
            try NiftiImage(shape: loaded.shape, voxels: .uint8(stored), like: header).write(to: path, compressionLevel: 6)
            if let probabilities {
                header.shape = loaded.shape + [probabilities.count]
                try NiftiImage(shape: header.shape, voxels: .float32(Array(probabilities.joined())), like: header)
                    .write(to: probabilitiesPath, compressionLevel: 6)
            }
            if options.png {
                try Overlay.render(image: loaded.channels[0], shape: loaded.shape, truth: nil, prediction: classes).write(to: picturePath)
            }
            timing.write = lap(&clock)
            times.append((c.id, timing.total))
            report(c.id, timing)
        }
        return times
    }
}
