import ArgumentParser
import Benchmarks
import Foundation
import Engine
import NeuralNet

/// One measured phase, run in a child process so peak memory is per phase (hidden from help).
struct BenchTrainPhase: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "train-phase", shouldDisplay: false)
    @Option var preset: Preset
    @Option var phase: String
    @Option var batch: Int
    @Option(parsing: .upToNextOption) var spatial: [Int]
    @Option var steps: Int
    @OptionGroup var compute: ComputeOptions
    @OptionGroup var precision: PrecisionOptions

    func run() throws {
        compute.apply()
        let r = try TrainingBenchmark.run(preset: preset.rawValue, config: preset.config, phase: phase, batch: batch, spatial: spatial, steps: steps,
                                          precision: precision.precision)
        print(String(decoding: try JSONEncoder().encode(r), as: UTF8.self))
    }
}

struct BenchTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Training step and inference speed and peak memory, SwiftUNet vs PyTorch on the same cores, in one run.",
        discussion: """
        Recipe shapes: composer-2d trains on batch 16 of 4x192x160 and infers batch 64; nvidia-3d trains and infers \
        one 4x128^3 patch. Each phase runs in its own process (its peak RSS is its own); PyTorch runs \
        bench/torch_reference.py in default and channels-last layouts when `python3 -c "import torch"` works. \
        With --precision bf16, SwiftUNet runs in fp32 and bf16 and PyTorch in fp32 and bf16 autocast \
        (torch.autocast("cpu", dtype=torch.bfloat16)), all in the same rounds.
        """
    )

    @Option(help: "The recipe network.") var preset: Preset
    @Option(help: "Training batch (default: 16 in 2D, 1 in 3D).") var batch: Int?
    @Option(help: "Inference batch (default: 64 in 2D, 1 in 3D).") var inferenceBatch: Int?
    @Option(help: "Timed steps per phase run (median kept), after one untimed step.") var steps: Int = 3
    @Option(help: "Rounds: every implementation runs once per round, alternating; the best round counts (the machine's speed drifts).")
    var rounds: Int = 2
    @Flag(help: "Skip the PyTorch reference.") var noTorch = false
    @Flag(help: "Print one JSON object instead of the table.") var json = false
    @OptionGroup var compute: ComputeOptions
    @OptionGroup var precision: PrecisionOptions

    func validate() throws {
        guard steps >= 1, rounds >= 1 else { throw ValidationError("--steps and --rounds must be at least 1") }
    }

    struct Report: Codable {
        var preset: String
        var threads: Int
        var results: [TrainingBenchmark.Result]
        var ratios: [String: Double]
    }

    func run() throws {
        let config = preset.config
        let spatial = config.dimension == 2 ? [192, 160] : [128, 128, 128]
        let trainBatch = batch ?? (config.dimension == 2 ? 16 : 1)
        let inferBatch = inferenceBatch ?? (config.dimension == 2 ? 64 : 1)
        let threads = compute.threads ?? ProcessInfo.processInfo.activeProcessorCount
        let me = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
        let script = BundledData.torchBenchmark ?? "bench/torch_reference.py"
        let torch = !noTorch && FileManager.default.fileExists(atPath: script) && (try? runChild("/usr/bin/env", ["python3", "-c", "import torch"])) != nil
        if !noTorch && !torch {
            FileHandle.standardError.write(Data("PyTorch not available (pip install \"torch==2.13.0+cpu\"): SwiftUNet only\n".utf8))
        }
        var results: [TrainingBenchmark.Result] = []
        func keep(_ r: TrainingBenchmark.Result) {
            if let i = results.firstIndex(where: { $0.phase == r.phase && $0.implementation == r.implementation }) {
                if r.seconds < results[i].seconds { results[i] = r }
            } else {
                results.append(r)
            }
        }
        let precisions: [Precision] = precision.precision == .bf16 ? [.fp32, .bf16] : [.fp32]
        for round in 1 ... rounds {
            for (phase, b) in [("train", trainBatch), ("infer", inferBatch)] {
                let common = ["--preset", preset.rawValue, "--phase", phase, "--batch", "\(b)", "--steps", "\(steps)"]
                for p in precisions {
                    FileHandle.standardError.write(Data("round \(round)/\(rounds): SwiftUNet \(p.rawValue) \(phase), batch \(b)...\n".utf8))
                    keep(try decode(runChild(me, ["bench", "train-phase"] + common + ["--precision", p.rawValue, "--threads", "\(threads)", "--spatial"]
                                                 + spatial.map(String.init))))
                }
                if torch {
                    for p in precisions {
                        for layout in [[], ["--channels-last"]] {
                            FileHandle.standardError.write(Data("round \(round)/\(rounds): PyTorch \(p.rawValue) \(phase) \(layout.isEmpty ? "default" : "channels-last"), batch \(b)...\n".utf8))
                            let out = try runChild("/usr/bin/env", ["OMP_NUM_THREADS=\(threads)", "python3", script] + common +
                                                   ["--threads", "\(threads)", "--spatial"] + spatial.map(String.init) + layout
                                                   + (p == .bf16 ? ["--bf16"] : []))
                            keep(try decode(out))
                        }
                    }
                }
            }
        }
        results.sort { ($0.phase == "train" ? 0 : 1, $0.implementation) < ($1.phase == "train" ? 0 : 1, $1.implementation) }
        // Ratios: SwiftUNet over the better PyTorch layout of the same precision (throughput), peak memory over
        // that PyTorch run's, and with bf16 SwiftUNet bf16 over SwiftUNet fp32.
        var ratios: [String: Double] = [:]
        func isBF16(_ r: TrainingBenchmark.Result) -> Bool { r.implementation.contains("bf16") }
        for phase in ["train", "infer"] {
            for p in precisions {
                let tag = p == .bf16 ? "_bf16" : ""
                guard let ours = results.first(where: { $0.phase == phase && $0.implementation.hasPrefix("SwiftUNet") && isBF16($0) == (p == .bf16) }),
                      let best = results.filter({ $0.phase == phase && $0.implementation.hasPrefix("PyTorch") && isBF16($0) == (p == .bf16) })
                          .max(by: { $0.imagesPerSecond < $1.imagesPerSecond })
                else { continue }
                ratios["\(phase)\(tag)_speedup"] = ours.imagesPerSecond / best.imagesPerSecond
                ratios["\(phase)\(tag)_memory_ratio"] = ours.peakRSSMB / best.peakRSSMB
            }
            if let fp32 = results.first(where: { $0.phase == phase && $0.implementation == "SwiftUNet" }),
               let bf16 = results.first(where: { $0.phase == phase && $0.implementation == "SwiftUNet bf16" }) {
                ratios["\(phase)_bf16_over_fp32"] = bf16.imagesPerSecond / fp32.imagesPerSecond
            }
        }
        // Whether bf16 kernels can pay at all here (`Precision.worthwhileOnThisCPU` decides from it).
        if precisions.contains(.bf16), let speedup = Precision.bf16DotProductSpeedup { ratios["bf16_dot_over_fp32_fma"] = speedup }
        let report = Report(preset: preset.rawValue, threads: threads, results: results, ratios: ratios)
        if json { return try printJSON(report) }
        print("\(preset), \(threads) threads; training batch \(trainBatch), inference batch \(inferBatch) of \(spatial.map(String.init).joined(separator: "x")); best of \(rounds) round(s), median of \(steps) steps each")
        let header = ["phase", "implementation", "batch", "s/step", "img/s", "GFLOP/s", "peak RSS MB"]
        func width(_ h: String) -> Int { h == "implementation" ? 42 : (h == "phase" ? 7 : 12) }
        print(header.map { $0.padding(toLength: width($0), withPad: " ", startingAt: 0) }.joined())
        for r in results {
            let cells = [r.phase, r.implementation, "\(r.batch)", String(format: "%.3f", r.seconds), String(format: "%.2f", r.imagesPerSecond),
                         String(format: "%.1f", r.gflops), String(format: "%.0f", r.peakRSSMB)]
            print(zip(header, cells).map { $1.padding(toLength: width($0), withPad: " ", startingAt: 0) }.joined())
        }
        for (k, v) in ratios.sorted(by: { $0.key < $1.key }) { print(String(format: "%@: %.2fx", k, v)) }
        if precision.precision.worthwhileOnThisCPU != precision.precision {
            print("bf16 dot products run no faster than fp32 FMAs on this CPU, so 'unet train' and 'unet predict' run fp32 when asked for bf16")
        }
    }

    private func decode(_ text: String) throws -> TrainingBenchmark.Result {
        guard let line = text.split(separator: "\n").last(where: { $0.hasPrefix("{") }) else {
            throw ValidationError("benchmark phase printed no result: \(text.suffix(500))")
        }
        return try JSONDecoder().decode(TrainingBenchmark.Result.self, from: Data(line.utf8))
    }
}

/// Runs a program, returns its stdout; fails with its stderr when it exits non-zero.
func runChild(_ executable: String, _ arguments: [String]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    let errors = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else {
        throw ValidationError("\(executable) \(arguments.joined(separator: " ")) failed: \(String(decoding: errors, as: UTF8.self).suffix(800))")
    }
    return String(decoding: data, as: UTF8.self)
}
