import Foundation
import Testing
@testable import MedicalImaging
@testable import Segmentation

@Suite struct DatasetTests {
    @Test func detectsBothLayoutsAndReadsTheSameCase() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let tiny = TinyCase(seed: 1)
        try tiny.writeDecathlon(folder + "/msd", ids: ["BRATS_001", "BRATS_002"])
        try tiny.writeNNUNet(folder + "/nnunet", ids: ["BRATS_001", "BRATS_002"])
        let msd = try Dataset.open(folder + "/msd")
        let nn = try Dataset.open(folder + "/nnunet")
        #expect(msd.layout == .decathlon && nn.layout == .nnUNet)
        #expect(msd.training.map(\.id) == ["BRATS_001", "BRATS_002"])  // the ._ entry is ignored
        #expect(nn.training.map(\.id) == ["BRATS_001", "BRATS_002"])
        #expect(msd.channelNames.count == 4 && nn.channelNames.count == 4)
        let a = try msd.load(msd.training[0]), b = try nn.load(nn.training[0])
        #expect(a.shape == [20, 18, 10] && b.shape == a.shape)
        #expect(a.channels == tiny.channels && b.channels == tiny.channels)
        #expect(a.label == tiny.label && b.label == tiny.label)
    }

    @Test func bratsLabelsAreMappedInAndBack() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let tiny = TinyCase(seed: 2)
        // Store the BraTS values for the classes: edema 2, necrosis 1, enhancing 4.
        try tiny.writeDecathlon(folder, ids: ["BRATS_001"], labels: ["0": "background", "1": "NCR", "2": "ED", "4": "ET"],
                                store: { [0, 2, 1, 4][Int($0)] })
        let dataset = try Dataset.open(folder)
        #expect(dataset.convention == .brats)
        #expect(try dataset.load(dataset.training[0]).label == tiny.label)
        for c in UInt8(0) ... 3 { #expect(LabelConvention.brats.trainingClass(of: Int(LabelConvention.brats.storedValue(of: c))) == c) }
    }

    /// Found by fuzzing (scripts/fuzz.sh dataset): an empty dataset.json leaked Foundation's read buffer. It, text
    /// that is not JSON, and a file past the size limit each give one clear problem.
    @Test func emptyOrHostileDatasetJSON() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let path = folder + "/dataset.json"
        for (content, expected) in [(Data(), "not valid JSON"), (Data("{\"modality\": [".utf8), "not valid JSON"),
                                    (Data(repeating: 0x20, count: (64 << 20) + 1), "more than the")] {
            try content.write(to: URL(fileURLWithPath: path))
            do {
                _ = try Dataset.open(folder)
                Issue.record("dataset.json of \(content.count) bytes opened")
            } catch let ImagingError.invalidDataset(_, problems) {
                #expect(problems.count == 1 && problems[0].contains(expected), "\(problems)")
            }
        }
    }

    /// One clear message per problem, naming the file.
    @Test func reportsEveryProblem() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let tiny = TinyCase(seed: 3)
        try tiny.writeDecathlon(folder, ids: ["BRATS_001", "BRATS_002", "BRATS_003"])
        try FileManager.default.removeItem(atPath: folder + "/labelsTr/BRATS_002.nii.gz")
        do {
            _ = try Dataset.open(folder)
            Issue.record("missing label not reported")
        } catch let ImagingError.invalidDataset(_, problems) {
            #expect(problems.count == 1 && problems[0].contains("labelsTr/BRATS_002.nii.gz"), "\(problems)")
        }
        // Restore it with the wrong shape, and give case 3 an undeclared label value and 3 channels.
        try NiftiImage(shape: [20, 18, 9], voxels: .uint8([UInt8](repeating: 0, count: 20 * 18 * 9))).write(to: folder + "/labelsTr/BRATS_002.nii.gz")
        var bad = tiny.label
        bad[bad.firstIndex(of: 1)!] = 7
        try FileManager.default.removeItem(atPath: folder + "/labelsTr/BRATS_003.nii.gz")
        try NiftiImage(shape: tiny.shape, voxels: .uint8(bad)).write(to: folder + "/labelsTr/BRATS_003.nii.gz")
        let dataset = try Dataset.open(folder)
        #expect(throws: ImagingError.self) { try dataset.load(dataset.training[1]) }
        do {
            _ = try dataset.load(dataset.training[1])
        } catch let ImagingError.invalidDataset(_, problems) {
            #expect(problems.count == 1 && problems[0].contains("20, 18, 9") && problems[0].contains("BRATS_002"), "\(problems)")
        }
        do {
            _ = try dataset.load(dataset.training[2])
            Issue.record("undeclared label not reported")
        } catch let ImagingError.invalidDataset(_, problems) {
            #expect(problems.count == 1 && problems[0].contains("[7]"), "\(problems)")
        }
        try FileManager.default.removeItem(atPath: folder + "/imagesTr/BRATS_001.nii.gz")
        try NiftiImage(shape: tiny.shape + [3], voxels: .float32(tiny.channels.prefix(3).flatMap { $0 })).write(to: folder + "/imagesTr/BRATS_001.nii.gz")
        do {
            _ = try dataset.load(dataset.training[0])
            Issue.record("channel count not reported")
        } catch let ImagingError.invalidDataset(_, problems) {
            #expect(problems.count == 1 && problems[0].contains("3 channels"), "\(problems)")
        }
    }
}

@Suite struct PreprocessTests {
    private func loaded(_ tiny: TinyCase) -> LoadedCase {
        var header = NiftiHeader()
        header.shape = tiny.shape
        header.setAffine(.identity)
        return LoadedCase(id: "T", shape: tiny.shape, channels: tiny.channels, label: tiny.label, header: header)
    }

    /// Crop box = the positive region; background stays 0; each channel has mean 0 and variance 1 inside.
    @Test(arguments: [2, 3])
    func invariants(dim: Int) throws {
        let tiny = TinyCase(seed: 4)
        var options = PreprocessOptions(dim: dim)
        options.patch2D = [16, 12]  // crops H = 11 -> pads to 16, W = 14 -> crops to 12
        options.minimum3D = [8, 16, 16]
        let p = try Preprocessing.transform(loaded(tiny), options: options, channelNames: ["a", "b", "c", "d"], convention: .decathlon)
        // (D, H, W) = (Z, Y, X).
        #expect(p.meta.cropBox == [[2, 9], [4, 15], [3, 17]])
        let final = dim == 2 ? [7, 16, 12] : [8, 16, 16]
        #expect(p.meta.shape == [4] + final)
        #expect(p.image.count == 4 * final.reduce(1, *))
        let volume = final.reduce(1, *)
        for c in 0 ..< 4 {
            let values = p.image[c * volume ..< (c + 1) * volume].filter { $0 != 0 }
            let mean = values.reduce(0.0) { $0 + Double($1) } / Double(values.count)
            let variance = values.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(values.count)
            // In 2D the centre crop drops some columns, so the kept voxels are only close to unit variance.
            #expect(abs(mean) < (dim == 3 ? 1e-5 : 0.2) && abs(variance - 1) < (dim == 3 ? 1e-4 : 0.2), "channel \(c): \(mean) \(variance)")
            // Padding is exactly zero: voxels before the first kept row.
            #expect(p.image[c * volume] == 0)
        }
        // The label survives the round trip through restore wherever the grid kept it.
        let back = try Preprocessing.restore(p.label!, meta: p.meta, fill: 0)
        #expect(back.count == tiny.label.count)
        if dim == 3 {
            #expect(back == tiny.label)
        } else {
            // W cropped from 14 to 12 starting at 14/2 - 12/2 = 1: x = 3 and x = 16 are dropped.
            for i in 0 ..< back.count where i % 20 != 3 && i % 20 != 16 { #expect(back[i] == tiny.label[i]) }
        }
        #expect(p.meta.padding[0] == [0, 0] || dim == 3)
        if dim == 2 { #expect(p.meta.padding[1] == [2, 3] && p.meta.padding[2] == [-1, -1]) }
    }

    @Test func emptyImageIsAnError() throws {
        var tiny = TinyCase(seed: 5)
        tiny.channels = tiny.channels.map { $0.map { _ in 0 } }
        #expect(throws: SegmentationError.self) {
            try Preprocessing.transform(loaded(tiny), options: PreprocessOptions(dim: 3), channelNames: [], convention: .decathlon)
        }
    }

    /// The folder command: files named as Composer reads them, meta JSON, splits.json once, skip when done.
    @Test func runWritesComposerFilesAndSkipsFinishedCases() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let ids = (1 ... 6).map { String(format: "BRATS_%03d", $0) }
        try TinyCase(seed: 6).writeDecathlon(folder + "/raw", ids: ids)
        let dataset = try Dataset.open(folder + "/raw")
        var options = PreprocessOptions(dim: 3)
        options.minimum3D = [8, 16, 16]
        let first = try Preprocessing.run(dataset: dataset, folder: folder + "/pre", options: options)
        #expect(first.processed == ids && first.skipped.isEmpty)
        let x = try Npy.read(folder + "/pre/BRATS_001_x.npy"), y = try Npy.read(folder + "/pre/BRATS_001_y.npy")
        #expect(x.shape == [4, 8, 16, 16] && !x.fortranOrder && x.values.datatype == .float32)
        #expect(y.shape == [1, 8, 16, 16] && y.values.datatype == .uint8)
        let meta = try JSONDecoder().decode(CaseMeta.self, from: Data(contentsOf: URL(fileURLWithPath: folder + "/pre/BRATS_001_meta.json")))
        #expect(meta.originalShape == [10, 18, 20] && meta.niftiShape == [20, 18, 10, 4])
        let splits = try Data(contentsOf: URL(fileURLWithPath: folder + "/pre/splits.json"))
        #expect(first.splits?.folds.count == 5)
        let second = try Preprocessing.run(dataset: dataset, folder: folder + "/pre", options: options)
        #expect(second.processed.isEmpty && second.skipped == ids)
        #expect(try Data(contentsOf: URL(fileURLWithPath: folder + "/pre/splits.json")) == splits)
        // Another configuration into the same folder is refused rather than mixed.
        #expect(throws: SegmentationError.self) { try Preprocessing.run(dataset: dataset, folder: folder + "/pre", options: PreprocessOptions(dim: 2)) }
    }
}

@Suite struct PhantomTests {
    /// Label statistics and contrasts of the procedural phantom on a small grid.
    @Test func labelsAndContrastsArePlausible() throws {
        let anatomy = Anatomy.procedural(shape: [96, 96, 62])
        let generator = PhantomGenerator(anatomy: anatomy)
        let n = 96 * 96 * 62
        var withRim = 0
        for seed in UInt64(1) ... 4 {
            let c = generator.generate(seed: seed)
            #expect(c.image.count == 4 * n && c.label.count == n)
            #expect(c.lesions.count >= 1 && c.lesions.count <= 2)
            #expect(c.labelCounts.reduce(0, +) == n)
            #expect(c.labelCounts[1] > 0 && c.labelCounts[2] > 0, "edema and core present: \(c.labelCounts)")
            if c.labelCounts[3] > 0 { withRim += 1 }
            // Labels only inside the brain; background exactly 0.
            for i in 0 ..< n where c.label[i] > 0 { #expect(c.image[n + i] > 0); if c.image[n + i] <= 0 { break } }
            #expect(c.image[0] == 0)
            func mean(_ channel: Int, _ label: UInt8) -> Float {
                var s: Float = 0, k: Float = 0
                for i in 0 ..< n where c.label[i] == label && c.image[channel * n + i] > 0 { s += c.image[channel * n + i]; k += 1 }
                return k > 0 ? s / k : .nan
            }
            // FLAIR (0): edema brighter than healthy brain. T1 (1): core darker than healthy. T1gd (2): rim brightest.
            #expect(mean(0, 1) > 1.3 * mean(0, 0))
            #expect(mean(1, 2) < 0.8 * mean(1, 0))
            if c.labelCounts[3] > 50 { #expect(mean(2, 3) > 1.2 * mean(2, 0) && mean(2, 3) > mean(2, 1)) }
        }
        #expect(withRim >= 1)
        // Reproducible from the seed; different seeds differ.
        #expect(generator.generate(seed: 7).label == generator.generate(seed: 7).label)
        #expect(generator.generate(seed: 7).image != generator.generate(seed: 8).image)
    }
}
