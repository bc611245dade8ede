import ArgumentParser
import Cluster
import Engine
import FileSupport
import Foundation
import MedicalImaging
import Segmentation
import NeuralNet

/// Refuses to replace a file the user already has (commands call it unless --overwrite).
func refuseExisting(_ paths: String?...) throws {
    for case let p? in paths where FileManager.default.fileExists(atPath: p) {
        throw ValidationError("\(p) exists; pass --overwrite to replace it, or choose another name")
    }
}

/// Values of a .npy in C order (a Fortran-order array of shape S is a C-order array of reversed(S)).
func cOrderValues(_ a: NpyArray) -> VoxelArray {
    a.fortranOrder ? a.values.reversingAxes(shape: a.shape.reversed()) : a.values
}

/// Reads a float32 .npy as a plain tensor (N, C, spatial...), whatever its memory order.
func readTensor(_ path: String) throws -> Tensor {
    let a = try Npy.read(path)
    guard case let .float32(values) = cOrderValues(a) else {
        throw ValidationError("\(path): expected float32 values, found \(a.values.datatype)")
    }
    return try Tensor(dims: a.shape, values: values)
}

/// Reads integer labels (N, 1, spatial...) of any integer dtype, each in 0..<classes.
func readLabels(_ path: String, classes: Int) throws -> Labels {
    let a = try Npy.read(path)
    let values = cOrderValues(a)
    guard values.datatype != .float32, values.datatype != .float64 else {
        throw ValidationError("\(path): labels must be integers, found \(values.datatype)")
    }
    let numbers = values.doubles()
    if let bad = numbers.first(where: { $0 < 0 || $0 >= Double(classes) }) {
        throw ValidationError("\(path): label value \(Int(bad)) is outside 0...\(classes - 1)")
    }
    return try Labels(dims: a.shape, values: numbers.map { UInt8($0) })
}

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a freshly initialised network and save its weights (safetensors, PyTorch state_dict names)."
    )

    @Option(help: "The recipe network.") var preset: Preset
    @Option(help: "Initialisation seed.") var seed: UInt64 = 0
    @Option(help: "Extra deep supervision heads (0: off).") var deepSupervision: Int = 0
    @Option(name: [.short, .customLong("output")], help: "Output weight file (.safetensors).") var output: String?
    @Option(name: .customLong("out"), help: .hidden) var out: String?
    @Flag(help: "Replace an existing output.") var overwrite = false

    func validate() throws {
        guard deepSupervision >= 0 else { throw ValidationError("--deep-supervision must be >= 0") }
        let out = try OutputOption.required(output, legacy: out)
        if !overwrite { try refuseExisting(out) }
    }

    func run() throws {
        let out = try OutputOption.required(output, legacy: out)
        var config = preset.config
        config.deepSupervisionHeads = deepSupervision
        let net = try UNet(config: config)
        net.initialize(seed: seed)
        try net.save(to: out, metadata: ["preset": preset.rawValue, "seed": "\(seed)"])
        let count = net.parameters.parameterCount.formatted(.number.grouping(.automatic).locale(Locale(identifier: "en_US")))
        print("\(preset): \(count) parameters (\(config.dimension)D, filters \(config.filters.map(String.init).joined(separator: ",")), \(config.residual ? "residual" : "plain") blocks, \(config.norm.rawValue) norm)")
        print("wrote \(out)")
    }
}

struct Forward: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a network on an input array and write the logits.",
        discussion: "Input: float32 .npy (N, C, H, W) or (N, C, D, H, W), sizes divisible by 2^(depth-1). Output: float32 logits .npy (N, classes, ...)."
    )

    @Option(help: "Weight file (.safetensors), ours or a PyTorch state_dict.") var model: String
    @Option(help: "Input .npy.") var input: String
    @Option(name: .shortAndLong, help: "Output logits .npy.") var output: String
    @Flag(help: "Training-mode forward (batch norm uses batch statistics).") var trainMode = false
    @Flag(help: "Replace an existing output.") var overwrite = false
    @OptionGroup var compute: ComputeOptions
    @OptionGroup var precision: PrecisionOptions

    func validate() throws { if !overwrite { try refuseExisting(output) } }

    func run() throws {
        compute.apply()
        let (net, _) = try UNet.load(model)
        try net.setPrecision(precision.precision)
        let x = try readTensor(input)
        net.training = trainMode
        let start = Date()
        let logits = try net.forward(x)[0]
        let seconds = Date().timeIntervalSince(start)
        net.releaseSaved()
        try Npy.write(NpyArray(shape: logits.dims, floats: logits.toArray()), to: output)
        print(String(format: "logits %@ in %.3f s; wrote %@", logits.dims.map(String.init).joined(separator: "x"), seconds, output))
    }
}

struct Step: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train K steps on one fixed batch (no augmentation): the 'overfit one batch' check.",
        discussion: "Writes the updated weights and a JSON list of the K losses (each before its step)."
    )

    @Option(help: "Weight file (.safetensors).") var model: String
    @Option(help: "Input .npy, float32 (N, C, spatial...).") var input: String
    @Option(help: "Target .npy, integer labels (N, 1, spatial...).") var target: String
    @Option(help: "Number of steps.") var steps: Int = 1
    @Option(help: "Optimizer.") var optimizer: Optimizer.Kind = .radam
    @Option(help: "Learning rate.") var lr: Double = 1e-3
    @Option(help: "Weight decay.") var weightDecay: Double = 1e-4
    @Option(help: "SGD momentum.") var momentum: Double = 0.9
    @Flag(help: "Nesterov momentum (SGD).") var nesterov = false
    @Option(help: "Clip the global gradient norm to this value.") var clipNorm: Double?
    @Option(name: [.short, .customLong("output")], help: "Output weight file.") var output: String?
    @Option(name: .customLong("out"), help: .hidden) var out: String?
    @Option(help: "Output JSON list of losses.") var losses: String
    @Flag(help: "Replace existing outputs.") var overwrite = false
    @OptionGroup var compute: ComputeOptions
    @OptionGroup var precision: PrecisionOptions

    func validate() throws {
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1") }
        guard lr > 0, lr.isFinite, weightDecay >= 0 else { throw ValidationError("--lr must be > 0 and --weight-decay >= 0") }
        let out = try OutputOption.required(output, legacy: out)
        if !overwrite { try refuseExisting(out, losses) }
    }

    func run() throws {
        let out = try OutputOption.required(output, legacy: out)
        compute.apply()
        let (net, _) = try UNet.load(model)
        try net.setPrecision(precision.precision)
        let x = try readTensor(input)
        let y = try readLabels(target, classes: net.config.classes)
        guard y.dims == [x.dims[0], 1] + x.dims.dropFirst(2) else {
            throw ValidationError("target shape \(y.dims) does not match input \(x.dims) (expected \([x.dims[0], 1] + x.dims.dropFirst(2)))")
        }
        var settings = Optimizer.Settings(kind: optimizer, learningRate: lr, weightDecay: weightDecay)
        settings.momentum = momentum
        settings.nesterov = nesterov
        settings.clipNorm = clipNorm
        let opt = try Optimizer(settings, parameters: net.parameters)
        var values: [Float] = []
        let start = Date()
        for k in 0 ..< steps {
            let loss = try net.trainingStep(input: x, target: y, optimizer: opt)
            guard loss.isFinite else { throw ValidationError("loss became \(loss) at step \(k + 1); weights not written") }
            values.append(loss)
            FileHandle.standardError.write(Data(String(format: "step %d/%d loss %.6f\n", k + 1, steps, loss).utf8))
        }
        try net.save(to: out, metadata: ["steps": "\(steps)", "optimizer": optimizer.rawValue])
        try AtomicFile.write(text: "[" + values.map { String(format: "%.9g", $0) }.joined(separator: ", ") + "]\n", to: losses)
        print(String(format: "%d steps in %.2f s, loss %.6f -> %.6f; wrote %@ and %@", steps, Date().timeIntervalSince(start), values.first!, values.last!, out, losses))
    }
}

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Segment raw NIfTI cases: the training preprocessing, 2D slices or a 3D sliding window, back to the input's grid.",
        discussion: """
        -i takes a 4D image (X, Y, Z, channels, Decathlon style), a folder of them, or a folder of nnU-Net channel \
        files (CASE_0000.nii.gz ...). Writes OUT/CASE.nii.gz with exactly the input's geometry. --model takes a \
        weight file or checkpoint, or a run folder (checkpoint_best.safetensors when the run's newest state was \
        validated, else checkpoint_last; it says which). Several --model form an ensemble: the mean of their \
        softmax probabilities decides (they must agree on dimension, channels and classes).
        """
    )

    @Option(help: "Weight file, checkpoint or run folder; repeat for an ensemble (e.g. the five folds' runs).") var model: [String] = []
    @Option(name: .shortAndLong, help: "Input file or folder.") var input: String
    @Option(name: .shortAndLong, help: "Output folder.") var output: String
    @Flag(help: "Average over flips of every spatial axis (4 in 2D, 8 in 3D).") var tta = false
    @Option(help: "Overlap of 3D windows (0-0.9).") var overlap: Double = 0.5
    @Option(help: "Slices per forward pass (2D).") var sliceBatch: Int = 16
    @Option(help: "3D window (default: the run's training patch, else 128,128,128).") var patch: String?
    @Option(help: "Label values to write: decathlon (0-3) or brats (0, 1, 2, 4).") var labels: LabelConvention = .decathlon
    @Flag(help: "Also write CASE_probabilities.nii.gz: float32 softmax probabilities (X, Y, Z, classes).") var saveProbabilities = false
    @Flag(help: "Also write CASE.png: axial, coronal, sagittal slices through the tumour, first channel with the prediction.") var png = false
    @Flag(help: "Replace existing outputs.") var overwrite = false
    @Flag(help: "Leave cases whose outputs all exist (finish an interrupted run); the others are predicted.") var skipExisting = false
    @Option(help: ArgumentHelp("Spacing (mm) to predict at: cases on another grid are resampled to it and back. Default: the spacing the model was trained at (recorded in its checkpoints), else 1,1,1 (the recipe's data); native: each case's own.",
                               valueName: "x,y,z|native"))
    var spacing: String?
    @OptionGroup var compute: ComputeOptions
    @OptionGroup var precision: PrecisionOptions

    func validate() throws {
        guard !(overwrite && skipExisting) else { throw ValidationError("--overwrite and --skip-existing exclude each other") }
        if let spacing, spacing != "native", parseSpacing(spacing) == nil {
            throw ValidationError("--spacing takes 3 positive sizes in mm, e.g. 1,1,1, or native")
        }
        guard !model.isEmpty else { throw ValidationError("Missing expected argument '--model <model>'") }
        guard (0 ... 0.9).contains(overlap) else { throw ValidationError("--overlap must be within 0...0.9") }
        guard sliceBatch >= 1 else { throw ValidationError("--slice-batch must be at least 1") }
        if let patch { guard parsePatch(patch) != nil else { throw ValidationError("--patch takes 3 positive sizes, e.g. 128,128,128") } }
    }

    func run() throws {
        compute.apply()
        let running = precision.worthwhile()
        var networks: [UNet] = []
        var runPatch: [Int]?
        var recordedSpacing: [Double]?
        for m in model {
            var path = m
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: m, isDirectory: &isDirectory), isDirectory.boolValue {
                // A run folder: its training patch is the default window.
                if runPatch == nil, let data = FileManager.default.contents(atPath: m + "/config.json") {
                    runPatch = (try? JSONDecoder().decode(TrainingOptions.self, from: data))?.patch
                }
                let choice = try Trainer.preferredCheckpoint(run: m)
                print("using \(choice.path): \(choice.reason)")
                path = choice.path
            }
            let (net, file) = try UNet.load(path)
            if recordedSpacing == nil { recordedSpacing = file.metadata[Checkpoint.spacingKey].flatMap(parseSpacing) }
            try net.setPrecision(running)
            let epoch = file.metadata["checkpoint.epoch"].map { ", epoch \($0)" } ?? ""
            print("loaded \(path): \(net.config.dimension)D, \(net.parameters.parameterCount) parameters\(epoch)")
            networks.append(net)
        }
        do { try Predictor.checkEnsemble(networks) } catch { throw RuntimeError("\(error) (models: \(model.joined(separator: ", ")))") }
        var options = Predictor.Options()
        options.overlap = overlap
        options.testTimeAugmentation = tta
        options.sliceBatch = sliceBatch
        if let p = patch.flatMap(parsePatch) ?? runPatch { options.patch3D = p }
        options.saveProbabilities = saveProbabilities
        options.png = png
        options.convention = labels
        options.overwrite = overwrite
        options.skipExisting = skipExisting
        switch spacing {
        case "native": options.spacing = nil
        case let text?: options.spacing = parseSpacing(text)
        case nil: options.spacing = recordedSpacing ?? [1, 1, 1]
        }
        let spacingNote = options.spacing.map { s in
            "cases on another grid are resampled to " + s.map { String(format: "%g", $0) }.joined(separator: " x ") + " mm"
                + (spacing == nil && recordedSpacing == nil ? " (the recipe's; the model records no training spacing)" : "")
        } ?? "each case on its own grid"
        print(spacingNote)
        print("\(networks.count == 1 ? "one model" : "an ensemble of \(networks.count) models (mean probabilities)"), \(Runtime.threads) thread(s), \(running.rawValue)\(tta ? ", flip TTA" : "")")
        let times = try Predictor.run(networks: networks, input: input, output: output, options: options) { id, timing in print("\(id): \(timing)") }
        print("wrote \(times.count) segmentation(s) to \(output)")
        if Profile.enabled { FileHandle.standardError.write(Data((Profile.report() + "\n").utf8)) }
    }
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train the recipe on a preprocessed folder (fold K of its splits.json); resumable, Ctrl-C safe.",
        discussion: """
        Defaults are the recipe's. composer-2d (data from `unet preprocess --dim 2`): RAdam lr 1e-3, weight decay 1e-4, \
        batch 64, constant LR, 200 epochs of one slice per training volume, Composer's augmentations. nvidia-3d (data \
        from `--dim 3`): the same optimizer, batch 2 patches of 128^3, foreground crops with probability 0.4, flips on \
        every axis. RUN gets config.json, log.jsonl (one line per epoch), \
        checkpoint_last.safetensors and checkpoint_best.safetensors (best validation Dice). Ctrl-C stops after the \
        current step with a checkpoint; --resume continues exactly where it stopped.
        """
    )

    @Option(help: "Preprocessed folder (unet preprocess --dim 2, or --dim 3 for nvidia-3d).") var data: String
    @Option(help: "Fold of splits.json to validate on.") var fold: Int = 0
    @Option(help: "The recipe network.") var preset: Preset = .composer2D
    @Option(help: "Override the filters per level, e.g. 16,32,64,128 (a smaller, faster network).") var filters: String?
    @Option(name: [.short, .customLong("output")], help: "Run folder (an existing run is continued with --resume only).") var output: String?
    @Option(name: .customLong("out"), help: .hidden) var out: String?

    @Option(help: "Epochs.") var epochs: Int = 200
    @Option(help: "Batch size (default 64 in 2D, 2 in 3D).") var batch: Int?
    @Option(help: "3D patch, e.g. 128,128,128 (the default) or 64,64,64.") var patch: String?
    @Option(help: "Learning rate.") var lr: Double = 1e-3
    @Option(help: "Optimizer.") var optimizer: Optimizer.Kind = .radam
    @Option(help: "Weight decay.") var weightDecay: Double = 1e-4
    @Option(help: "Learning-rate schedule: cosine restarts every 50 epochs, poly has power 0.9.") var schedule: ScheduleName = .constant
    @Option(help: "Seed (initialisation, data order, augmentations).") var seed: UInt64 = 0
    @Option(help: "Probability of a foreground-centred sample (default 0.33 in 2D, 0.4 in 3D).") var foregroundProbability: Double?
    @Flag(help: "Flip every spatial axis with probability 0.5 (default in 3D; Composer's 2D flips H only).") var flipAllAxes = false
    @Flag(help: "Add NVIDIA's zoom augmentation (p 0.15, scale 0.7-1.0).") var zoom = false
    @Option(help: "Validate every N epochs, or auto: as often as keeps validation and checkpoints within 10% of the wall clock in 2D, 15% in 3D (and always at the end).")
    var valEvery: ValidationFrequency = .auto
    @Option(help: "Minutes between writes of checkpoint_last (also written with each validation, on Ctrl-C and at the end).")
    var checkpointEvery: Double = 5
    @Option(help: "Budget of training time in minutes (validation excluded): finish at the first epoch end past it.") var timeLimit: Double?
    @Flag(help: "Continue the run in the output folder from its checkpoint_last.") var resume = false
    @Flag(help: ArgumentHelp("Under mpirun: batch norm statistics over the whole batch (every process's share), so N processes compute what one does; otherwise each process's share (as PyTorch DDP).",
                             valueName: "sync-batchnorm"))
    var syncBatchnorm = false
    @OptionGroup var compute: ComputeOptions
    @OptionGroup var precision: PrecisionOptions

    func validate() throws {
        _ = try OutputOption.required(output, legacy: out)
        if let timeLimit { guard timeLimit > 0 else { throw ValidationError("--time-limit must be > 0 minutes") } }
        guard epochs >= 1, (batch ?? 1) >= 1, fold >= 0 else { throw ValidationError("--epochs and --batch must be >= 1 and --fold >= 0") }
        guard checkpointEvery >= 0, checkpointEvery.isFinite else { throw ValidationError("--checkpoint-every must be >= 0 minutes") }
        if let p = foregroundProbability { guard (0 ... 1).contains(p) else { throw ValidationError("--foreground-probability must be within 0...1") } }
        if let patch {
            guard preset.config.dimension == 3 else { throw ValidationError("--patch is for 3D networks (nvidia-3d)") }
            guard parsePatch(patch) != nil else { throw ValidationError("--patch takes 3 positive sizes, e.g. 64,64,64") }
        }
        if let filters { guard filters.split(separator: ",").allSatisfy({ Int($0).map { $0 > 0 } ?? false }) else { throw ValidationError("--filters must be positive integers separated by commas") } }
    }

    func run() throws {
        let out = try OutputOption.required(output, legacy: out)
        compute.apply()
        // Started by mpirun or srun: this process is one of a group sharing every batch.
        let group = try MPIGroup.joinWorld()
        if let group {
            if compute.threads == nil { Runtime.setThreads(group.defaultThreads()) }
            ProgressReporter.silent = group.rank != 0
        }
        let speaks = (group?.rank ?? 0) == 0
        var config = preset.config
        if let filters {
            let f = filters.split(separator: ",").map { Int($0)! }
            config = UNetConfig(dimension: config.dimension, depth: f.count, filterCap: Int.max, residual: config.residual, norm: config.norm)
            config.filters = f
        }
        var options = TrainingOptions(network: config)
        options.fold = fold
        options.epochs = epochs
        if let batch { options.batch = batch }
        if let patch { options.patch = parsePatch(patch) }
        if let foregroundProbability { options.augmentations.foregroundProbability = foregroundProbability }
        if flipAllAxes { options.augmentations.flipAxes = Array(0 ..< config.dimension) }
        options.augmentations.zoom = zoom
        options.optimizer = Optimizer.Settings(kind: optimizer, learningRate: lr, weightDecay: weightDecay)
        options.schedule = schedule.schedule(epochs: epochs)
        options.seed = seed
        options.timeLimit = timeLimit.map { $0 * 60 }
        var cadence = Trainer.Cadence()
        if case let .every(n) = valEvery { cadence.validateEvery = n }
        cadence.checkpointInterval = checkpointEvery * 60
        signal(SIGINT) { _ in Trainer.requestStop() }
        signal(SIGTERM) { _ in Trainer.requestStop() }
        let trainer = Trainer(data: data, run: out, options: options, precision: precision.worthwhile(), cadence: cadence,
                              group: group, synchronizedBatchNorm: syncBatchnorm)
        let outcome = try trainer.train(resume: resume) { r in
                guard speaks else { return }
                var line = String(format: "epoch %d (step %d): loss %.4f, lr %.2g, %.1f s", r.epoch, r.step, r.loss, r.learningRate, r.seconds)
                if let d = r.validationDice, let regions = r.regionDice {
                    line += String(format: "; validation Dice %.2f (WT %.1f, TC %.1f, ET %.1f) in %.0f s", d, regions["WT"] ?? 0, regions["TC"] ?? 0,
                                   regions["ET"] ?? 0, r.validationSeconds ?? 0)
                }
                print(line)
                fflush(nil)  // one line per epoch, also when stdout is a file (nohup, logs)
        }
        guard speaks else { return }
        let summary = trainer.timeSummary()
        switch outcome {
        case .finished: print("finished; \(summary)\n\(trainer.bestCheckpoint) holds the best validation Dice, \(trainer.lastCheckpoint) the final state")
        case let .stopped(epoch, step):
            print((step == 0 ? "stopped after epoch \(epoch)" : "stopped in epoch \(epoch + 1) after step \(step)") + "; \(summary)\ncontinue with --resume")
        }
    }
}

struct Plot: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Draw RUN/progress.png (loss, validation Dice, learning rate per epoch) from RUN/log.jsonl.",
        discussion: "Works on runs of `unet train` and of tools/torch_train.py (same log format)."
    )

    @Argument(help: "Run folder (holding log.jsonl).") var folder: String
    @Option(name: .shortAndLong, help: "Output PNG (default RUN/progress.png, which is always redrawn).") var output: String?
    @Flag(help: "Replace an existing output.") var overwrite = false

    func validate() throws { if let output, !overwrite { try refuseExisting(output) } }

    func run() throws {
        let records = try Trainer.records(log: folder + "/log.jsonl")
        guard !records.isEmpty else { throw RuntimeError("\(folder)/log.jsonl has no epochs yet") }
        let path = output ?? folder + "/progress.png"
        try Trainer.drawProgress(records, to: path)
        print("wrote \(path) (\(records.count) epochs)")
    }
}

/// How often `train` validates: `auto` or a number of epochs.
enum ValidationFrequency: ExpressibleByArgument, Equatable {
    case auto
    case every(Int)
    init?(argument: String) {
        if argument == "auto" { self = .auto } else if let n = Int(argument), n >= 1 { self = .every(n) } else { return nil }
    }
    var defaultValueDescription: String { "auto" }
    static var allValueStrings: [String] { ["auto", "N (epochs, >= 1)"] }
}

/// "64,64,64" -> [64, 64, 64]; nil unless 3 positive integers.
func parsePatch(_ text: String) -> [Int]? {
    let sizes = text.split(separator: ",").compactMap { Int($0) }
    return sizes.count == 3 && sizes.allSatisfy({ $0 > 0 }) && text.split(separator: ",").count == 3 ? sizes : nil
}

/// "1,1,1" as three positive spacings in mm.
func parseSpacing(_ text: String) -> [Double]? {
    let v = text.split(separator: ",").compactMap { Double($0) }
    return v.count == 3 && v.allSatisfy { $0 > 0 && $0.isFinite } ? v : nil
}
