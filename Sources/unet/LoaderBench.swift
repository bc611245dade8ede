import ArgumentParser
import Engine
import Foundation
import Segmentation

/// What batch preparation costs: each augmentation step forced on, the recipe's mix, and a whole batch.
struct BenchLoader: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loader",
        abstract: "Batch preparation cost: milliseconds per sample of each augmentation step and of a whole training batch.",
        discussion: """
        Reads a preprocessed folder (`unet preprocess`): 2D slices, or with --patch 3D patches. Each step is timed \
        forced on (probability 1) on cropped samples; "recipe" is the crop plus the recipe's augmentations at their \
        probabilities; "batch" prepares whole training batches on --threads threads, as `unet train` does before \
        each step. Compare the batch time with a step of `unet bench train` at the same batch.
        """
    )

    @Option(help: "Preprocessed folder.") var data: String
    @Option(help: "3D patch, e.g. 128,128,128 (default: 2D slices).") var patch: String?
    @Option(help: "Samples per measurement.") var samples: Int = 32
    @Option(help: "Training batch (default 64 in 2D, 2 in 3D).") var batch: Int?
    @Flag(help: "Print one JSON object instead of the table.") var json = false
    @OptionGroup var compute: ComputeOptions

    struct Row: Codable { var step: String; var millisecondsPerSample: Double }
    struct Report: Codable { var data: String; var sampleShape: [Int]; var threads: Int; var batch: Int; var rows: [Row]; var batchSeconds: Double }

    func validate() throws {
        if let patch { guard parsePatch(patch) != nil else { throw ValidationError("--patch takes 3 positive sizes, e.g. 128,128,128") } }
        guard samples >= 1, (batch ?? 1) >= 1 else { throw ValidationError("--samples and --batch must be at least 1") }
    }

    func run() throws {
        compute.apply()
        let splits: FoldSplits
        do { splits = try JSONDecoder().decode(FoldSplits.self, from: Data(contentsOf: URL(fileURLWithPath: data + "/splits.json"))) } catch {
            throw RuntimeError("\(data)/splits.json: cannot be read (\(error)); preprocess the dataset first")
        }
        let ids = splits.folds[0].train
        let patchSize = patch.flatMap(parsePatch)
        let plain = try TrainingLoader(folder: data, ids: ids, patch: patchSize, augmentations: .none, seed: 1)
        let recipe = try TrainingLoader(folder: data, ids: ids, patch: patchSize,
                                        augmentations: patchSize == nil ? Augmentations() : .nvidia3D, seed: 1)
        let spatial = plain.sampleShape, C = plain.channels
        let cropped = (0 ..< samples).map { plain.sample(case: $0 % ids.count, epoch: 0, position: $0) }
        func perSample(_ body: (Int) -> Void) -> Double {
            let start = Date()
            for k in 0 ..< samples { body(k) }
            return Date().timeIntervalSince(start) * 1000 / Double(samples)
        }
        var rng = SplitMix64(mixing: 3)
        var rows: [Row] = []
        rows.append(Row(step: "crop (read from the mapped files)", millisecondsPerSample: perSample { k in _ = plain.sample(case: k % ids.count, epoch: 1, position: k) }))
        rows.append(Row(step: "flip (one axis)", millisecondsPerSample: perSample { k in
            var (i, l) = (cropped[k].image, cropped[k].label)
            Augmentations.flip(image: &i, label: &l, channels: C, spatial: spatial, axis: 0)
        }))
        rows.append(Row(step: "noise", millisecondsPerSample: perSample { k in
            var i = cropped[k].image
            Augmentations.addNoise(to: &i, std: 0.1, rng: &rng)
        }))
        rows.append(Row(step: "blur", millisecondsPerSample: perSample { k in
            var i = cropped[k].image
            Augmentations.blur(&i, channels: C, spatial: spatial, sigma: 1)
        }))
        rows.append(Row(step: "brightness", millisecondsPerSample: perSample { k in
            var i = cropped[k].image
            Augmentations.scale(&i, by: 1.1)
        }))
        rows.append(Row(step: "contrast", millisecondsPerSample: perSample { k in
            var i = cropped[k].image
            Augmentations.contrast(&i, by: 1.2)
        }))
        rows.append(Row(step: "copy of a sample (subtract from the steps above)", millisecondsPerSample: perSample { k in
            var i = cropped[k].image
            i[0] += 1
        }))
        rows.append(Row(step: "recipe: crop + augmentations at their probabilities", millisecondsPerSample: perSample { k in
            _ = recipe.sample(case: k % ids.count, epoch: 2, position: k)
        }))
        let batchSize = batch ?? (patchSize == nil ? 64 : 2)
        let threads = Runtime.threads
        let rounds = max(1, samples / batchSize)
        let start = Date()
        for r in 0 ..< rounds { _ = try recipe.batch(epoch: 3, step: r, size: batchSize, workers: threads) }
        let batchSeconds = Date().timeIntervalSince(start) / Double(rounds)
        let report = Report(data: data, sampleShape: spatial, threads: threads, batch: batchSize, rows: rows, batchSeconds: batchSeconds)
        if json { return try printJSON(report) }
        print("\(data): samples \(C)x\(spatial.map(String.init).joined(separator: "x")), \(samples) per row")
        for r in rows { print(r.step.padding(toLength: 56, withPad: " ", startingAt: 0) + String(format: "%9.2f ms/sample", r.millisecondsPerSample)) }
        print(String(format: "a training batch of %d on %d thread(s): %.3f s", batchSize, threads, batchSeconds))
    }
}
