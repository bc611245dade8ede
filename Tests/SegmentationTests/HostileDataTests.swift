import FileSupport
import Foundation
import MedicalImaging
import NeuralNet
import Testing
@testable import Segmentation

/// The hostile inputs of issue 14, one test each: a clear error naming the case or file, or a documented
/// handling (README, "Hostile data").
@Suite struct HostileDataTests {
    let ids = ["BRATS_001", "BRATS_002", "BRATS_003"]

    /// A Decathlon dataset of tiny cases under `folder`, the first one changed by `change` (image, label) first.
    func dataset(_ folder: String, tiny: TinyCase = TinyCase(seed: 4), change: (inout NiftiImage, inout NiftiImage) throws -> Void = { _, _ in }) throws -> Dataset {
        try tiny.writeDecathlon(folder, ids: ids)
        var image = try NiftiImage.read(folder + "/imagesTr/BRATS_001.nii.gz")
        var label = try NiftiImage.read(folder + "/labelsTr/BRATS_001.nii.gz")
        try change(&image, &label)
        try image.write(to: folder + "/imagesTr/BRATS_001.nii.gz")
        try label.write(to: folder + "/labelsTr/BRATS_001.nii.gz")
        return try Dataset.open(folder)
    }

    func preprocess(_ d: Dataset, _ folder: String, dim: Int) throws -> Preprocessing.Summary {
        var o = PreprocessOptions(dim: dim)
        (o.patch2D, o.minimum3D) = ([16, 12], [16, 16, 16])
        return try Preprocessing.run(dataset: d, folder: folder, options: o)
    }

    func meta(_ folder: String, _ id: String) throws -> CaseMeta {
        try JSONDecoder().decode(CaseMeta.self, from: Data(contentsOf: URL(fileURLWithPath: Preprocessing.files(folder, id).meta)))
    }

    /// `body` throws an error whose text contains every one of `words`.
    func expectError(_ words: [String], _ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            try body()
            Issue.record("no error; expected one mentioning \(words)", sourceLocation: sourceLocation)
        } catch {
            let text = "\(error)"
            #expect(words.allSatisfy { text.contains($0) }, "\(text)", sourceLocation: sourceLocation)
        }
    }

    @Test func nanAndInfiniteVoxelsAreRefusedNamingTheCaseAndChannel() throws {
        for bad in [Float.nan, .infinity] {
            let folder = try temporaryFolder("nan\(bad)")
            defer { removeTemporary(folder) }
            let d = try dataset(folder + "/raw") { image, _ in
                var v = image.floatValues()
                v[v.count - 100] = bad  // channel 3
                image = try NiftiImage(shape: image.shape, voxels: .float32(v), like: image.header)
            }
            expectError(["BRATS_001", "channel 3", "NaN or infinite"]) { _ = try preprocess(d, folder + "/pre", dim: 2) }
        }
    }

    @Test func anAllZeroChannelBecomesZerosNotNaN() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        var tiny = TinyCase(seed: 4)
        tiny.channels[2] = [Float](repeating: 0, count: tiny.channels[2].count)
        let d = try dataset(folder + "/raw", tiny: tiny)
        _ = try preprocess(d, folder + "/pre", dim: 2)
        let m = try meta(folder + "/pre", "BRATS_001")
        #expect(m.mean[2] == 0 && m.std[2] == 1)
        let x = try Npy.read(Preprocessing.files(folder + "/pre", "BRATS_001").image)
        guard case let .float32(v) = x.values else { Issue.record("not float32"); return }
        let plane = v.count / 4
        #expect(v.allSatisfy { $0.isFinite } && v[2 * plane ..< 3 * plane].allSatisfy { $0 == 0 })
    }

    @Test func noTumourAnywhereTrainsOnRandomCrops() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        var tiny = TinyCase(seed: 4)
        tiny.label = [UInt8](repeating: 0, count: tiny.label.count)
        let d = try dataset(folder + "/raw", tiny: tiny)
        _ = try preprocess(d, folder + "/pre", dim: 2)
        let loader = try TrainingLoader(folder: folder + "/pre", ids: ids, augmentations: Augmentations(), seed: 1)
        let (x, y) = try loader.batch(epoch: 0, step: 0, size: 4)
        #expect(x.dims == [4, 4, 16, 12] && y.values.allSatisfy { $0 == 0 })
    }

    @Test func labelsOutsideTheDeclaredSetAreRefused() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let d = try dataset(folder + "/raw") { _, label in
            var v = label.floatValues().map { UInt8($0) }
            v[v.firstIndex(of: 1)!] = 5
            label = try NiftiImage(shape: label.shape, voxels: .uint8(v), like: label.header)
        }
        expectError(["BRATS_001", "[5]"]) { _ = try d.load(d.training[0]) }
    }

    @Test func volumesSmallerThanTheCropOrPatchArePadded() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let d = try dataset(folder + "/raw")  // 20 x 18 x 10 voxels, brain box 14 x 11 x 7
        _ = try preprocess(d, folder + "/pre2", dim: 2)
        _ = try preprocess(d, folder + "/pre3", dim: 3)
        #expect(try meta(folder + "/pre2", "BRATS_001").shape == [4, 7, 16, 12])
        #expect(try meta(folder + "/pre3", "BRATS_001").shape == [4, 16, 16, 16])
    }

    @Test func aSingleSliceVolumeIsOneSliceIn2DAndPaddedIn3D() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        var tiny = TinyCase(seed: 4)
        let (X, Y) = (tiny.shape[0], tiny.shape[1])
        tiny.channels = tiny.channels.map { Array($0[5 * X * Y ..< 6 * X * Y]) }  // slice z = 5 (inside the box and the tumour)
        tiny.label = Array(tiny.label[5 * X * Y ..< 6 * X * Y])
        tiny.shape = [X, Y, 1]
        let d = try dataset(folder + "/raw", tiny: tiny)
        _ = try preprocess(d, folder + "/pre2", dim: 2)
        _ = try preprocess(d, folder + "/pre3", dim: 3)
        #expect(try meta(folder + "/pre2", "BRATS_001").shape == [4, 1, 16, 12])
        #expect(try meta(folder + "/pre3", "BRATS_001").shape == [4, 16, 16, 16])
    }

    @Test func twoDimensionalAndFiveDimensionalImagesAreRefused() throws {
        for shape in [[20, 18], [20, 18, 10, 2, 4]] {
            let folder = try temporaryFolder("dims\(shape.count)")
            defer { removeTemporary(folder) }
            let d = try dataset(folder + "/raw") { image, _ in
                image = try NiftiImage(shape: shape, voxels: .float32([Float](repeating: 1, count: shape.reduce(1, *))))
            }
            expectError(["BRATS_001.nii.gz", "shape \(shape)", "expected X x Y x Z x 4"]) { _ = try d.load(d.training[0]) }
        }
    }

    @Test func anisotropicSpacingIsKeptAndPredictionsKeepTheGrid() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let affine = Affine(rows: [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 5, 0], [0, 0, 0, 1]])
        let d = try dataset(folder + "/raw") { image, label in
            image.header.setAffine(affine)
            label.header.setAffine(affine)
        }
        _ = try preprocess(d, folder + "/pre", dim: 2)
        #expect(try meta(folder + "/pre", "BRATS_001").spacing == [1, 1, 5])
    }

    @Test func aDatasetJSONThatMiscountsIsRefused() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        try TinyCase(seed: 4).writeDecathlon(folder, ids: ids)
        let path = folder + "/dataset.json"
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        json["numTraining"] = 10
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
        expectError(["numTraining 10", "3 cases"]) { _ = try Dataset.open(folder) }
    }

    @Test func aLabelOnAnotherGridIsRefused() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let d = try dataset(folder + "/raw") { _, label in
            label.header.setAffine(Affine(rows: [[1, 0, 0, 2], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
        }
        expectError(["BRATS_001.nii.gz", "affine differs from the image's"]) { _ = try d.load(d.training[0]) }
    }

    @Test func preprocessedFilesTruncatedOrOfTheWrongTypeAreRefusedNamingTheFile() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        _ = try preprocess(try dataset(folder + "/raw"), folder + "/pre", dim: 2)
        let path = Preprocessing.files(folder + "/pre", "BRATS_002").image
        let good = try Data(contentsOf: URL(fileURLWithPath: path))
        try good.prefix(good.count - 64).write(to: URL(fileURLWithPath: path))
        expectError(["BRATS_002_x.npy"]) { _ = try TrainingLoader(folder: folder + "/pre", ids: ids, augmentations: Augmentations(), seed: 1) }
        let x = try Npy.read(Preprocessing.files(folder + "/pre", "BRATS_001").image)
        guard case let .float32(v) = x.values else { Issue.record("not float32"); return }
        try Npy.write(try NpyArray(shape: x.shape, values: .float64(v.map(Double.init))), to: path)
        expectError(["BRATS_002_x.npy", "float32"]) { _ = try TrainingLoader(folder: folder + "/pre", ids: ids, augmentations: Augmentations(), seed: 1) }
    }

    @Test func aCheckpointOfAnotherNetworkIsRefusedOnResume() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        try TinyCase(seed: 4).writeDecathlon(folder + "/raw", ids: (1 ... 5).map { String(format: "BRATS_%03d", $0) })  // folds need 5
        _ = try preprocess(try Dataset.open(folder + "/raw"), folder + "/pre", dim: 2)
        var config = UNetConfig(dimension: 2, depth: 3, filterCap: 16, residual: true, norm: .batch)
        config.filters = [8, 8, 16]
        var options = TrainingOptions(network: config)
        (options.epochs, options.batch) = (1, 2)
        _ = try Trainer(data: folder + "/pre", run: folder + "/run", options: options).train(resume: false)
        // Another network's checkpoint put in the run's place.
        config.filters = [4, 8, 8]
        let other = try UNet(config: config)
        try Checkpoint(step: 1, epoch: 1).save(network: other, optimizer: try Optimizer(.recipe, parameters: other.parameters),
                                               to: folder + "/run/checkpoint_last.safetensors")
        options.epochs = 2
        expectError(["checkpoint_last.safetensors", "network differs"]) {
            _ = try Trainer(data: folder + "/pre", run: folder + "/run", options: options).train(resume: true)
        }
    }
}

/// What a killed writer leaves is removed by the next writer; a running writer's temporary file is kept.
@Suite struct StaleTemporaryFileTests {
    @Test func onlyDeadWritersFilesAreRemoved() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        // pid 2^22 + 1 is above Linux's largest pid (4194304), so no process has it.
        let dead = ".checkpoint_last.safetensors.tmp-4194305-17", live = ".log.jsonl.tmp-\(getpid())-9", other = ".hidden.tmp-note"
        for name in [dead, live, other, "checkpoint_last.safetensors"] { try Data([1]).write(to: URL(fileURLWithPath: folder + "/" + name)) }
        #expect(AtomicFile.removeStale(in: folder) == [dead])
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: folder)) == [live, other, "checkpoint_last.safetensors"])
    }
}
