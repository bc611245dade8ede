import Foundation
import Testing
@testable import MedicalImaging
@testable import Segmentation
import Engine

@Suite struct MetricTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/metrics").path

    /// Dice, HD95 (anisotropic spacing, empty structures) and the recipe's metric equal scipy's
    /// (fixtures by tools/make_metric_fixtures.py).
    @Test func matchesScipy() throws {
        struct Scores: Decodable { let dice: [String: Double]; let hd95: [String: Double]; let recipe: Double }
        let expected = try JSONDecoder().decode([String: Scores].self, from: Data(contentsOf: URL(fileURLWithPath: Self.folder + "/expected.json")))
        let summary = try Evaluation.run(truthFolder: Self.folder + "/gt", predictionFolder: Self.folder + "/pred")
        #expect(summary.cases.count == 4 && summary.labelConvention == "decathlon")
        for c in summary.cases {
            let e = try #require(expected[c.id])
            for (k, v) in e.dice { #expect(abs(c.dice[k]! - v) < 1e-9, "\(c.id) dice \(k): \(c.dice[k]!) vs \(v)") }
            for (k, v) in e.hd95 { #expect(abs(c.hd95[k]! - v) < 1e-6, "\(c.id) hd95 \(k): \(c.hd95[k]!) vs \(v)") }
            #expect(abs(c.recipeDice - e.recipe) < 1e-9, "\(c.id) recipe")
        }
        let csv = Evaluation.csv(summary)
        #expect(csv.split(separator: "\n").count == 6 && csv.hasPrefix("case,dice_1"))
    }

    @Test func distanceTransformIsExact() {
        // One feature voxel in a 5 x 4 x 3 grid with spacing (1, 2, 3): distance = sqrt(sum (d_i s_i)^2).
        var f = [Bool](repeating: false, count: 60)
        f[(1 * 4 + 2) * 5 + 3] = true  // x 3, y 2, z 1
        let d = Metrics.distanceTransform(features: f, shape: [5, 4, 3], spacing: [1, 2, 3])
        for z in 0 ..< 3 { for y in 0 ..< 4 { for x in 0 ..< 5 {
            let e = (pow(Double(x - 3), 2) + pow(Double(2 * (y - 2)), 2) + pow(Double(3 * (z - 1)), 2)).squareRoot()
            #expect(abs(d[(z * 4 + y) * 5 + x] - e) < 1e-12)
        } } }
    }

    /// The validation's one-pass scores (a confusion matrix) equal the mask-based Dice and the recipe's
    /// per-class rule, including absent classes.
    @Test func confusionScoresMatchMasks() {
        var rng = SplitMix64(mixing: 11)
        for trial in 0 ..< 20 {
            let n = 300
            // Trial 0: class 3 absent from both; trial 1: absent from the truth only.
            let truth = (0 ..< n).map { _ in UInt8(Int.random(in: 0 ..< (trial == 0 || trial == 1 ? 3 : 4), using: &rng)) }
            let prediction = (0 ..< n).map { _ in UInt8(Int.random(in: 0 ..< (trial == 0 ? 3 : 4), using: &rng)) }
            var m = [Int](repeating: 0, count: 16)
            Metrics.accumulateConfusion(&m, prediction: Array(prediction[..<100]), truth: Array(truth[..<100]), classes: 4)
            Metrics.accumulateConfusion(&m, prediction: Array(prediction[100...]), truth: Array(truth[100...]), classes: 4)
            let reference = Evaluation.score(id: "x", truth: truth, prediction: prediction, shape: [n, 1, 1], spacing: [1, 1, 1])
            for s in Evaluation.structures {
                #expect(abs(Metrics.dice(confusion: m, classes: 4, of: s.classes) - reference.dice[s.name]!) < 1e-12)
            }
            let recipe = (1 ... 3).map { Metrics.recipeClassDice(confusion: m, classes: 4, label: UInt8($0)) }.reduce(0, +) / 3
            #expect(abs(100 * recipe - reference.recipeDice) < 1e-9, "trial \(trial)")
        }
    }

    /// Ground-truth cases without a prediction are refused, or with `allowMissing` listed and left out.
    @Test func missingPredictionsAreRefused() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let fm = FileManager.default
        try fm.copyItem(atPath: Self.folder + "/gt", toPath: folder + "/gt")
        try fm.copyItem(atPath: Self.folder + "/pred", toPath: folder + "/pred")
        let removed = try #require(try Evaluation.labelFiles(folder + "/pred").sorted { $0.key < $1.key }.first)
        try fm.removeItem(atPath: removed.value)
        #expect(throws: SegmentationError.self) { try Evaluation.run(truthFolder: folder + "/gt", predictionFolder: folder + "/pred") }
        let summary = try Evaluation.run(truthFolder: folder + "/gt", predictionFolder: folder + "/pred", allowMissing: true)
        #expect(summary.missing == [removed.key] && summary.cases.count == 3)
    }

    /// The HTML report is one self-contained page: every case in the table (worst first) and with its
    /// picture inline as a PNG; no external references.
    @Test func reportHoldsEveryCaseAndPicture() throws {
        let summary = try Evaluation.run(truthFolder: Self.folder + "/gt", predictionFolder: Self.folder + "/pred")
        let truths = try Evaluation.labelFiles(Self.folder + "/gt"), predictions = try Evaluation.labelFiles(Self.folder + "/pred")
        var pictures: [String: [UInt8]] = [:]
        for c in summary.cases {
            pictures[c.id] = try Overlay.picture(image: nil, channel: 0, truth: truths[c.id], prediction: predictions[c.id]).png()
        }
        let page = EvaluationReport.html(summary, pictures: pictures, title: "fixtures <pred>")
        #expect(page.hasPrefix("<!DOCTYPE html>") && page.contains("fixtures &lt;pred&gt;"))
        #expect(!page.contains("src=\"http") && !page.contains("<script"))
        let worst = summary.cases.min { $0.recipeDice < $1.recipeDice }!.id
        for c in summary.cases {
            #expect(page.contains("<a href=\"#\(c.id)\">\(c.id)</a>"), "\(c.id) has no row")
            let figure = try #require(page.range(of: "<figure id=\"\(c.id)\"><img alt=\"\(c.id)\" src=\"data:image/png;base64,"), "\(c.id) has no picture")
            let data = page[figure.upperBound...].prefix { $0 != "\"" }
            #expect(Data(base64Encoded: String(data))?.prefix(4) == Data([0x89, 0x50, 0x4E, 0x47]))
        }
        let first = try #require(page.range(of: "<a href=\"#"))
        #expect(page[first.upperBound...].hasPrefix(worst + "\""), "the table does not start with the worst case, \(worst)")
    }
}
