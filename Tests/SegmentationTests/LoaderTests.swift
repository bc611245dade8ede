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
        let loader = try TrainingLoader(folder: folder + "/pre", ids: ids, augmentations: Augmentations(), seed: 3)
        #expect(loader.channels == 4 && loader.sampleShape == [16, 12])
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
        let loader = try TrainingLoader(folder: folder + "/pre", ids: ids, augmentations: aug, seed: 5)
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

    /// 3D: patches of the requested size inside the volume; foreground patches contain tumour; a volume smaller
    /// than the patch is refused with the file named.
    @Test func patchesIn3D() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let ids = (1 ... 3).map { String(format: "BRATS_%03d", $0) }
        try TinyCase(seed: 12).writeDecathlon(folder + "/raw", ids: ids)
        var options = PreprocessOptions(dim: 3)
        options.minimum3D = [8, 8, 8]
        _ = try Preprocessing.run(dataset: try Dataset.open(folder + "/raw"), folder: folder + "/pre", options: options)
        var aug = Augmentations.nvidia3D
        aug.foregroundProbability = 1
        aug.zoom = true
        let loader = try TrainingLoader(folder: folder + "/pre", ids: ids, patch: [6, 8, 8], augmentations: aug, seed: 2)
        #expect(loader.dimension == 3 && loader.sampleShape == [6, 8, 8])
        var zoomed = 0
        for k in 0 ..< 100 {
            let s = loader.sample(case: k % 3, epoch: k, position: 1)
            #expect(s.image.count == 4 * 6 * 8 * 8 && s.label.count == 6 * 8 * 8)
            #expect(s.applied.contains(.foreground) && s.label.contains { $0 > 0 })
            if s.applied.contains(.zoom) { zoomed += 1 }
        }
        #expect(zoomed > 3 && zoomed < 35, "zoom applied \(zoomed) of 100 times")
        let (x, y) = try loader.batch(epoch: 0, step: 0, size: 2)
        #expect(x.dims == [2, 4, 6, 8, 8] && y.dims == [2, 1, 6, 8, 8])
        #expect(throws: SegmentationError.self) {
            try TrainingLoader(folder: folder + "/pre", ids: ids, patch: [64, 8, 8], augmentations: aug, seed: 2)
        }
    }

    /// Flips on every axis of a 3D sample keep image and label aligned, and blur keeps a constant image constant.
    @Test func threeDimensionalFlipsAndBlur() {
        var rng = SplitMix64(mixing: 4)
        var aug = Augmentations.none
        aug.flipAxes = [0, 1, 2]
        aug.blur = true
        let spatial = [3, 4, 5], n = 60
        var flipped = 0
        for _ in 0 ..< 40 {
            var label = (0 ..< n).map { UInt8($0 % 7) }
            var image = label.map(Float.init) + [Float](repeating: 2, count: n)
            let applied = aug.apply(image: &image, label: &label, channels: 2, spatial: spatial, rng: &rng)
            if applied.contains(.flip) { flipped += 1 }
            if !applied.contains(.blur) { #expect(Array(image[0 ..< n]) == label.map(Float.init)) }
            #expect(image[n...].allSatisfy { abs($0 - 2) < 1e-5 })
        }
        #expect(flipped > 25)
        // A flip of axis 1 maps (z, y, x) to (z, 3 - y, x), in the image's channels and the label alike.
        var label = (0 ..< n).map { UInt8($0) }, image = (0 ..< 2 * n).map(Float.init)
        Augmentations.flip(image: &image, label: &label, channels: 2, spatial: spatial, axis: 1)
        #expect(label[(1 * 4 + 0) * 5 + 2] == UInt8((1 * 4 + 3) * 5 + 2))
        #expect(image[n + (1 * 4 + 0) * 5 + 2] == Float(n + (1 * 4 + 3) * 5 + 2))
        // Blur keeps a constant, contrast clamps to the sample's range, brightness scales.
        var constant = [Float](repeating: 2, count: 2 * n)
        Augmentations.blur(&constant, channels: 2, spatial: spatial, sigma: 1)
        #expect(constant.allSatisfy { abs($0 - 2) < 1e-5 })
        var ramp: [Float] = [-1, 0, 0.5, 1]
        Augmentations.contrast(&ramp, by: 1.5)
        #expect(ramp == [-1, 0, 0.75, 1])
        Augmentations.scale(&ramp, by: 2)
        #expect(ramp == [-2, 0, 1.5, 2])
    }

    /// Zoom: the centred box resized back; cubic reproduces a linear ramp inside, the label takes nearest values,
    /// a constant stays constant.
    @Test func zoomResizesTheCentredBox() {
        var image = (0 ..< 20).map(Float.init), label = (0 ..< 20).map { UInt8($0) }
        Resampling.zoom(image: &image, label: &label, channels: 1, spatial: [20], scale: 0.5)
        // Box [5, 15) to 20 voxels: out i samples 5 + (i + 0.5) / 2 - 0.5.
        for i in 3 ..< 17 {
            let expected: Float = 5 + (Float(i) + 0.5) / 2 - 0.5
            #expect(abs(image[i] - expected) < 1e-4, "voxel \(i): \(image[i])")
        }
        let nearest: [UInt8] = (0 ..< 20).map { (i: Int) -> UInt8 in UInt8(5 + i / 2) }
        #expect(label == nearest)
        var constant = [Float](repeating: 3, count: 2 * 6 * 7), l = [UInt8](repeating: 1, count: 42)
        Resampling.zoom(image: &constant, label: &l, channels: 2, spatial: [6, 7], scale: 0.7)
        #expect(constant.allSatisfy { abs($0 - 3) < 1e-5 } && l.allSatisfy { $0 == 1 })
    }
}
