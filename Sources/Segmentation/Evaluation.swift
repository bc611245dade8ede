import Foundation
import MedicalImaging

/// Scores predicted label maps against ground truth, per case and on average.
public enum Evaluation {
    /// Training classes and BraTS regions, in the Decathlon's classes (1 edema, 2 non-enhancing, 3 enhancing).
    public static let structures: [(name: String, classes: Set<UInt8>)] = [
        ("1", [1]), ("2", [2]), ("3", [3]), ("WT", [1, 2, 3]), ("TC", [2, 3]), ("ET", [3]),
    ]

    public struct CaseScores: Codable, Sendable {
        public var id: String
        /// Dice per label ("1", "2", "3") and region ("WT", "TC", "ET"); 1 when both masks are empty.
        public var dice: [String: Double]
        /// HD95 in mm per label and region (0 when both are empty, the image diagonal when one is).
        public var hd95: [String: Double]
        /// The recipe's metric for this case: mean over classes 1-3 of Dice, where a class absent from the
        /// ground truth scores 1 if never predicted, else 0; times 100.
        public var recipeDice: Double
    }

    public struct Summary: Codable, Sendable {
        public var cases: [CaseScores]
        public var meanDice: [String: Double]
        public var meanHD95: [String: Double]
        /// The recipe's "Dice" (Composer / NVIDIA validation metric), averaged over cases.
        public var recipeDice: Double
        public var labelConvention: String
        public var notes: [String]
        /// Ground-truth cases that had no prediction and are not in the means (only when allowed).
        public var missing: [String]?
    }

    /// Scores one case given labels as training classes (0-3).
    public static func score(id: String, truth: [UInt8], prediction: [UInt8], shape: [Int], spacing: [Double]) -> CaseScores {
        var dice: [String: Double] = [:], hd: [String: Double] = [:]
        for s in structures {
            let a = prediction.map { s.classes.contains($0) }, b = truth.map { s.classes.contains($0) }
            dice[s.name] = Metrics.dice(a, b)
            hd[s.name] = Metrics.hd95(a, b, shape: shape, spacing: spacing)
        }
        var recipe = 0.0
        for c in UInt8(1) ... 3 {
            let inTruth = truth.contains(c), inPrediction = prediction.contains(c)
            recipe += inTruth ? dice["\(c)"]! : (inPrediction ? 0 : 1)
        }
        return CaseScores(id: id, dice: dice, hd95: hd, recipeDice: 100 * recipe / 3)
    }

    /// Label files of a folder by case id (`CASE.nii.gz` or `.nii`; macOS `._*` files ignored).
    /// Case id -> label file (.nii or .nii.gz) of a folder.
    public static func labelFiles(_ folder: String) throws -> [String: String] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else {
            throw SegmentationError.invalidFile(folder, "cannot list the folder")
        }
        var out: [String: String] = [:]
        for n in names where !n.hasPrefix("._") {
            for ext in [".nii.gz", ".nii"] where n.hasSuffix(ext) { out[String(n.dropLast(ext.count))] = folder + "/" + n }
        }
        return out
    }

    /// Evaluates every case present in both folders (same file names). `convention` nil: BraTS when any
    /// ground-truth file holds the value 4, else Decathlon. A ground-truth case without a prediction is an
    /// error unless `allowMissing` (then the summary lists it and the means leave it out).
    public static func run(truthFolder: String, predictionFolder: String, convention: LabelConvention? = nil,
                           allowMissing: Bool = false, progress: ProgressReporter? = nil) throws -> Summary {
        let truths = try labelFiles(truthFolder), predictions = try labelFiles(predictionFolder)
        let ids = Set(truths.keys).intersection(predictions.keys).sorted()
        guard !ids.isEmpty else {
            throw SegmentationError.invalidArgument("no case has a label file in both \(truthFolder) and \(predictionFolder)")
        }
        var notes: [String] = []
        let missing = Set(truths.keys).subtracting(predictions.keys).sorted()
        if !missing.isEmpty {
            guard allowMissing else { throw SegmentationError.missingPredictions(predictionFolder, missing, truths.count) }
            notes.append("NOT SCORED: no prediction for \(missing.count) of \(truths.count) case(s): \(missing.joined(separator: ", "))")
        }
        var resolved = convention
        var cases: [CaseScores] = []
        for id in ids {
            let t = try NiftiImage.read(truths[id]!), p = try NiftiImage.read(predictions[id]!)
            guard Array(t.shape.prefix(3)) == Array(p.shape.prefix(3)) else {
                throw SegmentationError.invalidFile(predictions[id]!, "shape \(p.shape), the ground truth \(truths[id]!) has \(t.shape)")
            }
            let tv = t.floatValues(), pv = p.floatValues()
            if resolved == nil { resolved = tv.contains(4) ? .brats : .decathlon }
            func classes(_ v: [Float], _ file: String) throws -> [UInt8] {
                try v.map { x in
                    guard let c = resolved!.trainingClass(of: Int(x)), Float(Int(x)) == x else {
                        throw SegmentationError.invalidFile(file, "label value \(x) is not part of the \(resolved!.rawValue) convention")
                    }
                    return c
                }
            }
            cases.append(score(id: id, truth: try classes(tv, truths[id]!), prediction: try classes(pv, predictions[id]!),
                               shape: Array(t.shape.prefix(3)), spacing: t.header.spacing))
            progress?.advance(note: id)
        }
        var meanDice: [String: Double] = [:], meanHD: [String: Double] = [:]
        for s in structures {
            meanDice[s.name] = cases.map { $0.dice[s.name]! }.reduce(0, +) / Double(cases.count)
            meanHD[s.name] = cases.map { $0.hd95[s.name]! }.reduce(0, +) / Double(cases.count)
        }
        notes.append("Dice of empty vs empty is 1; HD95 of empty vs empty is 0, of empty vs non-empty the image diagonal in mm")
        return Summary(cases: cases, meanDice: meanDice, meanHD95: meanHD,
                       recipeDice: cases.map(\.recipeDice).reduce(0, +) / Double(cases.count),
                       labelConvention: resolved!.rawValue, notes: notes, missing: missing.isEmpty ? nil : missing)
    }

    /// One row per case, then the mean.
    public static func csv(_ s: Summary) -> String {
        let names = structures.map(\.name)
        var lines = ["case," + names.map { "dice_\($0)" }.joined(separator: ",") + "," + names.map { "hd95_\($0)" }.joined(separator: ",") + ",recipe_dice"]
        func row(_ id: String, _ d: [String: Double], _ h: [String: Double], _ r: Double) -> String {
            ([id] + names.map { String(format: "%.6f", d[$0]!) } + names.map { String(format: "%.4f", h[$0]!) } + [String(format: "%.4f", r)]).joined(separator: ",")
        }
        for c in s.cases { lines.append(row(c.id, c.dice, c.hd95, c.recipeDice)) }
        lines.append(row("mean", s.meanDice, s.meanHD95, s.recipeDice))
        return lines.joined(separator: "\n") + "\n"
    }
}
