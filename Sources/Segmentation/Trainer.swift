import Engine
import FileSupport
import Foundation
import MedicalImaging
import NeuralNet

/// Everything that defines a training run (written to RUN/config.json; a resumed run must match it).
/// How often the run validates and checkpoints is not here (`Trainer.Cadence`): it never changes what is learnt.
public struct TrainingOptions: Codable, Sendable, Equatable {
    public var network: UNetConfig
    public var fold = 0
    public var epochs = 200
    public var batch = 64
    public var optimizer = Optimizer.Settings.recipe
    public var schedule = LearningRateSchedule.constant
    public var seed: UInt64 = 0
    /// Slices per forward pass in validation (2D).
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

/// Where a run's wall clock went, in seconds.
public struct TimeSplit: Codable, Sendable, Equatable {
    /// Forward, loss, backward and update.
    public var training = 0.0
    /// Preparing batches (reading and augmenting samples).
    public var data = 0.0
    /// Validation passes.
    public var validation = 0.0
    /// Writing checkpoints, the log and progress.png.
    public var checkpoint = 0.0
    /// All of it, including anything not in the parts above.
    public var wall = 0.0
    public init() {}

    static func + (a: TimeSplit, b: TimeSplit) -> TimeSplit {
        var s = a
        s.training += b.training; s.data += b.data; s.validation += b.validation; s.checkpoint += b.checkpoint; s.wall += b.wall
        return s
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
    /// This epoch's wall clock, split by what it was spent on.
    public var time: TimeSplit?
    /// The run's wall clock so far (all sessions of a resumed run), at the end of this epoch.
    public var wallSeconds: Double?
    /// Seconds of this epoch's validation (tools/torch_train.py writes it too).
    public var validationSeconds: Double?

    public init(epoch: Int, step: Int, loss: Double, learningRate: Double, seconds: Double, trainingSeconds: Double? = nil,
                validationDice: Double? = nil, classDice: [Double]? = nil, regionDice: [String: Double]? = nil) {
        (self.epoch, self.step, self.loss, self.learningRate, self.seconds) = (epoch, step, loss, learningRate, seconds)
        (self.trainingSeconds, self.validationDice, self.classDice, self.regionDice) = (trainingSeconds, validationDice, classDice, regionDice)
    }
}

/// What a run knows about itself besides its training state (RUN/state.json): when it validated, its best
/// score, where the time went. Kept out of the checkpoints, which must be byte-identical whatever the timing.
public struct RunState: Codable, Sendable, Equatable {
    /// The global step of checkpoint_last.
    public var checkpointStep = 0
    /// The global step of the last validation and its Dice, and of the best one (checkpoint_best) with its Dice.
    public var validatedStep: Int?
    public var validatedDice: Double?
    public var bestStep: Int?
    public var bestDice: Double?
    /// Seconds of the last validation pass, per validated slice (2D) or window (3D).
    public var validationSecondsPerItem: Double?
    /// The whole run's time split (all sessions).
    public var time = TimeSplit()
    public init() {}
}

/// Trains the recipe on a preprocessed folder: one sample (a 2D slice or a 3D patch) per training volume per
/// epoch, the recipe's augmentations, validation on the fold's held-out cases with the recipe's Dice, checkpoints
/// (`checkpoint_last`, `checkpoint_best`, atomic), a JSONL log, resumable to the exact same losses.
public final class Trainer: @unchecked Sendable {
    /// When a run validates and writes checkpoint_last. Not part of `TrainingOptions`: it decides when the run
    /// looks at itself, never what it learns, so it may change on resume.
    public struct Cadence: Sendable, Equatable {
        /// Validate every this many epochs (and at the end); nil: automatically, as often as keeps validation
        /// and checkpoint writes within `overheadShare` of the run's wall clock (and at the end).
        public var validateEvery: Int?
        /// nil: 10% in 2D, 15% in 3D, where a sliding-window pass over the validation volumes costs minutes (at
        /// 10% a 40-minute run could afford its first pass only at about its 30th minute; at 15%, about its 19th).
        public var overheadShare: Double?
        /// checkpoint_last is written at most this often (seconds), and always with a validation, on a stop and
        /// at the end.
        public var checkpointInterval: Double
        public init(validateEvery: Int? = nil, overheadShare: Double? = nil, checkpointInterval: Double = 300) {
            (self.validateEvery, self.overheadShare, self.checkpointInterval) = (validateEvery, overheadShare, checkpointInterval)
        }
        public static let automatic = Cadence()
    }

    public let options: TrainingOptions
    public let run: String
    let data: String
    nonisolated(unsafe) static var stopRequested = false

    /// What the convolutions multiply in, training and validation alike. Not part of `options`: like the
    /// thread count it is how to compute, not what, and a run may resume in the other precision.
    public let precision: Precision
    public let cadence: Cadence
    /// The share of the wall clock the automatic cadence allows validation and checkpoints.
    var overheadShare: Double { cadence.overheadShare ?? (options.network.dimension == 3 ? 0.15 : 0.1) }
    /// The processes training this run together (nil: this one alone). Each computes its share of every batch;
    /// the first (rank 0) alone writes the run folder; validation is split among them. Like the precision, how
    /// to compute, not what: a run may resume with another number of processes.
    public let group: ProcessGroup?
    /// With a group: batch norm statistics over the global batch (the members then compute what one process
    /// computes), not over each member's share.
    public let synchronizedBatchNorm: Bool

    public init(data: String, run: String, options: TrainingOptions, precision: Precision = .fp32, cadence: Cadence = .automatic,
                group: ProcessGroup? = nil, synchronizedBatchNorm: Bool = false) {
        self.data = data
        self.run = run
        self.options = options
        self.precision = precision
        self.cadence = cadence
        self.group = group
        self.synchronizedBatchNorm = synchronizedBatchNorm
    }

    /// Whether this process writes the run folder (the only one, or rank 0 of a group).
    var leads: Bool { (group?.rank ?? 0) == 0 }

    /// Whether any member was asked to stop (every member gets the same answer, so all stop at the same step).
    func agreedStop() throws -> Bool {
        guard let group else { return stopping }
        return try group.sum([stopping ? 1 : 0])[0] > 0
    }

    /// The leader's `flags` on every member: decisions that depend on timing (validate now? the time budget
    /// spent?) are the leader's, so that the members never part ways.
    func agree(_ flags: [Bool]) throws -> [Bool] {
        guard let group else { return flags }
        return try group.broadcast(flags.map { UInt8($0 ? 1 : 0) }, from: 0).map { $0 != 0 }
    }

    public var lastCheckpoint: String { run + "/checkpoint_last.safetensors" }
    public var bestCheckpoint: String { run + "/checkpoint_best.safetensors" }
    public var log: String { run + "/log.jsonl" }
    public var stateFile: String { run + "/state.json" }

    /// Asks every running `train` to stop after the current step, or at once during validation (it saves
    /// checkpoint_last first). Safe from a signal handler.
    public static func requestStop() { stopRequested = true }

    /// Asks this trainer's `train` to stop, as `requestStop()` does for all.
    public func requestStop() { stopHere = true }
    private var stopHere = false
    private var stopping: Bool { Self.stopRequested || stopHere }

    public enum Outcome: Sendable, Equatable { case finished, stopped(epoch: Int, step: Int) }

    /// Runs (or resumes, when `resume` and RUN/checkpoint_last exists) the training. `report` receives each
    /// epoch's record, `afterStep` each step's (epoch, step in epoch, loss).
    public func train(resume: Bool, report: (EpochRecord) -> Void = { _ in },
                      afterStep: (Int, Int, Float) -> Void = { _, _, _ in }) throws -> Outcome {
        guard (options.network.dimension == 3) == (options.patch != nil) else {
            throw SegmentationError.invalidArgument("a 3D network trains on patches (set one) and a 2D network on whole slices (no patch)")
        }
        if let group, options.batch < group.size {
            throw SegmentationError.invalidArgument("a batch of \(options.batch) cannot be shared by \(group.size) processes (each needs a sample at least)")
        }
        let fm = FileManager.default
        try fm.createDirectory(atPath: run, withIntermediateDirectories: true)
        let lock = leads ? try RunLock(folder: run) : nil
        defer { withExtendedLifetime(lock) {} }
        if leads { AtomicFile.removeStale(in: run) }  // what a killed writer left half written
        let configPath = run + "/config.json"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        if leads {  // the leader alone checks and writes the configuration
            if fm.fileExists(atPath: configPath) {
                guard resume else { throw SegmentationError.runExists(run) }
                var old = try JSONDecoder().decode(TrainingOptions.self, from: Data(contentsOf: URL(fileURLWithPath: configPath)))
                // A resumed run may be extended (or shortened); nothing else may change.
                (old.epochs, old.timeLimit) = (options.epochs, options.timeLimit)
                guard old == options else { throw SegmentationError.invalidFile(configPath, "the run was started with other options; only the number of epochs and the time budget may change on resume") }
            }
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
        let validationItems = try validationWork(ids: fold.val)
        // The training volumes' spacing goes into the checkpoints: prediction resamples other grids to it.
        let spacingRecord = trainingSpacing(ids: fold.train).map { [Checkpoint.spacingKey: $0.map { "\($0)" }.joined(separator: ",")] } ?? [:]

        // Start or resume.
        var network: UNet, optimizer: Optimizer
        var epoch = 0, stepInEpoch = 0, globalStep = 0
        var state = RunState()
        if resume, fm.fileExists(atPath: lastCheckpoint) {
            let (net, opt, checkpoint) = try Checkpoint.load(lastCheckpoint)
            guard net.config == options.network else { throw SegmentationError.invalidFile(lastCheckpoint, "its network differs from the run's configuration") }
            (network, optimizer) = (net, opt)
            (epoch, globalStep) = (checkpoint.epoch, checkpoint.step)
            stepInEpoch = Int(checkpoint.extra["step_in_epoch"] ?? "0") ?? 0
            if let saved = try? JSONDecoder().decode(RunState.self, from: Data(contentsOf: URL(fileURLWithPath: stateFile))) {
                state = saved
            } else {  // a run from before state.json kept these in the checkpoint
                state.bestDice = checkpoint.extra["best_dice"].flatMap(Double.init).flatMap { $0.isFinite ? $0 : nil }
                state.time.training = checkpoint.extra["training_seconds"].flatMap(Double.init) ?? 0
            }
            state.checkpointStep = globalStep
        } else {
            network = try UNet(config: options.network)
            network.initialize(seed: options.seed)
            optimizer = try Optimizer(options.optimizer, parameters: network.parameters)
            for f in [log, stateFile] where leads && fm.fileExists(atPath: f) { try fm.removeItem(atPath: f) }  // a fresh run of an unstarted folder
        }
        try network.setPrecision(precision)
        network.shareTraining(with: group, synchronizedBatchNorm: synchronizedBatchNorm)
        if let group {
            ProgressReporter.say("\(group.size) processes share each batch of \(options.batch) (\(options.batch / group.size)"
                + (options.batch % group.size == 0 ? "" : " or \(options.batch / group.size + 1)") + " samples each, \(Runtime.threads) thread(s) each); "
                + "batch norm statistics " + (synchronizedBatchNorm || options.network.norm != .batch ? "of the whole batch" : "of each process's share"))
        }
        Self.stopRequested = false
        stopHere = false

        let stepsPerEpoch = loader.epochPlan(0, batch: options.batch).count
        let samplesPerEpoch = stepsPerEpoch * options.batch
        if loader.ids.count < options.batch {
            let (least, most) = (options.batch / loader.ids.count, (options.batch + loader.ids.count - 1) / loader.ids.count)
            ProgressReporter.say("\(loader.ids.count) training volumes, batch \(options.batch): an epoch is 1 step of \(options.batch) samples, "
                + "each volume drawn \(least == most ? "\(least)" : "\(least) or \(most)") times (the recipe's one sample per volume per epoch, rounded up to a batch)")
        } else if loader.ids.count % options.batch != 0 {
            ProgressReporter.say("\(loader.ids.count) training volumes, batch \(options.batch): an epoch is \(stepsPerEpoch) step(s); "
                + "\(loader.ids.count - samplesPerEpoch) volume(s) sit out each epoch (a different draw each epoch)")
        }
        ProgressReporter.say("validation: \(fold.val.count) volumes (\(validationItems) \(options.patch == nil ? "slices" : "windows")), "
            + (cadence.validateEvery.map { "every \($0) epoch(s)" } ?? String(format: "automatic (validation and checkpoints within %.0f%% of the wall clock)", 100 * overheadShare))
            + " and at the end")

        let session = Date()
        let before = state.time  // the earlier sessions' time
        var finished = TimeSplit()  // this session's finished epochs
        var epochTime = TimeSplit()  // the current epoch's
        var lastSave = Date(), lastDrawing = Date.distantPast
        // What a validation and a checkpoint write will cost: measured once done, estimated before.
        var checkpointCost = Double(network.parameters.parameterCount * 12) / 1e9
        let totalSteps = options.epochs * stepsPerEpoch
        let progress = ProgressReporter(total: max(totalSteps - globalStep, 1), label: "training", unit: "step")
        var sessionSteps = 0, sessionTraining = 0.0, sessionData = 0.0
        var lastLoss: Float = .nan

        func now() -> TimeSplit {
            var t = before + finished + epochTime
            t.wall = before.wall + Date().timeIntervalSince(session)
            return t
        }
        func saveLast() throws {
            guard leads else { return }
            let start = Date()
            do {
                try Checkpoint(step: globalStep, epoch: epoch, extra: ["step_in_epoch": "\(stepInEpoch)"].merging(spacingRecord) { a, _ in a })
                    .save(network: network, optimizer: optimizer, to: lastCheckpoint)
            } catch {
                // The write goes to a temporary file first, so the previous checkpoint is still whole.
                let previous = fm.fileExists(atPath: lastCheckpoint) ? "the previous one (step \(state.checkpointStep)) is intact and the run resumes from it"
                                                                     : "there is no earlier one: the run starts again"
                throw SegmentationError.invalidFile(lastCheckpoint, "writing the training state at step \(globalStep) failed (\(error)); \(previous)")
            }
            checkpointCost = Date().timeIntervalSince(start)
            state.checkpointStep = globalStep
            lastSave = Date()
            epochTime.checkpoint += checkpointCost
        }
        func saveState() throws {
            guard leads else { return }
            let start = Date()
            state.time = now()
            try AtomicFile.write(Array(try sortedJSON.encode(state)), to: stateFile)
            epochTime.checkpoint += Date().timeIntervalSince(start)
        }
        /// Estimated seconds of one validation pass: measured per item, or before the first one, a third of a
        /// training sample's time per item (an inference forward against forward + backward + update).
        func validationEstimate() -> Double {
            if let perItem = state.validationSecondsPerItem { return perItem * Double(validationItems) }
            let perSample = sessionSteps > 0 ? sessionTraining / Double(sessionSteps * options.batch) : .infinity
            return perSample / 3 * Double(validationItems)
        }
        func dueForValidation(finishing: Bool) -> Bool {
            if finishing { return true }
            if let every = cadence.validateEvery { return epoch % every == 0 }
            let t = now()
            let cost = validationEstimate() + checkpointCost
            return t.validation + t.checkpoint + cost <= overheadShare * (t.wall + cost)
        }
        func eta() -> Double? {
            guard sessionSteps > 0 else { return nil }
            let t = now()
            let perStep = (t.wall - before.wall) / Double(sessionSteps)
            var remaining = Double(totalSteps - globalStep) * perStep
            if let limit = options.timeLimit {
                let trainingPerStep = max(sessionTraining / Double(sessionSteps), 1e-9)
                remaining = min(remaining, max(0, limit - t.training) / trainingPerStep * perStep)
            }
            return remaining
        }
        func note() -> String {
            var s = String(format: "loss %.4f, %.2f samples/s", lastLoss, Double(sessionSteps * options.batch) / max(sessionTraining + sessionData, 1e-9))
            if let d = state.validatedDice, let step = state.validatedStep { s += String(format: ", validation Dice %.2f at step %d", d, step) }
            return s
        }

        while try agree([epoch < options.epochs && now().training < options.timeLimit ?? .infinity])[0] {
            let plan = loader.epochPlan(epoch, batch: options.batch)
            let epochStart = Date()
            var lossSum = 0.0, lossCount = 0
            let lr = options.schedule.rate(base: options.optimizer.learningRate, at: epoch)
            while stepInEpoch < plan.count {
                // Prepared here, on the compute threads, not beside them: on a 2-core machine a background
                // preparer slows every step more than the preparation costs.
                let dataStart = Date()
                let (x, y) = try loader.batch(epoch: epoch, step: stepInEpoch, size: options.batch, workers: Runtime.threads,
                                              share: group?.share(of: options.batch))
                let stepStart = Date()
                epochTime.data += stepStart.timeIntervalSince(dataStart)
                sessionData += stepStart.timeIntervalSince(dataStart)
                let loss = try network.trainingStep(input: x, target: y, optimizer: optimizer, learningRate: lr)
                let seconds = Date().timeIntervalSince(stepStart)
                epochTime.training += seconds
                sessionTraining += seconds
                guard loss.isFinite else {
                    throw SegmentationError.invalidArgument("loss became \(loss) at epoch \(epoch + 1), step \(stepInEpoch + 1); stopped, \(lastCheckpoint) keeps the last good state")
                }
                lastLoss = loss
                lossSum += Double(loss)
                lossCount += 1
                stepInEpoch += 1
                globalStep += 1
                sessionSteps += 1
                progress.advance(note: note(), eta: eta())
                afterStep(epoch, stepInEpoch, loss)
                if try agreedStop() && stepInEpoch < plan.count {
                    try saveLast()
                    try saveState()
                    return .stopped(epoch: epoch, step: stepInEpoch)
                }
            }
            epoch += 1
            stepInEpoch = 0
            var record = EpochRecord(epoch: epoch, step: globalStep, loss: lossSum / Double(max(lossCount, 1)), learningRate: lr,
                                     seconds: Date().timeIntervalSince(epochStart))
            let stop = try agreedStop()
            let timely = epoch == options.epochs || now().training >= options.timeLimit ?? .infinity
            let decided = try agree([timely, !stop && dueForValidation(finishing: timely),
                                     Date().timeIntervalSince(lastSave) >= cadence.checkpointInterval])
            let (finishing, validating, saveDue) = (decided[0], decided[1], decided[2])
            var validated = false
            if validating {
                let start = Date()
                if !synchronizedBatchNorm { try network.adoptStatistics(from: 0) }
                // The weights stay as they are for the whole pass: convolutions keep their transformed kernels.
                if let v = try network.withFixedWeights({ try validate(network, ids: fold.val) }) {
                    let seconds = Date().timeIntervalSince(start)
                    epochTime.validation += seconds
                    record.validationSeconds = seconds
                    state.validationSecondsPerItem = seconds / Double(max(validationItems, 1))
                    (record.validationDice, record.classDice, record.regionDice) = (v.dice, v.classes, v.regions)
                    (state.validatedStep, state.validatedDice) = (globalStep, v.dice)
                    validated = true
                    if v.dice > state.bestDice ?? -.infinity, leads {
                        let saveStart = Date()
                        try Checkpoint(step: globalStep, epoch: epoch, extra: ["validation_dice": "\(v.dice)"].merging(spacingRecord) { a, _ in a })
                            .save(network: network, optimizer: optimizer, to: bestCheckpoint)
                        epochTime.checkpoint += Date().timeIntervalSince(saveStart)
                        (state.bestDice, state.bestStep) = (v.dice, globalStep)
                    }
                } else {
                    epochTime.validation += Date().timeIntervalSince(start)  // stopped during validation
                }
            }
            let saving = validated || finishing || stop || saveDue
            if saving { try saveLast() }
            let housekeeping = Date()
            record.trainingSeconds = now().training
            record.wallSeconds = now().wall
            epochTime.wall = Date().timeIntervalSince(epochStart)
            record.time = epochTime
            if leads { try appendToLog(record) }
            if leads && (saving || Date().timeIntervalSince(lastDrawing) >= 60) {
                try Self.drawProgress(records(), to: run + "/progress.png")
                lastDrawing = Date()
            }
            epochTime.checkpoint += Date().timeIntervalSince(housekeeping)
            finished = finished + epochTime
            epochTime = TimeSplit()
            if saving { try saveState() }
            report(record)
            if stop { return .stopped(epoch: epoch, step: 0) }
        }
        return .finished
    }
}

extension Trainer {
    /// The median spacing (x, y, z, mm) of the preprocessed training volumes `ids`; nil when their metadata says none.
    func trainingSpacing(ids: [String]) -> [Double]? {
        let spacings = ids.compactMap { id -> [Double]? in
            guard let data = FileManager.default.contents(atPath: Preprocessing.files(self.data, id).meta),
                  let meta = try? JSONDecoder().decode(CaseMeta.self, from: data), meta.spacing.count >= 3 else { return nil }
            return Array(meta.spacing.prefix(3))
        }
        guard !spacings.isEmpty else { return nil }
        return (0 ..< 3).map { a in spacings.map { $0[a] }.sorted()[spacings.count / 2] }
    }

    /// The validation pass's work: slices (2D) or sliding windows (3D) over the held-out volumes.
    func validationWork(ids: [String]) throws -> Int {
        var items = 0
        for id in ids {
            let x = try Npy.map(Preprocessing.files(data, id).image)
            let shape = x.layout.shape
            guard shape.count == 4 else { throw SegmentationError.invalidFile(Preprocessing.files(data, id).image, "expected (C, D, H, W), found \(shape)") }
            if let patch = options.patch {
                items += (0 ..< 3).map { Predictor.windowStarts(shape[$0 + 1], patch[$0], overlap: Predictor.Options().overlap).count }.reduce(1, *)
            } else {
                items += shape[1]
            }
        }
        return items
    }

    /// The recipe's validation metric on whole preprocessed volumes (inference mode; 2D slice batches that
    /// run across volume boundaries, or 3D sliding windows as `unet predict`): per class 1-3 Dice with the
    /// absent-class rule, mean over volumes then classes, x100; plus region Dice. nil when a stop was
    /// requested meanwhile. With a group, the members score shares of the slices (2D) or volumes (3D) in
    /// lockstep rounds and add up their confusion matrices.
    func validate(_ network: UNet, ids: [String]) throws -> (dice: Double, classes: [Double], regions: [String: Double])? {
        let K = network.config.classes
        var confusion = [[Int]](repeating: [Int](repeating: 0, count: K * K), count: ids.count)
        var volumes: [(x: Npy.Mapped, y: Npy.Mapped, shape: [Int])] = []
        for id in ids {
            let files = Preprocessing.files(data, id)
            let x = try Npy.map(files.image), y = try Npy.map(files.label)
            guard x.layout.datatype == .float32, !x.layout.bigEndian, !x.layout.fortranOrder, x.layout.shape.count == 4,
                  x.layout.shape[0] == network.config.inputChannels,
                  y.layout.datatype == .uint8, !y.layout.fortranOrder, y.layout.shape == [1] + x.layout.shape.dropFirst() else {
                throw SegmentationError.invalidFile(files.image, "expected float32 (\(network.config.inputChannels), D, H, W) with a uint8 (1, D, H, W) label file, found \(x.layout.shape) and \(y.layout.shape)")
            }
            volumes.append((x, y, x.layout.shape))
        }
        network.training = false
        if options.patch != nil {
            var predictorOptions = Predictor.Options()
            predictorOptions.patch3D = options.patch!
            let progress = ProgressReporter(total: ids.count, label: "validation")
            let (rank, size) = (group?.rank ?? 0, group?.size ?? 1)
            for round in 0 ..< (volumes.count + size - 1) / size {
                if try agreedStop() { return nil }
                let v = round * size + rank
                guard v < volumes.count else { continue }
                let volume = volumes[v]
                let count = volume.shape.reduce(1, *), voxels = count / volume.shape[0]
                var image = [Float](repeating: 0, count: count)
                image.withUnsafeMutableBufferPointer { volume.x.copyFloats(from: 0, count: count, into: $0.baseAddress!) }
                var truth = [UInt8](repeating: 0, count: voxels)
                truth.withUnsafeMutableBufferPointer { volume.y.copyBytes(from: 0, count: voxels, into: $0.baseAddress!) }
                let prediction = Predictor.argmax(try Predictor.logits(image, shape: volume.shape, network: network, options: predictorOptions), classes: K)
                Metrics.accumulateConfusion(&confusion[v], prediction: prediction, truth: truth, classes: K)
                progress.advance(by: size, note: ids[v])
            }
        } else {
            // Slices of every volume in turn fill batches of `validationBatch`, so no batch runs half empty at a
            // volume's end; each slice's prediction is scored against its label slice at once.
            let (C, H, W) = (volumes[0].shape[0], volumes[0].shape[2], volumes[0].shape[3])
            if let odd = volumes.firstIndex(where: { $0.shape[2] != H || $0.shape[3] != W }) {
                throw SegmentationError.invalidFile(Preprocessing.files(data, ids[odd]).image, "slices are \(volumes[odd].shape[2])x\(volumes[odd].shape[3]), \(ids[0])'s are \(H)x\(W)")
            }
            let all = volumes.enumerated().flatMap { v, volume in (0 ..< volume.shape[1]).map { (v, $0) } }
            let slices = group.map { all[$0.share(of: all.count)] } ?? all[...]
            let progress = ProgressReporter(total: slices.count, label: "validation", unit: "slice")
            let plane = H * W
            var truth = [UInt8](repeating: 0, count: plane)
            // Every member runs as many rounds as the largest share needs (its last ones may be empty).
            let largest = (all.count + (group?.size ?? 1) - 1) / (group?.size ?? 1)
            for round in 0 ..< (largest + options.validationBatch - 1) / options.validationBatch {
                if try agreedStop() { return nil }
                let start = slices.startIndex + round * options.validationBatch
                guard start < slices.endIndex else { continue }
                let batch = slices[start ..< min(start + options.validationBatch, slices.endIndex)]
                var input = [Float](repeating: 0, count: batch.count * C * plane)
                input.withUnsafeMutableBufferPointer { p in
                    for (s, (v, d)) in batch.enumerated() {
                        let D = volumes[v].shape[1]
                        for c in 0 ..< C { volumes[v].x.copyFloats(from: (c * D + d) * plane, count: plane, into: p.baseAddress! + (s * C + c) * plane) }
                    }
                }
                let logits = try network.forward(try Tensor(dims: [batch.count, C, H, W], values: input))[0].toArray()
                for (s, (v, d)) in batch.enumerated() {
                    truth.withUnsafeMutableBufferPointer { volumes[v].y.copyBytes(from: d * plane, count: plane, into: $0.baseAddress!) }
                    let prediction = Predictor.argmax(Array(logits[s * K * plane ..< (s + 1) * K * plane]), classes: K)
                    Metrics.accumulateConfusion(&confusion[v], prediction: prediction, truth: truth, classes: K)
                }
                progress.advance(by: batch.count)
            }
        }
        if let group {
            let sums = try group.sum(confusion.flatMap { $0.map(Double.init) })
            confusion = (0 ..< ids.count).map { v in sums[v * K * K ..< (v + 1) * K * K].map { Int($0) } }
        }
        var classTotals = [Double](repeating: 0, count: 3)
        var regionTotals: [String: Double] = [:]
        for m in confusion {
            for c in 1 ... 3 { classTotals[c - 1] += Metrics.recipeClassDice(confusion: m, classes: K, label: UInt8(c)) }
            for s in Evaluation.structures where s.name.count == 2 {
                regionTotals[s.name, default: 0] += Metrics.dice(confusion: m, classes: K, of: s.classes)
            }
        }
        let n = Double(max(ids.count, 1))
        let classes = classTotals.map { 100 * $0 / n }
        return (classes.reduce(0, +) / 3, classes, regionTotals.mapValues { 100 * $0 / n })
    }

    /// Appends a record to RUN/log.jsonl in one write. A half line left by a killed writer is cut off first, so
    /// the log stays one record per line.
    func appendToLog(_ record: EpochRecord) throws {
        let line = Array((String(decoding: try sortedJSON.encode(record), as: UTF8.self) + "\n").utf8)
        let fd = open(log, O_RDWR | O_CREAT | O_APPEND, 0o644)
        guard fd >= 0 else { throw SegmentationError.invalidFile(log, "cannot be opened for writing: " + String(cString: strerror(errno))) }
        defer { close(fd) }
        let size = lseek(fd, 0, SEEK_END)
        var last: UInt8 = 0
        if size > 0, pread(fd, &last, 1, size - 1) == 1, last != UInt8(ascii: "\n") {
            let bytes = Array((try? Data(contentsOf: URL(fileURLWithPath: log))) ?? Data())
            let keep = (bytes.lastIndex(of: UInt8(ascii: "\n")) ?? -1) + 1
            guard ftruncate(fd, off_t(keep)) == 0 else { throw SegmentationError.invalidFile(log, "cannot cut its unfinished last line: " + String(cString: strerror(errno))) }
        }
        let written = line.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
        guard written == line.count else { throw SegmentationError.invalidFile(log, "writing a record failed: " + String(cString: strerror(errno))) }
    }

    /// The checkpoint a run folder's model is best taken from, and why: checkpoint_best (the best of the
    /// validations that ran) when the newest state was validated, else checkpoint_last (the newest state; a
    /// run stopped or killed after training on since its last validation is better served by it).
    public static func preferredCheckpoint(run: String) throws -> (path: String, reason: String) {
        let fm = FileManager.default
        let last = run + "/checkpoint_last.safetensors", best = run + "/checkpoint_best.safetensors"
        let state = try? JSONDecoder().decode(RunState.self, from: Data(contentsOf: URL(fileURLWithPath: run + "/state.json")))
        let hasLast = fm.fileExists(atPath: last), hasBest = fm.fileExists(atPath: best)
        guard hasLast || hasBest else { throw SegmentationError.invalidFile(run, "holds no checkpoint_best.safetensors or checkpoint_last.safetensors") }
        guard let state else {
            return hasBest ? (best, "the best validation Dice") : (last, "the newest state (no validation ran)")
        }
        if hasBest, let validated = state.validatedStep, validated >= state.checkpointStep, let b = state.bestStep, let d = state.bestDice {
            return (best, String(format: "the best validation Dice, %.2f at step %d; the newest state (step %d) was validated", d, b, state.checkpointStep))
        }
        guard hasLast else { return (best, "the best validation Dice") }
        let since = state.validatedStep.map { "not validated since step \($0)" } ?? "never validated"
        return (last, "the newest state, step \(state.checkpointStep) (\(since))")
    }
}

extension Trainer {
    /// RUN/progress.png: training loss against steps, validation Dice (recipe metric and WT/TC/ET) against steps
    /// and against hours of wall clock, and the learning rate.
    public static func drawProgress(_ records: [EpochRecord], to path: String) throws {
        let steps = records.map { Double($0.step) }
        // Hours of wall clock at each record: the run's own clock, else (older logs, tools/torch_train.py) the
        // epochs' seconds and validations added up.
        var hours: [Double] = []
        var sum = 0.0
        for r in records {
            sum += r.seconds + (r.time == nil ? r.validationSeconds ?? 0 : 0)
            hours.append((r.wallSeconds ?? sum) / 3600)
        }
        let validated = records.indices.filter { records[$0].validationDice != nil }
        func dice(_ x: [Double]) -> [(name: String, points: [(Double, Double)], colour: (UInt8, UInt8, UInt8))] {
            [("dice", validated.map { (x[$0], records[$0].validationDice!) }, (0, 0, 0)),
             ("WT", validated.map { (x[$0], records[$0].regionDice?["WT"] ?? .nan) }, (40, 170, 40)),
             ("TC", validated.map { (x[$0], records[$0].regionDice?["TC"] ?? .nan) }, (220, 40, 40)),
             ("ET", validated.map { (x[$0], records[$0].regionDice?["ET"] ?? .nan) }, (230, 180, 0))]
        }
        let charts = [
            LineChart(title: "Training loss against steps", series: [("loss", Array(zip(steps, records.map(\.loss))), (30, 90, 200))]),
            LineChart(title: "Validation Dice (%) against steps: mean black, WT green, TC red, ET yellow", series: dice(steps)),
            LineChart(title: "Validation Dice (%) against hours of wall clock", series: dice(hours)),
            LineChart(title: "Learning rate against steps", series: [("lr", Array(zip(steps, records.map(\.learningRate))), (120, 60, 160))]),
        ]
        let (w, h) = (600, 220)  // wide enough for the longest title
        var out = RGBImage(width: w, height: h * charts.count, fill: (255, 255, 255))
        for (i, c) in charts.enumerated() { out.paste(c.render(width: w, height: h), x: 0, y: i * h) }
        try out.write(to: path)
    }

    /// The records of RUN/log.jsonl.
    public func records() -> [EpochRecord] { (try? Self.records(log: log)) ?? [] }

    /// The records of a log.jsonl (ours, or tools/torch_train.py's in the same format). A last line without its
    /// newline (a writer killed mid-line) is ignored.
    public static func records(log: String) throws -> [EpochRecord] {
        let text: String
        do { text = try String(contentsOfFile: log, encoding: .utf8) } catch { throw SegmentationError.invalidFile(log, "cannot be read: \(error.localizedDescription)") }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        if let last = lines.last, !text.hasSuffix("\n") || last.isEmpty { lines.removeLast() }
        return try lines.enumerated().compactMap { i, line in
            if line.isEmpty { return nil }
            do { return try JSONDecoder().decode(EpochRecord.self, from: Data(line.utf8)) } catch {
                throw SegmentationError.invalidFile(log, "line \(i + 1) is not an epoch record: \(error)")
            }
        }
    }
}

extension Trainer {
    /// "wall clock 40m05s: training 88.1%, data 0.9%, validation 7.2%, checkpoints 1.9%" from RUN/state.json.
    public func timeSummary() -> String {
        guard let state = try? JSONDecoder().decode(RunState.self, from: Data(contentsOf: URL(fileURLWithPath: stateFile))),
              state.time.wall > 0 else { return "no time recorded" }
        let t = state.time
        func share(_ x: Double) -> String { String(format: "%.1f%%", 100 * x / t.wall) }
        return "wall clock \(ProgressReporter.duration(t.wall)): training \(share(t.training)), data \(share(t.data)), "
            + "validation \(share(t.validation)), checkpoints and log \(share(t.checkpoint))"
    }
}

/// One writer per run folder: an advisory lock on RUN/.lock, held while `train` runs. The kernel drops it when
/// the process ends, however it ends, so a killed run never blocks the next one.
final class RunLock {
    private let fd: Int32

    init(folder: String) throws {
        fd = open(folder + "/.lock", O_RDWR | O_CREAT, 0o644)
        guard fd >= 0 else { throw SegmentationError.invalidFile(folder + "/.lock", "cannot be opened: " + String(cString: strerror(errno))) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw SegmentationError.runInUse(folder)
        }
    }

    deinit { close(fd) }  // closing the descriptor releases the lock
}
