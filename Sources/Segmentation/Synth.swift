import FileSupport
import Foundation
import MedicalImaging

/// Writes a synthetic Task01-like dataset in the Decathlon layout.
public enum Synth {
    public struct Options: Sendable {
        public var cases: Int
        public var seed: UInt64 = 0
        /// T1 template (e.g. the BraTS-grid brain template); nil: procedural brain.
        public var template: String?
        public var datatype: NiftiDatatype = .float32
        public var workers = 2
        public var overwrite = false
        public init(cases: Int) { self.cases = cases }
    }

    public struct CaseRecord: Codable, Sendable {
        public var id: String
        public var seed: UInt64
        public var lesions: [Lesion]
        /// Voxels of labels 0, 1, 2, 3.
        public var labelCounts: [Int]
    }

    /// Creates `folder` with dataset.json, imagesTr/BRATS_XXX.nii.gz (240 x 240 x 155 x 4: FLAIR, T1w, T1gd, T2w),
    /// labelsTr/BRATS_XXX.nii.gz and phantom.json (each case's lesions and label counts). Refuses to write into
    /// a folder that already holds a dataset unless `overwrite`.
    public static func run(folder: String, options: Options, progress: ProgressReporter? = nil) throws -> [CaseRecord] {
        guard options.cases >= 1 else { throw SegmentationError.invalidArgument("a phantom dataset needs at least 1 case, asked for \(options.cases)") }
        guard [.float32, .int16].contains(options.datatype) else {
            throw SegmentationError.invalidArgument("phantom images are float32 or int16, not \(options.datatype)")
        }
        let fm = FileManager.default
        if fm.fileExists(atPath: folder + "/dataset.json") && !options.overwrite {
            throw SegmentationError.outputExists(folder, "already holds a dataset (dataset.json)")
        }
        for sub in ["imagesTr", "labelsTr"] {
            try fm.createDirectory(atPath: folder + "/" + sub, withIntermediateDirectories: true)
            AtomicFile.removeStale(in: folder + "/" + sub)  // a killed run's unfinished files
        }
        AtomicFile.removeStale(in: folder)
        let anatomy = try options.template.map { try Anatomy.template(t1Path: $0) } ?? Anatomy.procedural()
        let generator = PhantomGenerator(anatomy: anatomy)
        let reference = { var h = anatomy.header; h.shape = anatomy.shape; return h }()
        let ids = (1 ... options.cases).map { String(format: "BRATS_%03d", $0) }
        let results = Parallel.map(count: ids.count, workers: options.workers) { k -> CaseRecord in
            // Each case's seed depends only on the dataset seed and its number: reproducible in any order.
            let seed = options.seed &* 1_000_003 &+ UInt64(k + 1)
            let c = generator.generate(seed: seed)
            let voxels: VoxelArray = options.datatype == .int16
                ? .int16(c.image.map { Int16(clamping: Int(($0).rounded())) }) : .float32(c.image)
            do {
                try NiftiImage(shape: anatomy.shape + [4], voxels: voxels, like: reference).write(to: folder + "/imagesTr/\(ids[k]).nii.gz")
                try NiftiImage(shape: anatomy.shape, voxels: .uint8(c.label), like: reference).write(to: folder + "/labelsTr/\(ids[k]).nii.gz")
            } catch {
                throw SegmentationError.invalidArgument("\(ids[k]): \(error)")
            }
            progress?.advance(note: ids[k])
            return CaseRecord(id: ids[k], seed: seed, lesions: c.lesions, labelCounts: c.labelCounts)
        }
        let errors = results.compactMap { r -> String? in if case let .failure(e) = r { return "\(e)" } else { return nil } }
        if !errors.isEmpty { throw SegmentationError.invalidArgument(errors.joined(separator: "\n")) }
        let records = results.compactMap { try? $0.get() }
        let dataset: [String: Any] = [
            "name": "BRATS",
            "description": "SwiftUNet synthetic brain-tumour phantom (Task01-like; not patient data)",
            "reference": "unet synth, seed \(options.seed), anatomy: \(anatomy.source)",
            "licence": "CC-BY-SA 4.0",
            "tensorImageSize": "4D",
            "modality": ["0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"],
            "labels": ["0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"],
            "numTraining": ids.count,
            "numTest": 0,
            "training": ids.map { ["image": "./imagesTr/\($0).nii.gz", "label": "./labelsTr/\($0).nii.gz"] },
            "test": [String](),
        ]
        try AtomicFile.write(Array(try JSONSerialization.data(withJSONObject: dataset, options: [.prettyPrinted, .sortedKeys])),
                             to: folder + "/dataset.json")
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(Array(try encoder.encode(records)), to: folder + "/phantom.json")
        return records
    }
}
