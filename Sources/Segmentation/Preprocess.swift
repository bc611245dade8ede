import FileSupport
import Foundation
import MedicalImaging

/// Where a preprocessed case came from and how to put a prediction back on the original grid.
/// Axes are (D, H, W) = NIfTI (Z, Y, X): the arrays are the NIfTI data read in C order.
public struct CaseMeta: Codable, Sendable, Equatable {
    public var id: String
    /// The source image's NIfTI shape (X, Y, Z[, C]) and geometry.
    public var niftiShape: [Int]
    public var affine: [[Double]]
    public var spacing: [Double]
    /// Spatial shape (D, H, W) of the original grid.
    public var originalShape: [Int]
    /// Foreground box in the original grid, per axis (D, H, W): [start, end) .
    public var cropBox: [[Int]]
    /// Per axis (D, H, W), voxels added before and after the cropped box (negative: removed by the centre crop).
    public var padding: [[Int]]
    /// Final array shape (C, D, H, W).
    public var shape: [Int]
    /// Per-channel mean and standard deviation of the nonzero voxels, used for the z-score.
    public var mean: [Double]
    public var std: [Double]
    public var dim: Int
    public var labelConvention: LabelConvention
    public var channelNames: [String]
}

/// The recipe's preprocessing (NVIDIA nnUNet preprocess.py, task 01, as Composer uses it).
public struct PreprocessOptions: Sendable {
    /// 2: keep depth, pad then centre-crop (H, W) to `patch2D`. 3: pad every axis to at least `minimum3D`.
    public var dim: Int
    public var patch2D = [192, 160]
    /// 2D: centre-crop (H, W) to `patch2D` (the recipe's training input). Off (prediction): pad (H, W) to at least
    /// `patch2D` and up to a multiple of `sizeMultiple2D`, never crop, so that every voxel of the brain is seen.
    public var cropInPlane2D = true
    public var sizeMultiple2D = 1
    public var minimum3D = [128, 128, 128]
    public var overwrite = false
    /// Seed of the 5-fold split (0 as Composer; NVIDIA uses 12345).
    public var splitSeed: UInt32 = 0
    /// Cases processed at once.
    public var workers = 2

    public init(dim: Int) { self.dim = dim }
}

/// A case after preprocessing: image (C, D, H, W) float32 and label (1, D, H, W) classes 0...3, C order.
public struct PreprocessedCase: Sendable {
    public var image: [Float]
    public var label: [UInt8]?
    public var meta: CaseMeta
}

public enum Preprocessing {
    /// Target size of each (D, H, W) axis: (padTo, cropTo) — pad up to padTo, then centre-crop to cropTo.
    static func targets(_ options: PreprocessOptions, cropped: [Int]) -> [(pad: Int, crop: Int?)] {
        if options.dim == 2 {
            guard options.cropInPlane2D else {
                let m = max(options.sizeMultiple2D, 1)
                return [(cropped[0], nil)] + (1 ... 2).map { a in ((max(cropped[a], options.patch2D[a - 1]) + m - 1) / m * m, nil) }
            }
            return [(cropped[0], nil), (options.patch2D[0], options.patch2D[0]), (options.patch2D[1], options.patch2D[1])]
        }
        return (0 ..< 3).map { (options.minimum3D[$0], nil) }
    }

    /// Crop to the box of voxels where any channel is > 0, z-score each channel over its nonzero voxels
    /// (zeros stay 0), then pad symmetrically (and in 2D centre-crop H, W) to the recipe's sizes.
    public static func transform(_ loaded: LoadedCase, options: PreprocessOptions, channelNames: [String],
                                 convention: LabelConvention) throws -> PreprocessedCase {
        guard options.dim == 2 || options.dim == 3 else { throw SegmentationError.invalidArgument("dimension must be 2 or 3, got \(options.dim)") }
        let (X, Y, Z) = (loaded.shape[0], loaded.shape[1], loaded.shape.count > 2 ? loaded.shape[2] : 1)
        let original = [Z, Y, X]
        // NaN or infinite voxels would poison the channel's statistics and every later step: refuse the case.
        for (c, values) in loaded.channels.enumerated() {
            let bad = values.withUnsafeBufferPointer { v in v.reduce(0) { $0 + ($1.isFinite ? 0 : 1) } }
            if bad > 0 {
                let name = c < channelNames.count ? " (\(channelNames[c]))" : ""
                throw SegmentationError.invalidArgument("case \(loaded.id) has \(bad) NaN or infinite voxel(s) in channel \(c)\(name); fix or drop the image")
            }
        }
        // Foreground box.
        var lo = [Z, Y, X], hi = [-1, -1, -1]
        loaded.channels.withUnsafeBufferPointers { channels in
            var i = 0
            for z in 0 ..< Z {
                for y in 0 ..< Y {
                    for x in 0 ..< X {
                        var any = false
                        for c in channels where c[i] > 0 { any = true; break }
                        if any {
                            if z < lo[0] { lo[0] = z }
                            if z > hi[0] { hi[0] = z }
                            if y < lo[1] { lo[1] = y }
                            if y > hi[1] { hi[1] = y }
                            if x < lo[2] { lo[2] = x }
                            if x > hi[2] { hi[2] = x }
                        }
                        i += 1
                    }
                }
            }
        }
        guard hi[0] >= 0 else { throw SegmentationError.invalidArgument("case \(loaded.id): no voxel > 0 in any channel (empty image)") }
        let box = (0 ..< 3).map { [lo[$0], hi[$0] + 1] }
        let cropped = box.map { $0[1] - $0[0] }
        // Padding (negative: cropped) per axis, symmetric with the extra voxel after, as MONAI's SpatialPad;
        // the centre crop starts at size/2 - target/2, as MONAI's CenterSpatialCrop.
        var padding: [[Int]] = []
        var final: [Int] = []
        for (axis, t) in targets(options, cropped: cropped).enumerated() {
            var size = cropped[axis]
            var before = 0, after = 0
            if size < t.pad {
                before = (t.pad - size) / 2
                after = t.pad - size - before
                size = t.pad
            }
            if let crop = t.crop, size > crop {
                let start = size / 2 - crop / 2
                before -= start
                after -= size - crop - start
                size = crop
            }
            padding.append([before, after])
            final.append(size)
        }
        // Per-channel statistics over nonzero voxels of the box, then the copy into the padded array.
        let C = loaded.channels.count
        let plane = final[1] * final[2], volume = final[0] * plane
        var image = [Float](repeating: 0, count: C * volume)
        var means: [Double] = [], stds: [Double] = []
        for c in 0 ..< C {
            let source = loaded.channels[c]
            var sum = 0.0, sumSquares = 0.0, n = 0.0
            for z in box[0][0] ..< box[0][1] {
                for y in box[1][0] ..< box[1][1] {
                    let row = (z * Y + y) * X
                    for x in box[2][0] ..< box[2][1] {
                        let v = Double(source[row + x])
                        if v != 0 { sum += v; sumSquares += v * v; n += 1 }
                    }
                }
            }
            let mean = n > 0 ? sum / n : 0
            var std = n > 0 ? (max(0, sumSquares / n - mean * mean)).squareRoot() : 1
            if std == 0 { std = 1 }  // a constant channel is only shifted, as MONAI does
            means.append(mean)
            stds.append(std)
            let (m, s) = (Float(mean), Float(1 / std))
            image.withUnsafeMutableBufferPointer { out in
                copyBox(box: box, padding: padding, final: final, width: X, height: Y) { src, dst, count in
                    for k in 0 ..< count {
                        let v = source[src + k]
                        out[c * volume + dst + k] = v == 0 ? 0 : (v - m) * s
                    }
                }
            }
        }
        var label: [UInt8]?
        if let source = loaded.label {
            var out = [UInt8](repeating: 0, count: volume)
            out.withUnsafeMutableBufferPointer { out in
                copyBox(box: box, padding: padding, final: final, width: X, height: Y) { src, dst, count in
                    for k in 0 ..< count { out[dst + k] = source[src + k] }
                }
            }
            label = out
        }
        let h = loaded.header
        let meta = CaseMeta(id: loaded.id, niftiShape: h.shape, affine: h.affine.rows, spacing: h.spacing,
                            originalShape: original, cropBox: box, padding: padding, shape: [C] + final,
                            mean: means, std: stds, dim: options.dim, labelConvention: convention, channelNames: channelNames)
        return PreprocessedCase(image: image, label: label, meta: meta)
    }

    /// Visits the rows the cropped-and-padded array shares with the original: `body(sourceOffset,
    /// destinationOffset, count)` for each run along W (offsets in voxels of one channel).
    static func copyBox(box: [[Int]], padding: [[Int]], final: [Int], width X: Int, height Y: Int,
                        _ body: (Int, Int, Int) -> Void) {
        // For each axis the source range [box.start - min(0, before) ...) maps to destination max(0, before).
        var srcStart = [Int](), dstStart = [Int](), length = [Int]()
        for a in 0 ..< 3 {
            let before = padding[a][0]
            let skip = max(0, -before)
            let s = box[a][0] + skip
            let d = max(0, before)
            let n = min(box[a][1] - s, final[a] - d)
            srcStart.append(s); dstStart.append(d); length.append(max(0, n))
        }
        guard length.allSatisfy({ $0 > 0 }) else { return }
        for dz in 0 ..< length[0] {
            for dy in 0 ..< length[1] {
                let src = ((srcStart[0] + dz) * Y + srcStart[1] + dy) * X + srcStart[2]
                let dst = ((dstStart[0] + dz) * final[1] + dstStart[1] + dy) * final[2] + dstStart[2]
                body(src, dst, length[2])
            }
        }
    }

    /// Puts a volume of the preprocessed grid (D, H, W) back on the original grid (Z, Y, X) of `meta`:
    /// padding removed, the box placed where it was cropped from, `fill` elsewhere (including regions the
    /// 2D centre crop removed).
    public static func restore<T>(_ values: [T], meta: CaseMeta, fill: T) throws -> [T] {
        let final = Array(meta.shape.dropFirst())
        guard values.count == final.reduce(1, *) else {
            throw SegmentationError.invalidArgument("case \(meta.id): \(values.count) values for preprocessed shape \(final)")
        }
        let (Z, Y, X) = (meta.originalShape[0], meta.originalShape[1], meta.originalShape[2])
        var out = [T](repeating: fill, count: Z * Y * X)
        out.withUnsafeMutableBufferPointer { out in
            values.withUnsafeBufferPointer { v in
                copyBox(box: meta.cropBox, padding: meta.padding, final: final, width: X, height: Y) { src, dst, count in
                    for k in 0 ..< count { out[src + k] = v[dst + k] }
                }
            }
        }
        return out
    }

    /// The file names of a preprocessed case, as Composer and NVIDIA name them.
    public static func files(_ folder: String, _ id: String) -> (image: String, label: String, meta: String) {
        (folder + "/\(id)_x.npy", folder + "/\(id)_y.npy", folder + "/\(id)_meta.json")
    }

    public struct Summary: Sendable {
        public var processed: [String]
        public var skipped: [String]
        public var seconds: Double
        /// nil when there are fewer cases than folds (no split written).
        public var splits: FoldSplits?
    }

    /// Preprocesses every training case of `dataset` into `folder`: `CASE_x.npy`, `CASE_y.npy`, `CASE_meta.json`
    /// (atomic writes, meta last, so a case is complete exactly when its meta exists), `splits.json` once,
    /// and `preprocess.json` (the options). Finished cases are skipped unless `options.overwrite`.
    public static func run(dataset: Dataset, folder: String, options: PreprocessOptions,
                           progress: ProgressReporter? = nil) throws -> Summary {
        // Memory: the largest case must fit, and only as many cases are preprocessed at once as fit together.
        var workers = options.workers
        let needs = dataset.training.map { c in
            Int(Double(c.imageFiles.reduce(0) { $0 + ((try? NiftiImage.readHeader($1))?.voxelCount ?? 0) } * 4) * MemoryBudget.preprocessing)
        }
        if let largest = needs.indices.max(by: { needs[$0] < needs[$1] }) {
            let available = try MemoryBudget.check(need: needs[largest] + MemoryBudget.fixed, what: "preprocessing case \(dataset.training[largest].id)",
                                                   basis: "\(MemoryBudget.preprocessing)x its float32 channels and 1 GB")
            if let available, needs[largest] > 0 {
                workers = max(1, min(workers, (available - MemoryBudget.fixed) / needs[largest]))
            }
        }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        AtomicFile.removeStale(in: folder)  // a killed run's unfinished files
        // A folder holds cases of one configuration: refuse to mix (skipped cases would keep the old one).
        let configPath = folder + "/preprocess.json"
        if !options.overwrite, let data = FileManager.default.contents(atPath: configPath),
           let old = try? JSONDecoder().decode([String: String].self, from: data) {
            let now = ["dim": "\(options.dim)", "patch2D": options.patch2D.map(String.init).joined(separator: "x"),
                       "minimum3D": options.minimum3D.map(String.init).joined(separator: "x")]
            for (key, value) in now where old[key] != nil && old[key] != value {
                throw SegmentationError.outputExists(configPath, "the folder holds cases preprocessed with \(key) \(old[key]!), not \(value)")
            }
        }
        let start = Date()
        let cases = dataset.training
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        // true: processed now; false: finished before and skipped.
        let results = Parallel.map(count: cases.count, workers: workers) { index -> Bool in
            let c = cases[index]
            let paths = files(folder, c.id)
            let fm = FileManager.default
            if !options.overwrite, fm.fileExists(atPath: paths.meta), fm.fileExists(atPath: paths.image), fm.fileExists(atPath: paths.label) {
                progress?.advance(note: "\(c.id) (done before)")
                return false
            }
            do {
                let loaded = try dataset.load(c)
                let p = try transform(loaded, options: options, channelNames: dataset.channelNames, convention: dataset.convention)
                try Npy.write(NpyArray(shape: p.meta.shape, floats: p.image), to: paths.image)
                if let label = p.label {
                    try Npy.write(NpyArray(shape: [1] + p.meta.shape.dropFirst(), values: .uint8(label)), to: paths.label)
                }
                try AtomicFile.write(Array(try encoder.encode(p.meta)), to: paths.meta)
                progress?.advance(note: c.id)
                return true
            } catch {
                progress?.advance(note: "\(c.id) FAILED")
                throw error
            }
        }
        let errors = results.compactMap { r -> String? in if case let .failure(e) = r { return "\(e)" } else { return nil } }
        if !errors.isEmpty {
            throw SegmentationError.invalidArgument("\(errors.count) case(s) failed:\n" + errors.joined(separator: "\n"))
        }
        let done = results.map { (try? $0.get()) ?? false }
        let splits = cases.count >= 5 ? try FoldSplits.loadOrCreate(folder: folder, ids: cases.map(\.id), seed: options.splitSeed) : nil
        let config: [String: String] = [
            "source": dataset.root, "layout": dataset.layout.rawValue, "dim": "\(options.dim)",
            "patch2D": options.patch2D.map(String.init).joined(separator: "x"),
            "minimum3D": options.minimum3D.map(String.init).joined(separator: "x"),
            "labelConvention": dataset.convention.rawValue, "labelMapping": dataset.convention.mapping,
            "channels": dataset.channelNames.joined(separator: ","), "cases": "\(cases.count)",
        ]
        try AtomicFile.write(Array(try encoder.encode(config)), to: configPath)
        return Summary(processed: zip(cases, done).filter { $1 }.map { $0.0.id }.sorted(),
                       skipped: zip(cases, done).filter { !$1 }.map { $0.0.id }.sorted(),
                       seconds: Date().timeIntervalSince(start), splits: splits)
    }
}

extension Array where Element == [Float] {
    /// Calls `body` with a buffer pointer to each inner array (no copies).
    func withUnsafeBufferPointers<R>(_ body: ([UnsafeBufferPointer<Float>]) throws -> R) rethrows -> R {
        func recurse(_ index: Int, _ acc: [UnsafeBufferPointer<Float>]) throws -> R {
            if index == count { return try body(acc) }
            return try self[index].withUnsafeBufferPointer { try recurse(index + 1, acc + [$0]) }
        }
        return try recurse(0, [])
    }
}
