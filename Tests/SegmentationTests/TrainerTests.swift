import Foundation
import Testing
@testable import MedicalImaging
@testable import NeuralNet
@testable import Segmentation

@Suite(.serialized) struct TrainerTests {
    private func setUp(_ folder: String) throws -> TrainingOptions {
        let ids = (1 ... 5).map { String(format: "BRATS_%03d", $0) }
        try TinyCase(seed: 21).writeDecathlon(folder + "/raw", ids: ids)
        var pre = PreprocessOptions(dim: 2)
        pre.patch2D = [16, 12]
        _ = try Preprocessing.run(dataset: try Dataset.open(folder + "/raw"), folder: folder + "/pre", options: pre)
        var config = UNetConfig(dimension: 2, depth: 3, filterCap: 16, residual: true, norm: .batch)
        config.filters = [8, 8, 16]
        var options = TrainingOptions(network: config)
        options.epochs = 3
        options.batch = 2
        options.optimizer.learningRate = 1e-2
        return options
    }

    /// A run stopped in the middle of epoch 2 and resumed ends with exactly the weights of an uninterrupted
    /// run; the loss falls; checkpoints, log and config are written.
    @Test func stopAndResumeReproduceTheUninterruptedRun() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let options = try setUp(folder)
        var straight: [EpochRecord] = []
        let every = Trainer.Cadence(validateEvery: 1)
        let a = Trainer(data: folder + "/pre", run: folder + "/runA", options: options, cadence: every)
        #expect(try a.train(resume: false) { straight.append($0) } == .finished)
        #expect(straight.count == 3 && straight.allSatisfy { $0.validationDice != nil })
        #expect(straight[2].loss < straight[0].loss, "loss did not fall: \(straight.map(\.loss))")
        for f in ["config.json", "log.jsonl", "checkpoint_last.safetensors", "checkpoint_best.safetensors"] {
            #expect(FileManager.default.fileExists(atPath: folder + "/runA/" + f), "\(f)")
        }

        #expect(try Trainer.preferredCheckpoint(run: folder + "/runA").path.hasSuffix("checkpoint_best.safetensors"))

        let b = Trainer(data: folder + "/pre", run: folder + "/runB", options: options, cadence: every)
        let stopped = try b.train(resume: false, afterStep: { epoch, step, _ in if epoch == 1 && step == 1 { b.requestStop() } })
        #expect(stopped == .stopped(epoch: 1, step: 1))
        // Stopped after training on past its last validation: its newest state is the one to use.
        #expect(try Trainer.preferredCheckpoint(run: folder + "/runB").path.hasSuffix("checkpoint_last.safetensors"))
        #expect(throws: SegmentationError.self) { try Trainer(data: folder + "/pre", run: folder + "/runB", options: options).train(resume: false) }
        var resumed: [EpochRecord] = []
        #expect(try Trainer(data: folder + "/pre", run: folder + "/runB", options: options, cadence: every).train(resume: true) { resumed.append($0) } == .finished)
        #expect(resumed.map(\.epoch) == [2, 3])
        #expect(resumed.last!.loss == straight.last!.loss)
        let (wa, _) = try UNet.load(folder + "/runA/checkpoint_last.safetensors")
        let (wb, _) = try UNet.load(folder + "/runB/checkpoint_last.safetensors")
        for h in wa.parameters.entries.indices { #expect(try wa.parameters.value(h).toArray() == wb.parameters.value(h).toArray()) }
        // Each record says where its time went.
        for r in straight + resumed {
            let t = try #require(r.time)
            #expect(t.training > 0 && t.validation > 0 && t.wall >= t.training + t.validation + t.data)
        }
    }

    /// Validation never changes what is learnt: validating every epoch or only at the end leaves byte-identical
    /// checkpoint_last files (weights, optimizer state, step).
    @Test func trajectoryDoesNotDependOnValidationCadence() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let options = try setUp(folder)
        var often: [EpochRecord] = [], once: [EpochRecord] = []
        _ = try Trainer(data: folder + "/pre", run: folder + "/often", options: options, cadence: .init(validateEvery: 1)).train(resume: false) { often.append($0) }
        _ = try Trainer(data: folder + "/pre", run: folder + "/once", options: options, cadence: .init(validateEvery: 1000)).train(resume: false) { once.append($0) }
        #expect(often.allSatisfy { $0.validationDice != nil })
        #expect(once.map { $0.validationDice != nil } == [false, false, true])
        #expect(often.map(\.loss) == once.map(\.loss))
        let a = try Data(contentsOf: URL(fileURLWithPath: folder + "/often/checkpoint_last.safetensors"))
        let b = try Data(contentsOf: URL(fileURLWithPath: folder + "/once/checkpoint_last.safetensors"))
        #expect(a == b)
    }

    /// The automatic cadence keeps validation and checkpoints within their share of the wall clock (give or take
    /// the one pass whose cost was estimated before it ran), and still validates before the end.
    @Test func automaticCadenceRespectsItsBound() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        var options = try setUp(folder)
        // Long enough that the first progress.png (slow in a debug build, and counted as overhead) leaves room in
        // the share for validations: with 60 epochs and 20% it sometimes left none.
        options.epochs = 150
        let share = 0.3
        var records: [EpochRecord] = []
        _ = try Trainer(data: folder + "/pre", run: folder + "/run", options: options, cadence: .init(overheadShare: share)).train(resume: false) { records.append($0) }
        #expect(records.count == 150 && records.last?.validationDice != nil)
        let before = records.dropLast()
        let validations = before.filter { $0.validationDice != nil }.count
        // How often depends on what a pass costs against an epoch (on a loaded machine cheap passes may run every
        // epoch): the bound below is the property; here only that the run looked at itself before the end.
        #expect(validations >= 1, "validated \(validations) times in 149 epochs")
        let overhead = before.map { ($0.time?.validation ?? 0) + ($0.time?.checkpoint ?? 0) }
        let wall = try #require(before.last?.wallSeconds)
        #expect(overhead.reduce(0, +) <= share * wall + overhead.max()!, "overhead \(overhead.reduce(0, +)) s of \(wall) s")
    }

    /// A second trainer on a folder in use is refused (the first holds its lock); once the lock is released
    /// the folder trains again.
    @Test func oneWriterPerRunFolder() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        var options = try setUp(folder)
        options.epochs = 1
        try FileManager.default.createDirectory(atPath: folder + "/run", withIntermediateDirectories: true)
        var holder: RunLock? = try RunLock(folder: folder + "/run")
        do {
            _ = try Trainer(data: folder + "/pre", run: folder + "/run", options: options).train(resume: false)
            Issue.record("a second writer was let in")
        } catch SegmentationError.runInUse {}
        #expect(holder != nil)
        holder = nil
        #expect(try Trainer(data: folder + "/pre", run: folder + "/run", options: options).train(resume: false) == .finished)
    }

    /// A log whose last line was cut by a kill still reads, and the next record starts on a line of its own.
    @Test func logSurvivesAHalfWrittenLine() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let options = try setUp(folder)
        let trainer = Trainer(data: folder + "/pre", run: folder + "/run", options: options)
        try FileManager.default.createDirectory(atPath: folder + "/run", withIntermediateDirectories: true)
        try trainer.appendToLog(EpochRecord(epoch: 1, step: 2, loss: 1, learningRate: 1e-3, seconds: 1))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: trainer.log))
        handle.seekToEndOfFile()
        handle.write(Data("{\"epoch\":2,\"ste".utf8))
        try handle.close()
        #expect(try Trainer.records(log: trainer.log).map(\.epoch) == [1])
        try trainer.appendToLog(EpochRecord(epoch: 2, step: 4, loss: 1, learningRate: 1e-3, seconds: 1))
        #expect(try Trainer.records(log: trainer.log).map(\.epoch) == [1, 2])
    }
}

@Suite(.serialized) struct Trainer3DTests {
    /// 3D: patches, instance norm, sliding-window validation; the loss falls, and a time budget finishes the run
    /// early with a validated last epoch.
    @Test func threeDimensionalRunTrainsAndValidates() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let ids = (1 ... 5).map { String(format: "BRATS_%03d", $0) }
        try TinyCase(seed: 31).writeDecathlon(folder + "/raw", ids: ids)
        var pre = PreprocessOptions(dim: 3)
        pre.minimum3D = [8, 8, 8]
        _ = try Preprocessing.run(dataset: try Dataset.open(folder + "/raw"), folder: folder + "/pre", options: pre)
        var config = UNetConfig(dimension: 3, depth: 3, filterCap: 16, residual: false, norm: .instance)
        config.filters = [4, 8, 8]
        var options = TrainingOptions(network: config)
        #expect(options.batch == 2 && options.patch == [128, 128, 128] && options.augmentations == .nvidia3D)
        options.patch = [8, 8, 8]
        options.epochs = 6
        options.optimizer.learningRate = 1e-2
        var records: [EpochRecord] = []
        #expect(try Trainer(data: folder + "/pre", run: folder + "/run", options: options, cadence: .init(validateEvery: 1)).train(resume: false) { records.append($0) } == .finished)
        try #require(records.count == 6)
        #expect(records.allSatisfy { $0.validationDice != nil })
        #expect(records[5].loss < records[0].loss, "loss did not fall: \(records.map(\.loss))")
        // A tiny budget: the first epoch passes it, so the run ends there, validated.
        options.timeLimit = 1e-6
        records = []
        #expect(try Trainer(data: folder + "/pre", run: folder + "/timed", options: options).train(resume: false) { records.append($0) } == .finished)
        #expect(records.count == 1 && records[0].validationDice != nil && (records[0].trainingSeconds ?? 0) > 0)
        // A 2D network on 3D patches is refused.
        var wrong = TrainingOptions(network: UNetConfig(dimension: 2, depth: 3, filterCap: 16, residual: true, norm: .batch))
        wrong.patch = [8, 8, 8]
        #expect(throws: SegmentationError.self) { try Trainer(data: folder + "/pre", run: folder + "/wrong", options: wrong).train(resume: false) }
    }
}

@Suite struct ChartTests {
    @Test func progressPictureDrawsEveryPanel() throws {
        let records = (1 ... 6).map { e in
            EpochRecord(epoch: e, step: 2 * e, loss: 3 - 0.3 * Double(e), learningRate: 1e-3, seconds: 1,
                        validationDice: e % 2 == 0 ? Double(10 * e) : nil, classDice: nil,
                        regionDice: e % 2 == 0 ? ["WT": Double(12 * e), "TC": Double(5 * e), "ET": Double(3 * e)] : nil)
        }
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        try Trainer.drawProgress(records, to: folder + "/progress.png")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: folder + "/progress.png"))
        #expect(bytes.prefix(4) == Data([0x89, 0x50, 0x4E, 0x47]))
        // Each panel has its curve: the loss line's colour appears in the first, the WT colour in the second.
        let chart = LineChart(title: "Loss", series: [("loss", [(1, 3), (2, 2), (3, 1)], (30, 90, 200))]).render(width: 200, height: 100)
        #expect(chart.pixels.indices.contains { $0 % 3 == 0 && chart.pixels[$0] == 30 && chart.pixels[$0 + 1] == 90 && chart.pixels[$0 + 2] == 200 })
        #expect(Font.number(0.001) == "1.0E-3" && Font.number(69.123) == "69.1" && Font.number(1234) == "1234")
    }
}

@Suite(.serialized) struct TrainerFailureTests {
    /// A NaN loss stops training with a clear message and writes no checkpoint from the broken state.
    @Test func nanLossStopsTraining() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let ids = (1 ... 5).map { String(format: "BRATS_%03d", $0) }
        try TinyCase(seed: 31).writeDecathlon(folder + "/raw", ids: ids)
        var pre = PreprocessOptions(dim: 2)
        pre.patch2D = [16, 12]
        _ = try Preprocessing.run(dataset: try Dataset.open(folder + "/raw"), folder: folder + "/pre", options: pre)
        // Poison every training case's image with NaN.
        for id in ids {
            let path = Preprocessing.files(folder + "/pre", id).image
            let x = try Npy.read(path)
            try FileManager.default.removeItem(atPath: path)
            try Npy.write(try NpyArray(shape: x.shape, floats: [Float](repeating: .nan, count: x.values.count)), to: path)
        }
        var config = UNetConfig(dimension: 2, depth: 3, filterCap: 16, residual: false, norm: .batch)
        config.filters = [8, 8, 16]
        var options = TrainingOptions(network: config)
        options.epochs = 2
        options.batch = 2
        let trainer = Trainer(data: folder + "/pre", run: folder + "/run", options: options)
        do {
            _ = try trainer.train(resume: false)
            Issue.record("training on NaN data did not stop")
        } catch let SegmentationError.invalidArgument(message) {
            #expect(message.contains("loss became nan") && message.contains("epoch 1"), "\(message)")
        }
        #expect(!FileManager.default.fileExists(atPath: trainer.lastCheckpoint))
    }
}
