import Engine
import Foundation
import MedicalImaging
import NeuralNet

/// Everything that defines a training run (written to RUN/config.json; a resumed run must match it).
public struct TrainingOptions: Codable, Sendable, Equatable {
    public var network: UNetConfig
    public var fold = 0
    public var epochs = 200
    public var batch = 64
    public var optimizer = Optimizer.Settings.recipe
    public var schedule = LearningRateSchedule.constant
    public var seed: UInt64 = 0
    public var validateEvery = 1
    /// Slices per forward pass in validation.
    public var validationBatch = 32
    public var augmentations = Augmentations()
    /// Budget of training time in seconds (validation excluded), checked at the end of each epoch: the run
    /// validates and finishes at the first epoch end past it. nil: no budget, run all epochs.
    public var timeLimit: Double?
    /// 3D: the training patch (pd, ph, pw), also the validation window; nil in 2D.
    public var patch: [Int]?

    /// The recipe's defaults for the network's dimension: Composer's 2D (batch 64, its augmentations) or
    /// NVIDIA's 3D (batch 2 patches of 128^3, foreground 0.4, flips on every axis).
    public init(network: UNetConfig) {
        self.network = network
        if network.dimension == 3 {
            batch = 2
            patch = [128, 128, 128]
            augmentations = .nvidia3D
            validationBatch = 1
        }
    }
}

/// One line of RUN/log.jsonl.
public struct EpochRecord: Codable, Sendable {
    public var epoch: Int
    public var step: Int
    public var loss: Double
    public var learningRate: Double
    public var seconds: Double
    /// Training time so far (forward, loss, backward and update; validation and checkpoints excluded).
    public var trainingSeconds: Double?
    /// The recipe's validation Dice (%), per class, and per region (WT, TC, ET), when validated this epoch.
    public var validationDice: Double?
    public var classDice: [Double]?
    public var regionDice: [String: Double]?
}

/// Trains the recipe on a preprocessed folder: one sample (a 2D slice or a 3D patch) per training volume per
/// epoch, the recipe's augmentations, validation on the fold's held-out cases with the recipe's Dice, checkpoints
/// (`checkpoint_last`, `checkpoint_best`, atomic), a JSONL log, resumable to the exact same losses.
public final class Trainer: @unchecked Sendable {
    public let options: TrainingOptions
    public let run: String
    let data: String
    nonisolated(unsafe) static var stopRequested = false

    /// What the convolutions multiply in, training and validation alike. Not part of `options`: like the
    /// thread count it is how to compute, not what, and a run may resume in the other precision.
    public let precision: Precision

    public init(data: String, run: String, options: TrainingOptions, precision: Precision = .fp32) {
        self.data = data
        self.run = run
        self.options = options
        self.precision = precision
    }

    public var lastCheckpoint: String { run + "/checkpoint_last.safetensors" }
    public var bestCheckpoint: String { run + "/checkpoint_best.safetensors" }
    public var log: String { run + "/log.jsonl" }

    /// Asks a running `train` to stop after the current step (it saves checkpoint_last first). Safe from a signal handler.
    public static func requestStop() { stopRequested = true }

    public enum Outcome: Sendable, Equatable { case finished, stopped(epoch: Int, step: Int) }

    /// Runs (or resumes, when `resume` and RUN/checkpoint_last exists) the training. `report` receives each epoch's record.
    public func train(resume: Bool, report: (EpochRecord) -> Void = { _ in }) throws -> Outcome {
        guard (options.network.dimension == 3) == (options.patch != nil) else {
            throw SegmentationError.invalidArgument("a 3D network trains on patches (set one) and a 2D network on whole slices (no patch)")
        }
        let fm = FileManager.default
        let configPath = run + "/config.json"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        if fm.fileExists(atPath: configPath) {
            guard resume else { throw SegmentationError.invalidFile(run, "holds a run already; pass --resume to continue it or choose another --out") }
            var old = try JSONDecoder().decode(TrainingOptions.self, from: Data(contentsOf: URL(fileURLWithPath: configPath)))
            // A resumed run may be extended (or shortened); nothing else may change.
            (old.epochs, old.timeLimit) = (options.epochs, options.timeLimit)
            guard old == options else { throw SegmentationError.invalidFile(configPath, "the run was started with other options; resume it with the same ones (only --epochs and --time-limit may change)") }
            try AtomicFile.write(Array(try encoder.encode(options)), to: configPath)
        } else {
            try fm.createDirectory(atPath: run, withIntermediateDirectories: true)
            try AtomicFile.write(Array(try encoder.encode(options)), to: configPath)
        }
        let splitsData: Data
        do { splitsData = try Data(contentsOf: URL(fileURLWithPath: data + "/splits.json")) } catch {
            throw SegmentationError.invalidFile(data + "/splits.json", "missing: preprocess the dataset (5 or more cases) first")
        }
        let splits = try JSONDecoder().decode(FoldSplits.self, from: splitsData)
        guard splits.folds.indices.contains(options.fold) else { throw SegmentationError.invalidArgument("fold \(options.fold) does not exist (0...\(splits.folds.count - 1))") }
        let fold = splits.folds[options.fold]
        let loader = try TrainingLoader(folder: data, ids: fold.train, patch: options.patch, augmentations: options.augmentations, seed: options.seed)

        // Start or resume.
        var network: UNet, optimizer: Optimizer
        var epoch = 0, stepInEpoch = 0, globalStep = 0
        var best = -Double.infinity
        var trained = 0.0
        if resume, fm.fileExists(atPath: lastCheckpoint) {
            let (net, opt, state) = try Checkpoint.load(lastCheckpoint)
            guard net.config == options.network else { throw SegmentationError.invalidFile(lastCheckpoint, "its network differs from the run's configuration") }
            (network, optimizer) = (net, opt)
            (epoch, globalStep) = (state.epoch, state.step)
            stepInEpoch = Int(state.extra["step_in_epoch"] ?? "0") ?? 0
            best = Double(state.extra["best_dice"] ?? "") ?? -Double.infinity
            trained = Double(state.extra["training_seconds"] ?? "0") ?? 0
        } else {
            network = try UNet(config: options.network)
            network.initialize(seed: options.seed)
            optimizer = try Optimizer(options.optimizer, parameters: network.parameters)
            if fm.fileExists(atPath: log) { try fm.removeItem(atPath: log) }  // a fresh run of an unstarted folder
        }
        try network.setPrecision(precision)
        Self.stopRequested = false
        while epoch < options.epochs && trained < options.timeLimit ?? .infinity {
            let plan = loader.epochPlan(epoch, batch: options.batch)
            let start = Date()
            var lossSum = 0.0, lossCount = 0
            let lr = options.schedule.rate(base: options.optimizer.learningRate, at: epoch)
            let progress = ProgressReporter(total: plan.count - stepInEpoch, label: "epoch \(epoch + 1)/\(options.epochs)", unit: "step")
            // Prepare the next batch on a background thread while this one computes.
            let queue = DispatchQueue(label: "swiftunet.loader")
            final class Slot: @unchecked Sendable { var value: Result<(Tensor, Labels), Error>? }
            let (currentEpoch, batchSize) = (epoch, options.batch)
            func prefetch(_ step: Int) -> (Slot, DispatchGroup) {
                let slot = Slot(), group = DispatchGroup()
                queue.async(group: group) { slot.value = Result { try loader.batch(epoch: currentEpoch, step: step, size: batchSize) } }
                return (slot, group)
            }
            var next = prefetch(stepInEpoch)
            while stepInEpoch < plan.count {
                next.1.wait()
                let (x, y) = try next.0.value!.get()
                if stepInEpoch + 1 < plan.count { next = prefetch(stepInEpoch + 1) }
                let stepStart = Date()
                let loss = try network.trainingStep(input: x, target: y, optimizer: optimizer, learningRate: lr)
                trained += Date().timeIntervalSince(stepStart)
                guard loss.isFinite else {
                    throw SegmentationError.invalidArgument("loss became \(loss) at epoch \(epoch + 1), step \(stepInEpoch + 1); stopped, \(lastCheckpoint) keeps the last good state")
                }
                lossSum += Double(loss)
                lossCount += 1
                stepInEpoch += 1
                globalStep += 1
                progress.advance(note: String(format: "loss %.4f", loss))
                if Self.stopRequested {
                    try save(network, optimizer, epoch: epoch, stepInEpoch: stepInEpoch, globalStep: globalStep, best: best, trained: trained)
                    return .stopped(epoch: epoch, step: stepInEpoch)
                }
            }
            epoch += 1
            stepInEpoch = 0
            var record = EpochRecord(epoch: epoch, step: globalStep, loss: lossSum / Double(max(lossCount, 1)), learningRate: lr,
                                     seconds: Date().timeIntervalSince(start), trainingSeconds: trained)
            let last = epoch == options.epochs || trained >= options.timeLimit ?? .infinity
            if epoch % options.validateEvery == 0 || last {
                let v = try validate(network, ids: fold.val)
                record.validationDice = v.dice
                record.classDice = v.classes
                record.regionDice = v.regions
                if v.dice > best {
                    best = v.dice
                    try Checkpoint(step: globalStep, epoch: epoch, extra: checkpointState(best: best, stepInEpoch: 0, trained: trained))
                        .save(network: network, optimizer: optimizer, to: bestCheckpoint)
                }
            }
            try save(network, optimizer, epoch: epoch, stepInEpoch: 0, globalStep: globalStep, best: best, trained: trained)
            let line = String(decoding: try sortedJSON.encode(record), as: UTF8.self) + "\n"
            let handle = try? FileHandle(forWritingTo: URL(fileURLWithPath: log))
            if let handle { handle.seekToEndOfFile(); handle.write(Data(line.utf8)); try? handle.close() } else { try AtomicFile.write(text: line, to: log) }
            try Self.drawProgress(records(), to: run + "/progress.png")
            report(record)
        }
        return .finished
    }

    /// The run's state in a checkpoint. The training time is kept only under a time budget (it needs it to
    /// resume), so that otherwise identical states give byte-identical checkpoints.
    private func checkpointState(best: Double, stepInEpoch: Int, trained: Double) -> [String: String] {
        var extra = ["best_dice": "\(best)", "step_in_epoch": "\(stepInEpoch)"]
        if options.timeLimit != nil { extra["training_seconds"] = "\(trained)" }
        return extra
    }

    private func save(_ network: UNet, _ optimizer: Optimizer, epoch: Int, stepInEpoch: Int, globalStep: Int, best: Double, trained: Double) throws {
        try Checkpoint(step: globalStep, epoch: epoch, extra: checkpointState(best: best, stepInEpoch: stepInEpoch, trained: trained))
            .save(network: network, optimizer: optimizer, to: lastCheckpoint)
    }

    /// The recipe's validation metric on whole preprocessed volumes (inference mode; 2D slice batches or 3D
    /// sliding windows as `unet predict`): per class 1-3 Dice with the absent-class rule, mean over volumes
    /// then classes, x100; plus region Dice.
    func validate(_ network: UNet, ids: [String]) throws -> (dice: Double, classes: [Double], regions: [String: Double]) {
        var predictorOptions = Predictor.Options()
        predictorOptions.sliceBatch = options.validationBatch
        if let patch = options.patch { predictorOptions.patch3D = patch }
        var classTotals = [0.0, 0.0, 0.0]
        var regionTotals: [String: Double] = [:]
        let progress = ProgressReporter(total: ids.count, label: "validation")
        for id in ids {
            let files = Preprocessing.files(data, id)
            let x = try Npy.map(files.image), y = try Npy.map(files.label)
            guard x.layout.datatype == .float32, !x.layout.bigEndian, !x.layout.fortranOrder, x.layout.shape.count == 4,
                  y.layout.datatype == .uint8, y.layout.shape == [1] + x.layout.shape.dropFirst() else {
                throw SegmentationError.invalidFile(files.image, "expected float32 (C, D, H, W) with a uint8 (1, D, H, W) label file, found \(x.layout.shape) and \(y.layout.shape)")
            }
            let count = x.layout.shape.reduce(1, *), voxels = count / x.layout.shape[0]
            var image = [Float](repeating: 0, count: count)
            image.withUnsafeMutableBufferPointer { x.copyFloats(from: 0, count: count, into: $0.baseAddress!) }
            var truth = [UInt8](repeating: 0, count: voxels)
            truth.withUnsafeMutableBufferPointer { y.copyBytes(from: 0, count: voxels, into: $0.baseAddress!) }
            let scores = try Predictor.logits(image, shape: x.layout.shape, network: network, options: predictorOptions)
            let prediction = Predictor.argmax(scores, classes: network.config.classes)
            for c in UInt8(1) ... 3 {
                let inTruth = truth.contains(c)
                classTotals[Int(c) - 1] += inTruth ? Metrics.dice(prediction.map { $0 == c }, truth.map { $0 == c }) : (prediction.contains(c) ? 0 : 1)
            }
            for s in Evaluation.structures where s.name.count == 2 {
                regionTotals[s.name, default: 0] += Metrics.dice(prediction.map { s.classes.contains($0) }, truth.map { s.classes.contains($0) })
            }
            progress.advance(note: id)
        }
        let n = Double(max(ids.count, 1))
        let classes = classTotals.map { 100 * $0 / n }
        return (classes.reduce(0, +) / 3, classes, regionTotals.mapValues { 100 * $0 / n })
    }
}

extension Trainer {
    /// RUN/progress.png: training loss, validation Dice (recipe metric and WT/TC/ET) and learning rate per epoch.
    public static func drawProgress(_ records: [EpochRecord], to path: String) throws {
        let epochs = records.map { Double($0.epoch) }
        let validated = records.filter { $0.validationDice != nil }
        let charts = [
            LineChart(title: "Training loss", series: [("loss", Array(zip(epochs, records.map(\.loss))), (30, 90, 200))]),
            LineChart(title: "Validation Dice (%): mean black, WT green, TC red, ET yellow", series: [
                ("dice", validated.map { (Double($0.epoch), $0.validationDice!) }, (0, 0, 0)),
                ("WT", validated.map { (Double($0.epoch), $0.regionDice?["WT"] ?? .nan) }, (40, 170, 40)),
                ("TC", validated.map { (Double($0.epoch), $0.regionDice?["TC"] ?? .nan) }, (220, 40, 40)),
                ("ET", validated.map { (Double($0.epoch), $0.regionDice?["ET"] ?? .nan) }, (230, 180, 0)),
            ]),
            LineChart(title: "Learning rate", series: [("lr", Array(zip(epochs, records.map(\.learningRate))), (120, 60, 160))]),
        ]
        let (w, h) = (480, 220)
        var out = RGBImage(width: w, height: h * charts.count, fill: (255, 255, 255))
        for (i, c) in charts.enumerated() { out.paste(c.render(width: w, height: h), x: 0, y: i * h) }
        try out.write(to: path)
    }

    /// The records of RUN/log.jsonl.
    public func records() -> [EpochRecord] { (try? Self.records(log: log)) ?? [] }

    /// The records of a log.jsonl (ours, or tools/torch_train.py's in the same format).
    public static func records(log: String) throws -> [EpochRecord] {
        let text: String
        do { text = try String(contentsOfFile: log, encoding: .utf8) } catch { throw SegmentationError.invalidFile(log, "cannot be read: \(error.localizedDescription)") }
        return try text.split(separator: "\n").enumerated().map { i, line in
            do { return try JSONDecoder().decode(EpochRecord.self, from: Data(line.utf8)) } catch {
                throw SegmentationError.invalidFile(log, "line \(i + 1) is not an epoch record: \(error)")
            }
        }
    }
}
