import ArgumentParser
import Foundation
import MedicalImaging
import Segmentation

struct BenchIO: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "io",
        abstract: "NIfTI read speed vs `gzip -dc` on the same file, and preprocessing time per case.",
        discussion: "Without --file, a 240 x 240 x 155 x 4 float32 phantom case is synthesized into a temporary folder."
    )

    @Option(help: "A Decathlon-style 4D .nii.gz image to read (default: a synthesized case).") var file: String?
    @Option(help: "Repetitions; the best time counts.") var repeats: Int = 3
    @Flag(help: "Print one JSON object instead of the table.") var json = false

    struct Report: Codable {
        var file: String
        var shape: [Int]
        var datatype: String
        var compressedBytes: Int
        var gzipSeconds: Double
        var readSeconds: Double
        var readOverGzip: Double
        var preprocess2DSeconds: Double
        var preprocess3DSeconds: Double
    }

    func validate() throws { guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1") } }

    func run() throws {
        let fm = FileManager.default
        let scratch = NSTemporaryDirectory() + "unet-bench-io-\(getpid())"
        try fm.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? fm.removeItem(atPath: scratch) }
        var path = file
        var datasetRoot: String?
        if path == nil {
            FileHandle.standardError.write(Data("synthesizing a float32 case...\n".utf8))
            var options = Synth.Options(cases: 1)
            options.template = BundledData.templateT1
            _ = try Synth.run(folder: scratch + "/data", options: options)
            path = scratch + "/data/imagesTr/BRATS_001.nii.gz"
            datasetRoot = scratch + "/data"
        }
        let image = path!
        func best(_ body: () throws -> Void) rethrows -> Double {
            var t = Double.infinity
            for _ in 0 ..< repeats {
                let start = Date()
                try body()
                t = min(t, Date().timeIntervalSince(start))
            }
            return t
        }
        // The reference: the system's gzip decompressing the same file to /dev/null.
        let gzip = try best {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/sh")
            p.arguments = ["-c", "gzip -dc \"$0\" > /dev/null", image]
            try p.run()
            p.waitUntilExit()
            guard p.terminationStatus == 0 else { throw ValidationError("gzip -dc failed on \(image)") }
        }
        var header = NiftiHeader()
        let read = try best { header = try NiftiImage.read(image).header }
        // Preprocessing one case end to end (read, crop, normalise, pad, write .npy + meta), 2D and 3D.
        var pre = [2: 0.0, 3: 0.0]
        if let root = datasetRoot ?? dataset(for: image) {
            let dataset = try Dataset.open(root)
            var one = dataset
            let target = URL(fileURLWithPath: image).standardizedFileURL.path
            one.training = Array(dataset.training.filter {
                URL(fileURLWithPath: $0.imageFiles[0]).standardizedFileURL.path == target
            }.prefix(1))
            guard !one.training.isEmpty else { throw ValidationError("\(image) is not a training case of \(root)/dataset.json") }
            for dim in [2, 3] {
                var options = PreprocessOptions(dim: dim)
                options.overwrite = true
                options.workers = 1
                pre[dim] = try best { _ = try Preprocessing.run(dataset: one, folder: scratch + "/pre\(dim)", options: options) }
            }
        }
        let attributes = try fm.attributesOfItem(atPath: image)
        let report = Report(file: image, shape: header.shape, datatype: header.datatype.description,
                            compressedBytes: (attributes[.size] as? Int) ?? 0, gzipSeconds: gzip, readSeconds: read,
                            readOverGzip: read / gzip, preprocess2DSeconds: pre[2]!, preprocess3DSeconds: pre[3]!)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
            return
        }
        print("file: \(image) (\(header.shape.map(String.init).joined(separator: "x")) \(header.datatype), \(report.compressedBytes / 1_000_000) MB compressed)")
        func line(_ step: String, _ seconds: Double, _ note: String = "") {
            print(step.padding(toLength: 36, withPad: " ", startingAt: 0) + String(format: "%8.3f", seconds) + (note.isEmpty ? "" : "   " + note))
        }
        print("step".padding(toLength: 36, withPad: " ", startingAt: 0) + " seconds")
        line("gzip -dc > /dev/null (reference)", gzip)
        line("unet: read NIfTI", read, String(format: "%.2fx gzip", read / gzip))
        if pre[2]! > 0 {
            line("unet: preprocess case, 2D", pre[2]!)
            line("unet: preprocess case, 3D", pre[3]!)
        }
    }

    /// The dataset folder holding `image` (imagesTr/NAME), if it has a dataset.json.
    private func dataset(for image: String) -> String? {
        let root = URL(fileURLWithPath: image).deletingLastPathComponent().deletingLastPathComponent().path
        return FileManager.default.fileExists(atPath: root + "/dataset.json") ? root : nil
    }
}
