import Engine
import Foundation
import Testing
@testable import MedicalImaging
@testable import NeuralNet
@testable import Segmentation

/// Writes `tiny`'s first `channels` channels as one 4D NIfTI at `path` (its folder created), with `header`'s geometry.
private func writeImage(_ tiny: TinyCase, like header: NiftiHeader, channels: Int = 4, to path: String) throws {
    try FileManager.default.createDirectory(atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path, withIntermediateDirectories: true)
    try NiftiImage(shape: tiny.shape + [channels], voxels: .float32(tiny.channels.prefix(channels).flatMap { $0 }), like: header).write(to: path)
}

@Suite struct PredictorTests {
    @Test func windowsCoverTheVolume() {
        #expect(Predictor.windowStarts(128, 128, overlap: 0.5) == [0])
        #expect(Predictor.windowStarts(167, 128, overlap: 0.5) == [0, 39])
        #expect(Predictor.windowStarts(300, 128, overlap: 0.5) == [0, 57, 115, 172])
        let g = Predictor.gaussian([8, 8, 8])
        #expect(g.max()! <= 1 && g.min()! > 0 && g[(4 * 8 + 4) * 8 + 4] > g[0])
        let v: [Float] = (0 ..< 24).map(Float.init)
        #expect(Predictor.flip(Predictor.flip(v, dims: [1, 2, 3, 4], axes: [2, 3]), dims: [1, 2, 3, 4], axes: [2, 3]) == v)
        #expect(Predictor.flip(v, dims: [1, 1, 2, 12], axes: [3])[0] == 11)
    }

    /// A 4D Decathlon-style file and nnU-Net channel files give a label file on the input's exact grid
    /// (shape, affine, codes), in 2D and 3D, with and without test-time flips.
    @Test(arguments: [2, 3])
    func outputHasTheInputsGeometry(dimension: Int) throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let tiny = TinyCase(seed: 9)
        var reference = NiftiHeader()
        reference.shape = tiny.shape
        reference.setAffine(Affine(rows: [[-1.2, 0, 0, 90], [0, -0.9, 0, 100], [0, 0, 2, -50], [0, 0, 0, 1]]))
        try writeImage(tiny, like: reference, to: folder + "/in/CASE_A.nii.gz")
        var config = UNetConfig(dimension: dimension, depth: 3, filterCap: 16, residual: dimension == 2, norm: dimension == 2 ? .batch : .instance)
        config.filters = [8, 8, 16]
        let net = try UNet(config: config)
        var options = Predictor.Options()
        options.patch3D = [64, 64, 64]
        options.testTimeAugmentation = dimension == 2
        options.convention = .brats
        options.saveProbabilities = true
        options.png = true
        let times = try Predictor.run(networks: [net], input: folder + "/in", output: folder + "/out", options: options)
        #expect(times.count == 1)
        let out = try NiftiImage.read(folder + "/out/CASE_A.nii.gz")
        #expect(out.shape == tiny.shape)
        #expect(out.header.datatype == .uint8)
        for i in 0 ..< 4 { for j in 0 ..< 4 { #expect(abs(out.affine.rows[i][j] - reference.affine.rows[i][j]) < 1e-5) } }
        #expect(out.affine.orientation == "LPS")
        let values = Set(out.floatValues())
        #expect(values.isSubset(of: [0, 1, 2, 4]), "BraTS values expected, got \(values)")
        // Background outside the brain box stays 0 (restored from the crop).
        #expect(out.floatValues()[0] == 0)
        // Probabilities: (X, Y, Z, classes) on the same grid, summing to 1, their argmax the written labels.
        let probabilities = try NiftiImage.read(folder + "/out/CASE_A_probabilities.nii.gz")
        #expect(probabilities.shape == tiny.shape + [4] && probabilities.header.datatype == .float32)
        let p = probabilities.floatValues(), labels = out.floatValues().map { LabelConvention.brats.trainingClass(of: Int($0)) ?? 9 }
        let v = labels.count
        var agree = 0
        for g in 0 ..< v {
            let row = (0 ..< 4).map { p[$0 * v + g] }
            #expect(abs(row.reduce(0, +) - 1) < 1e-4)
            if row.indices.max(by: { row[$0] < row[$1] }) == Int(labels[g]) { agree += 1 }
        }
        #expect(agree == v)
        let png = try Data(contentsOf: URL(fileURLWithPath: folder + "/out/CASE_A.png"))
        #expect(png.prefix(4) == Data([0x89, 0x50, 0x4E, 0x47]))
        // Existing outputs are not replaced.
        #expect(throws: SegmentationError.self) { try Predictor.run(networks: [net], input: folder + "/in", output: folder + "/out", options: options) }
    }

    /// 2D prediction sees whole slices, not the training crop (192 x 160): a brain 200 voxels wide is predicted to
    /// its edges (a cropped-off voxel would get background probability exactly 1).
    @Test func twoDPredictionCoversABrainWiderThanTheTrainingCrop() throws {
        let (X, Y, Z) = (200, 120, 2)
        var rng = SplitMix64(mixing: 5)
        var image = [Float](repeating: 0, count: 4 * X * Y * Z)
        for i in image.indices { image[i] = Float(rng.uniform(1, 2)) }  // nonzero everywhere: the box is the whole slice
        var config = UNetConfig(dimension: 2, depth: 3, filterCap: 16, residual: true, norm: .batch)
        config.filters = [8, 8, 16]
        let net = try UNet(config: config)
        let loaded = LoadedCase(id: "WIDE", shape: [X, Y, Z], channels: (0 ..< 4).map { Array(image[$0 * X * Y * Z ..< ($0 + 1) * X * Y * Z]) },
                                label: nil, header: { var h = NiftiHeader(); h.shape = [X, Y, Z]; return h }())
        let (labels, probabilities) = try Predictor.segment(loaded, networks: [net], options: Predictor.Options(), probabilities: true)
        #expect(labels.count == X * Y * Z)
        let background = probabilities![0]
        // x = 0 and x = 199 lie outside a 160-wide centre crop of 200.
        for x in [0, 5, X - 1] { #expect(background[(Y / 2) * X + x] < 1, "voxel x = \(x) was not predicted") }
    }

    /// A case on another grid is resampled to the model's spacing, predicted, and its probabilities brought back:
    /// the output is on the case's own grid. Resampling itself: a linear ramp survives up- and down-sampling.
    @Test func predictingAtTheModelsSpacingReturnsToTheCasesGrid() throws {
        let (X, Y, Z) = (40, 36, 6)
        var header = NiftiHeader()
        header.shape = [X, Y, Z]
        header.setAffine(Affine(rows: [[0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
        var rng = SplitMix64(mixing: 6)
        var channels: [[Float]] = []
        for _ in 0 ..< 4 {
            var c = [Float](repeating: 0, count: X * Y * Z)
            for i in c.indices where i % X > 4 && i % X < 35 { c[i] = Float(rng.uniform(1, 2)) }
            channels.append(c)
        }
        let loaded = LoadedCase(id: "FINE", shape: [X, Y, Z], channels: channels, label: nil, header: header)
        #expect(Resampling.grid(of: loaded, at: [0.505, 0.5, 1]) == nil)
        #expect(Resampling.grid(of: loaded, at: [1, 1, 1]) == [20, 18, 6])
        let coarse = Resampling.resample(loaded, to: [20, 18, 6])
        #expect(coarse.header.spacing.map { ($0 * 1000).rounded() / 1000 } == [1, 1, 1])
        #expect(coarse.channels[0][0] == 0)  // outside the brain stays exactly zero
        var config = UNetConfig(dimension: 2, depth: 3, filterCap: 16, residual: true, norm: .batch)
        config.filters = [8, 8, 16]
        var options = Predictor.Options()
        options.spacing = [1, 1, 1]
        let (labels, probabilities) = try Predictor.segment(loaded, networks: [try UNet(config: config)], options: options, probabilities: true)
        #expect(labels.count == X * Y * Z && probabilities!.count == 4 && probabilities![0].count == X * Y * Z)
        let ramp = (0 ..< 30 * 8 * 3).map { Float($0 % 30) }
        let up = Resampling.trilinear(ramp, from: [30, 8, 3], to: [60, 8, 3])
        let down = Resampling.trilinear(up, from: [60, 8, 3], to: [30, 8, 3])
        #expect(zip(down, ramp).allSatisfy { abs($0 - $1) < 1e-4 || $1 == 0 || $1 == 29 })
    }

    /// An ensemble's probabilities are the mean of its members' (2D and 3D, with TTA in 2D); members that
    /// disagree on classes are refused.
    @Test(arguments: [2, 3])
    func ensembleAveragesProbabilities(dimension: Int) throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let tiny = TinyCase(seed: 5)
        var header = NiftiHeader()
        header.shape = tiny.shape
        try writeImage(tiny, like: header, to: folder + "/in/CASE_B.nii.gz")
        var config = UNetConfig(dimension: dimension, depth: 3, filterCap: 16, residual: false, norm: .instance)
        config.filters = [4, 8, 8]
        let a = try UNet(config: config), b = try UNet(config: config)
        a.initialize(seed: 1)
        b.initialize(seed: 2)
        var options = Predictor.Options()
        options.patch3D = [64, 64, 64]
        options.testTimeAugmentation = dimension == 2
        options.saveProbabilities = true
        func probabilities(_ networks: [UNet], _ name: String) throws -> [Float] {
            _ = try Predictor.run(networks: networks, input: folder + "/in", output: folder + "/" + name, options: options)
            return try NiftiImage.read(folder + "/\(name)/CASE_B_probabilities.nii.gz").floatValues()
        }
        let (pa, pb, both) = (try probabilities([a], "a"), try probabilities([b], "b"), try probabilities([a, b], "ab"))
        #expect(pa != pb)
        var worst: Float = 0
        for i in both.indices { worst = max(worst, abs(both[i] - (pa[i] + pb[i]) / 2)) }
        #expect(worst <= 1e-5, "ensemble differs from the mean by \(worst)")
        var other = config
        other.classes = 3
        #expect(throws: SegmentationError.self) { try Predictor.checkEnsemble([a, try UNet(config: other)]) }
        // A run that fails on a case (2 channels for a 4-channel model) leaves no output folder behind.
        try writeImage(tiny, like: header, channels: 2, to: folder + "/bad/CASE_C.nii.gz")
        #expect(throws: SegmentationError.self) { try Predictor.run(networks: [a], input: folder + "/bad", output: folder + "/failed", options: options) }
        #expect(!FileManager.default.fileExists(atPath: folder + "/failed"))
    }
}
