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
        let a = Trainer(data: folder + "/pre", run: folder + "/runA", options: options)
        #expect(try a.train(resume: false) { straight.append($0) } == .finished)
        #expect(straight.count == 3 && straight.allSatisfy { $0.validationDice != nil })
        #expect(straight[2].loss < straight[0].loss, "loss did not fall: \(straight.map(\.loss))")
        for f in ["config.json", "log.jsonl", "checkpoint_last.safetensors", "checkpoint_best.safetensors"] {
            #expect(FileManager.default.fileExists(atPath: folder + "/runA/" + f), "\(f)")
        }

        let b = Trainer(data: folder + "/pre", run: folder + "/runB", options: options)
        let stopped = try b.train(resume: false) { record in if record.epoch == 1 { Trainer.requestStop() } }
        #expect(stopped == .stopped(epoch: 1, step: 1))
        #expect(throws: SegmentationError.self) { try Trainer(data: folder + "/pre", run: folder + "/runB", options: options).train(resume: false) }
        var resumed: [EpochRecord] = []
        #expect(try Trainer(data: folder + "/pre", run: folder + "/runB", options: options).train(resume: true) { resumed.append($0) } == .finished)
        #expect(resumed.map(\.epoch) == [2, 3])
        #expect(resumed.last!.loss == straight.last!.loss)
        let (wa, _) = try UNet.load(folder + "/runA/checkpoint_last.safetensors")
        let (wb, _) = try UNet.load(folder + "/runB/checkpoint_last.safetensors")
        for h in wa.parameters.entries.indices { #expect(try wa.parameters.value(h).toArray() == wb.parameters.value(h).toArray()) }
    }
}
