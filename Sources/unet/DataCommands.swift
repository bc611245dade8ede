import ArgumentParser
import FileSupport
import Foundation
import MedicalImaging
import Segmentation

struct Preprocess: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Preprocess a Decathlon or nnU-Net dataset the recipe's way into CASE_x.npy / CASE_y.npy / CASE_meta.json.",
        discussion: """
        Crop to the foreground box, z-score each channel over its nonzero voxels, then 2D: pad and centre-crop \
        H x W to 192 x 160; 3D: pad to at least 128^3. Arrays are C order: x (C, D, H, W) float32, y (1, D, H, W) \
        uint8 with classes 0-3, where (D, H, W) = the NIfTI's (Z, Y, X). Writes splits.json (5 folds, seeded) once.
        """
    )

    @Option(help: "Dataset folder (Decathlon or nnU-Net v2 layout, with dataset.json).") var data: String
    @Option(name: [.short, .customLong("output")], help: "Output folder (cases already done there are skipped).") var output: String?
    @Option(name: .customLong("out"), help: .hidden) var out: String?
    @Option(help: "2 or 3.") var dim: Int
    @Flag(help: "Redo cases that are already done.") var overwrite = false
    @Option(help: "Seed of the 5-fold split (0 as Composer, 12345 as NVIDIA).") var splitSeed: UInt32 = 0
    @Option(help: "Cases processed at once (default: cores).") var workers: Int = ProcessInfo.processInfo.activeProcessorCount

    func validate() throws {
        guard dim == 2 || dim == 3 else { throw ValidationError("--dim must be 2 or 3, got \(dim)") }
        guard workers >= 1 else { throw ValidationError("--workers must be at least 1") }
        _ = try OutputOption.required(output, legacy: out)
    }

    func run() throws {
        let out = try OutputOption.required(output, legacy: out)
        let dataset = try Dataset.open(data)
        var options = PreprocessOptions(dim: dim)
        options.overwrite = overwrite
        options.splitSeed = splitSeed
        options.workers = workers
        FileHandle.standardError.write(Data("\(dataset.layout.rawValue) dataset '\(dataset.name)': \(dataset.training.count) training cases, channels \(dataset.channelNames.joined(separator: ", ")); \(dataset.convention.mapping)\n".utf8))
        let progress = ProgressReporter(total: dataset.training.count, label: "preprocess")
        let summary = try Preprocessing.run(dataset: dataset, folder: out, options: options, progress: progress)
        print("preprocessed \(summary.processed.count) case(s), skipped \(summary.skipped.count) already done, in \(String(format: "%.1f", summary.seconds)) s")
        if let fold0 = summary.splits?.folds[0] {
            print("output: \(out) (splits.json: fold 0 = \(fold0.train.count) train / \(fold0.val.count) validation)")
        } else {
            print("output: \(out) (fewer than 5 cases: no splits.json written)")
        }
    }
}

struct Synthesize: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synth",
        abstract: "Write a synthetic Task01-like brain-tumour dataset (Decathlon layout) to train and test on.",
        discussion: """
        240 x 240 x 155 x 4 images at 1 mm (FLAIR, T1w, T1gd, T2w) and labels 0-3 (edema, non-enhancing core, \
        enhancing rim). Anatomy from --template (a skull-stripped T1 on the BraTS grid, e.g. the project's \
        brain template) or a procedural brain. See the README for what the phantom models and what it does not.
        """
    )

    @Option(help: "Number of cases.") var cases: Int
    @Option(name: [.short, .customLong("output")], help: "Output folder.") var output: String?
    @Option(name: .customLong("out"), help: .hidden) var out: String?

    @Option(help: "Seed (the same seed gives the same dataset).") var seed: UInt64 = 0
    @Option(help: "T1 template on the BraTS grid (default: the bundled template if present, else a procedural brain).")
    var template: String?
    @Flag(help: "Use the procedural brain even when a template is available.") var procedural = false
    @Option(help: "Image datatype (float32 as the Decathlon).") var datatype: PhantomDatatype = .float32
    @Option(help: "Cases written at once.") var workers: Int = ProcessInfo.processInfo.activeProcessorCount
    @Flag(help: "Write into a folder that already holds a dataset.") var overwrite = false

    func validate() throws {
        guard cases >= 1 else { throw ValidationError("--cases must be at least 1") }
        guard workers >= 1 else { throw ValidationError("--workers must be at least 1") }
        _ = try OutputOption.required(output, legacy: out)
    }

    func run() throws {
        let out = try OutputOption.required(output, legacy: out)
        var options = Synth.Options(cases: cases)
        options.seed = seed
        options.template = procedural ? nil : (template ?? BundledData.templateT1)
        options.datatype = datatype.nifti
        options.workers = workers
        options.overwrite = overwrite
        FileHandle.standardError.write(Data("anatomy: \(options.template ?? "procedural brain")\n".utf8))
        let start = Date()
        let records = try Synth.run(folder: out, options: options, progress: ProgressReporter(total: cases, label: "synth"))
        let seconds = Date().timeIntervalSince(start)
        let lesions = records.map(\.lesions.count).reduce(0, +)
        print(String(format: "wrote %d cases (%d lesions) to %@ in %.1f s (%.2f s per case)", records.count, lesions, out, seconds, seconds / Double(cases)))
    }
}

/// Files the tool ships with, found relative to the running executable (never through the source path):
/// installed, PREFIX/bin/unet reads PREFIX/share/swiftunet/...; built in a checkout,
/// .build/<triple>/<config>/unet reads the checkout's own folders.
enum BundledData {
    /// The running executable's folder.
    static var executableFolder: URL {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: exe).resolvingSymlinksInPath().deletingLastPathComponent()
    }

    /// The first of `relativePaths` (from the installed share folder, then from the checkout) that exists.
    static func find(installed: String, checkout: String) -> String? {
        let base = executableFolder
        let candidates = [base.appendingPathComponent("../share/swiftunet/" + installed).standardized.path,
                          base.appendingPathComponent("../../../" + checkout).standardized.path]
        return candidates.first { FileManager.default.fileExists(atPath: $0) }
    }

    /// The BraTS-grid brain template's T1 (data/brain-template in the repository, with its notice, SOURCE.md).
    static var templateT1: String? { find(installed: "brain-template/t1_brain.nii.gz", checkout: "data/brain-template/t1_brain.nii.gz") }

    /// The PyTorch reference of `unet bench train`.
    static var torchBenchmark: String? { find(installed: "bench/torch_reference.py", checkout: "bench/torch_reference.py") }

    /// "0.4.0 (commit abc1234)": the commit is the one install.sh recorded, or the checkout's.
    static var version: String {
        var commit = find(installed: "COMMIT", checkout: ".git/HEAD").flatMap { path -> String? in
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
            let line = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard line.hasPrefix("ref: ") else { return line }
            // A checkout's HEAD names a branch: its commit is in the ref file (or packed-refs).
            let git = URL(fileURLWithPath: path).deletingLastPathComponent()
            let ref = String(line.dropFirst(5))
            if let c = try? String(contentsOf: git.appendingPathComponent(ref), encoding: .utf8) { return c.trimmingCharacters(in: .whitespacesAndNewlines) }
            let packed = (try? String(contentsOf: git.appendingPathComponent("packed-refs"), encoding: .utf8)) ?? ""
            return packed.split(separator: "\n").first { $0.hasSuffix(" " + ref) }.map { String($0.prefix(40)) }
        } ?? "unknown"
        if commit.count > 12 { commit = String(commit.prefix(12)) }
        return "\(Unet.release) (commit \(commit))"
    }
}

struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Score predicted label maps against ground truth: Dice and HD95 per label and region, and the recipe's metric.",
        discussion: """
        Cases are matched by file name (CASE.nii.gz in both folders). Labels 1, 2, 3 (Decathlon: edema, \
        non-enhancing, enhancing; BraTS values are mapped) and regions WT {1,2,3}, TC {2,3}, ET {3}. HD95 in mm \
        (medpy's definition). Empty vs empty: Dice 1, HD95 0; empty vs non-empty: Dice 0, HD95 = the image \
        diagonal in mm. The recipe's Dice: per class, 1 if absent from the truth and never predicted, else 0 \
        when absent from the truth; mean over classes and cases, x100. Writes summary.json and summary.csv.
        """
    )

    @Option(help: "Folder of ground-truth label files.") var gt: String
    @Option(help: "Folder of predicted label files.") var pred: String
    @Option(name: .shortAndLong, help: "Summary JSON (default: PRED/summary.json); the CSV goes beside it.") var output: String?
    @Option(help: "Label convention of the files (auto: from their values).") var labels: LabelsChoice = .auto
    @Option(help: "Write DIR/CASE.png per case: ground truth beside prediction, through the tumour.") var png: String?
    @Option(help: "Write one self-contained HTML page: means and spread per region, cases worst first, every case's picture.") var report: String?
    @Option(help: "Images for the pictures (a folder of 4D images or nnU-Net channel files; the first channel is shown).") var images: String?
    @Flag(help: "Replace an existing summary (and pictures).") var overwrite = false
    @Flag(help: "Score the cases that have a prediction even when others have none (the summary lists the missing).") var allowMissing = false

    func run() throws {
        let json = output ?? pred + "/summary.json"
        let csv = (json.hasSuffix(".json") ? String(json.dropLast(5)) : json) + ".csv"
        if !overwrite { try refuseExisting(json, csv) }
        try FileManager.default.createDirectory(atPath: URL(fileURLWithPath: json).deletingLastPathComponent().path, withIntermediateDirectories: true)
        let count = (try? FileManager.default.contentsOfDirectory(atPath: gt).filter { $0.hasSuffix(".nii.gz") || $0.hasSuffix(".nii") }.count) ?? 0
        let summary = try Evaluation.run(truthFolder: gt, predictionFolder: pred, convention: labels.convention,
                                         allowMissing: allowMissing, progress: ProgressReporter(total: max(count, 1), label: "evaluate"))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(Array(try encoder.encode(summary)), to: json)
        try AtomicFile.write(text: Evaluation.csv(summary), to: csv)
        let names = Evaluation.structures.map(\.name)
        print("\(summary.cases.count) case(s), labels \(summary.labelConvention)")
        print("        " + names.map { $0.padding(toLength: 8, withPad: " ", startingAt: 0) }.joined())
        print("Dice    " + names.map { String(format: "%-8.4f", summary.meanDice[$0]!) }.joined())
        print("HD95 mm " + names.map { String(format: "%-8.2f", summary.meanHD95[$0]!) }.joined())
        print(String(format: "recipe Dice (Composer/NVIDIA metric): %.2f", summary.recipeDice))
        for n in summary.notes { print("note: \(n)") }
        if let missing = summary.missing {
            FileHandle.standardError.write(Data("WARNING: \(missing.count) ground-truth case(s) have no prediction and are left out of the means: \(missing.joined(separator: ", "))\n".utf8))
        }
        print("wrote \(json) and \(csv)")
        guard png != nil || report != nil else { return }
        let pictures = try self.pictures(summary)
        if let png {
            try FileManager.default.createDirectory(atPath: png, withIntermediateDirectories: true)
            for (id, bytes) in pictures { try AtomicFile.write(bytes, to: png + "/\(id).png") }
            print("wrote \(pictures.count) picture(s) to \(png)")
        }
        if let report {
            try AtomicFile.write(text: EvaluationReport.html(summary, pictures: pictures, title: pred), to: report)
            print("wrote \(report)")
        }
    }

    func validate() throws {
        if !overwrite, let report { try refuseExisting(report) }
        if !overwrite, let png, let names = try? FileManager.default.contentsOfDirectory(atPath: png), names.contains(where: { $0.hasSuffix(".png") }) {
            throw ValidationError("\(png) holds pictures already; pass --overwrite to replace them, or choose another folder")
        }
    }

    /// Every scored case's picture (PNG bytes): the first image channel (from --images; black without),
    /// ground truth beside prediction.
    func pictures(_ summary: Evaluation.Summary) throws -> [String: [UInt8]] {
        let imageFiles = try images.map { Dictionary(uniqueKeysWithValues: try Predictor.inputs($0).map { ($0.id, $0.files[0]) }) } ?? [:]
        let truths = try Evaluation.labelFiles(gt), predictions = try Evaluation.labelFiles(pred)
        var out: [String: [UInt8]] = [:]
        for c in summary.cases {
            if images != nil && imageFiles[c.id] == nil { print("note: no image for \(c.id) in \(images!); labels drawn on black") }
            out[c.id] = try Overlay.picture(image: imageFiles[c.id], channel: 0, truth: truths[c.id], prediction: predictions[c.id],
                                            convention: LabelConvention(rawValue: summary.labelConvention) ?? .decathlon).png()
        }
        return out
    }
}

struct OverlayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "overlay",
        abstract: "Write a PNG: axial, coronal and sagittal slices through the tumour, an image channel in grey, labels in colour.",
        discussion: "Columns: the image, the ground truth, the prediction (those given). Edema green, non-enhancing core red, enhancing yellow."
    )

    @Option(help: "Image (.nii/.nii.gz, 3D or 4D).") var image: String
    @Option(help: "Channel shown (0 = FLAIR in the Decathlon's order).") var channel: Int = 0
    @Option(help: "Ground-truth label file.") var truth: String?
    @Option(help: "Predicted label file.") var prediction: String?
    @Option(help: "Label convention of the files.") var labels: LabelConvention = .decathlon
    @Option(name: .shortAndLong, help: "Output PNG.") var output: String
    @Flag(help: "Replace an existing output.") var overwrite = false

    func validate() throws {
        if !overwrite { try refuseExisting(output) }
    }

    func run() throws {
        try Overlay.write(image: image, channel: channel, truth: truth, prediction: prediction, convention: labels, to: output)
        print("wrote \(output)")
    }
}
