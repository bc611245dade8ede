import Engine
import Foundation
import Testing
@testable import MedicalImaging
@testable import Segmentation

@Suite struct LoaderTests {
    /// A preprocessed 2D folder of 5 tiny cases (slices 16 x 12).
    private func preprocessed(_ folder: String) throws -> [String] {
        let ids = (1 ... 5).map { String(format: "BRATS_%03d", $0) }
        try TinyCase(seed: 11).writeDecathlon(folder + "/raw", ids: ids)
        var options = PreprocessOptions(dim: 2)
        options.patch2D = [16, 12]
        _ = try Preprocessing.run(dataset: try Dataset.open(folder + "/raw"), folder: folder + "/pre", options: options)
        return ids
    }

    @Test func augmentationFrequenciesAndDeterminism() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let ids = try preprocessed(folder)
        let loader = try SliceLoader(folder: folder + "/pre", ids: ids, augmentations: Augmentations(), seed: 3)
        #expect(loader.channels == 4 && loader.height == 16 && loader.width == 12)
        var counts: [Int: Int] = [:]
        let n = 4000
        for k in 0 ..< n {
            let s = loader.sample(case: k % 5, epoch: k / 5, position: k % 5)
            for (bit, flag) in [(1, Augmentations.Applied.foreground), (2, .flip), (4, .noise), (8, .blur), (16, .brightness), (32, .contrast)]
            where s.applied.contains(flag) { counts[bit, default: 0] += 1 }
        }
        func rate(_ bit: Int) -> Double { Double(counts[bit] ?? 0) / Double(n) }
        #expect(abs(rate(1) - 0.33) < 0.03, "foreground \(rate(1))")
        #expect(abs(rate(2) - 0.5) < 0.03, "flip \(rate(2))")
        for bit in [4, 8, 16, 32] { #expect(abs(rate(bit) - 0.15) < 0.025, "bit \(bit): \(rate(bit))") }
        // The same (case, epoch, position) gives the same sample.
        let a = loader.sample(case: 2, epoch: 7, position: 1), b = loader.sample(case: 2, epoch: 7, position: 1)
        #expect(a.image == b.image && a.label == b.label)
        // An epoch visits each case once (5 cases, batch 2: 2 steps, one case dropped), in a seeded order.
        let plan = loader.epochPlan(0, batch: 2)
        #expect(plan.count == 2 && Set(plan.joined()).count == 4)
        #expect(loader.epochPlan(0, batch: 2) == plan && loader.epochPlan(1, batch: 2) != plan)
        let (x, y) = try loader.batch(epoch: 0, step: 1, size: 2)
        #expect(x.dims == [2, 4, 16, 12] && y.dims == [2, 1, 16, 12])
    }

    @Test func foregroundCropsHitTumour() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let ids = try preprocessed(folder)
        var aug = Augmentations.none
        aug.foregroundProbability = 1
        let loader = try SliceLoader(folder: folder + "/pre", ids: ids, augmentations: aug, seed: 5)
        for k in 0 ..< 200 {
            let s = loader.sample(case: k % 5, epoch: k, position: 0)
            #expect(s.applied == .foreground && s.label.contains { $0 > 0 })
        }
    }

    @Test func flipsKeepImageAndLabelAlignedAndContrastClamps() {
        var rng = SplitMix64(mixing: 1)
        var aug = Augmentations.none
        aug.flipAxes = [0, 1]
        for _ in 0 ..< 20 {
            var label = (0 ..< 30).map { UInt8($0 % 4) }
            var image = label.map(Float.init) + [Float](repeating: 2, count: 30)  // channel 0 mirrors the label
            _ = aug.apply(image: &image, label: &label, channels: 2, height: 5, width: 6, rng: &rng)
            #expect(Array(image[0 ..< 30]) == label.map(Float.init))
        }
        var contrast = Augmentations.none
        contrast.contrast = true
        var seen = 0
        for _ in 0 ..< 200 {
            var label = [UInt8](repeating: 0, count: 4)
            var image: [Float] = [-1, 0.5, 2, 3]
            if contrast.apply(image: &image, label: &label, channels: 1, height: 2, width: 2, rng: &rng).contains(.contrast) {
                seen += 1
                #expect(image.allSatisfy { $0 >= -1 && $0 <= 3 })
            }
        }
        #expect(seen > 10)
    }
}
