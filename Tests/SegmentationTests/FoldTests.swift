import Foundation
import Testing
@testable import Segmentation

@Suite struct FoldTests {
    /// Our split equals scikit-learn's KFold(5, shuffle=True, random_state=seed) on the same sorted ids.
    @Test func matchesScikitLearn() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("kfold_sklearn.json")
        let expected = try JSONDecoder().decode([String: [[String]]].self, from: Data(contentsOf: url))
        #expect(expected.count == 4)
        for (key, folds) in expected {
            let parts = key.split(separator: "_").map { Int($0)! }
            let ids = (1 ... parts[0]).map { String(format: "BRATS_%03d", $0) }.shuffled()
            let splits = try FoldSplits.kFold(ids: ids, folds: 5, seed: UInt32(parts[1]))
            #expect(splits.folds.map(\.val) == folds, "\(key)")
            for fold in splits.folds {
                #expect(Set(fold.train).isDisjoint(with: fold.val))
                #expect(fold.train.count + fold.val.count == parts[0])
            }
        }
    }

    @Test func tooFewCasesIsAnError() {
        #expect(throws: SegmentationError.self) { try FoldSplits.kFold(ids: ["a", "b"], folds: 5) }
    }
}
