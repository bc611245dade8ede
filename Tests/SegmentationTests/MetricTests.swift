import Foundation
import Testing
@testable import MedicalImaging
@testable import Segmentation

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
}
