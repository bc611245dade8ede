import ArgumentParser
import FileSupport
import Foundation
import MedicalImaging
import NeuralNet
import Segmentation

/// The whole job on data it makes itself: synthesize, preprocess, train briefly, predict, evaluate, draw.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Synthesize a phantom dataset, preprocess it, train the 2D recipe briefly, predict the validation cases, evaluate, and draw overlays.",
        discussion: """
        The network is Composer's 2D UNet (residual blocks, batch norm, 6 levels) with half its filters (16-256), \
        trained for --minutes minutes of training time (or --epochs epochs of one slice per training case, \
        whichever ends first); the rest is the recipe. Everything goes under the output folder; a second run reuses what is \
        there (the dataset, preprocessed cases, a finished training).
        """
    )

    @Option(name: [.short, .customLong("output")], help: "Output folder (what is already there is reused).") var output: String?
    @Option(name: .customLong("out"), help: .hidden) var out: String?
    @Option(help: "Phantom cases (fold 0 validates on a fifth of them).") var cases: Int = 20
    @Option(help: "Minutes of training time (validation excluded); training ends at the first epoch end past them.") var minutes: Double = 5
    @Option(help: "Training epochs at most.") var epochs: Int = 10000
    @Option(help: "Batch size.") var batch: Int = 8
    @Option(help: "Seed.") var seed: UInt64 = 0
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        guard cases >= 5 else { throw ValidationError("--cases must be at least 5 (5 folds)") }
        guard epochs >= 1, batch >= 1 else { throw ValidationError("--epochs and --batch must be at least 1") }
        guard minutes > 0, minutes.isFinite else { throw ValidationError("--minutes must be > 0") }
    }

    func run() throws {
        let out = try OutputOption.resolve(output, legacy: out) ?? "demo"
        compute.apply()
        let start = Date()
        let fm = FileManager.default
        let data = out + "/data", pre = out + "/preprocessed", run = out + "/run"
        let predictions = out + "/predictions", overlays = out + "/overlays"
        func stage(_ s: String) { print("== \(s) (\(ProgressReporter.duration(Date().timeIntervalSince(start))) so far)"); fflush(nil) }

        stage("1/6 synthesize \(cases) phantom cases")
        if fm.fileExists(atPath: data + "/dataset.json") {
            print("reusing \(data)")
        } else {
            var o = Synth.Options(cases: cases)
            o.seed = seed
            o.template = BundledData.templateT1
            _ = try Synth.run(folder: data, options: o, progress: ProgressReporter(total: cases, label: "synth"))
        }

        stage("2/6 preprocess for the 2D recipe")
        let dataset = try Dataset.open(data)
        var p = PreprocessOptions(dim: 2)
        p.splitSeed = 0
        let summary = try Preprocessing.run(dataset: dataset, folder: pre, options: p, progress: ProgressReporter(total: dataset.training.count, label: "preprocess"))
        guard let fold = summary.splits?.folds[0] else { throw ValidationError("no splits (fewer than 5 cases)") }
        print("fold 0: \(fold.train.count) training, \(fold.val.count) validation cases")

        stage("3/6 train (\(ProgressReporter.duration(minutes * 60)) of training, batch \(batch))")
        var config = UNetConfig.composer2D
        config.filters = config.filters.map { $0 / 2 }
        var options = TrainingOptions(network: config)
        options.epochs = epochs
        options.batch = batch
        options.seed = seed
        options.timeLimit = minutes * 60
        let trainer = Trainer(data: pre, run: run, options: options)
        _ = try trainer.train(resume: fm.fileExists(atPath: run + "/config.json")) { r in
            if let d = r.validationDice { print(String(format: "step %d: loss %.4f, validation Dice %.2f", r.step, r.loss, d)); fflush(nil) }
        }

        stage("4/6 predict the validation cases")
        let choice = try Trainer.preferredCheckpoint(run: run)
        print("using \(choice.path): \(choice.reason)")
        let (net, _) = try UNet.load(choice.path)
        let inputs = out + "/validation-images"
        try fm.createDirectory(atPath: inputs, withIntermediateDirectories: true)
        for id in fold.val where !fm.fileExists(atPath: inputs + "/\(id).nii.gz") {
            try fm.createSymbolicLink(atPath: inputs + "/\(id).nii.gz", withDestinationPath: URL(fileURLWithPath: data + "/imagesTr/\(id).nii.gz").standardizedFileURL.path)
        }
        var po = Predictor.Options()
        po.overwrite = true
        _ = try Predictor.run(networks: [net], input: inputs, output: predictions, options: po) { id, timing in print("\(id): \(timing)") }

        stage("5/6 evaluate")
        let truth = out + "/validation-labels"
        try fm.createDirectory(atPath: truth, withIntermediateDirectories: true)
        for id in fold.val where !fm.fileExists(atPath: truth + "/\(id).nii.gz") {
            try fm.createSymbolicLink(atPath: truth + "/\(id).nii.gz", withDestinationPath: URL(fileURLWithPath: data + "/labelsTr/\(id).nii.gz").standardizedFileURL.path)
        }
        let scores = try Evaluation.run(truthFolder: truth, predictionFolder: predictions)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(Array(try encoder.encode(scores)), to: out + "/summary.json")
        try AtomicFile.write(text: Evaluation.csv(scores), to: out + "/summary.csv")

        stage("6/6 overlays")
        try fm.createDirectory(atPath: overlays, withIntermediateDirectories: true)
        for id in fold.val {
            try Overlay.write(image: data + "/imagesTr/\(id).nii.gz", channel: 0, truth: data + "/labelsTr/\(id).nii.gz",
                              prediction: predictions + "/\(id).nii.gz", to: overlays + "/\(id).png")
        }

        print("")
        print(String(format: "validation Dice (the recipe's metric): %.2f; WT %.3f, TC %.3f, ET %.3f; HD95 WT %.1f mm",
                     scores.recipeDice, scores.meanDice["WT"]!, scores.meanDice["TC"]!, scores.meanDice["ET"]!, scores.meanHD95["WT"]!))
        print("done in \(ProgressReporter.duration(Date().timeIntervalSince(start))). Everything is in \(out)/:")
        print("  data/            the phantom dataset (Decathlon layout)")
        print("  preprocessed/    CASE_x.npy, CASE_y.npy, CASE_meta.json, splits.json")
        print("  run/             config.json, log.jsonl, state.json, checkpoint_best/last.safetensors,")
        print("                   progress.png (loss and validation Dice against steps and hours)")
        print("  validation-images/, validation-labels/  links to the validation cases' raw files")
        print("  predictions/     validation segmentations (NIfTI, the inputs' geometry)")
        print("  summary.json/csv Dice and HD95 per case, label and region")
        print("  overlays/        PNGs: FLAIR, ground truth, prediction")
    }
}
