import ArgumentParser
import Cluster
import Engine
import Foundation
import MedicalImaging

@main
struct Unet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unet",
        abstract: "Train and run the UNet for brain-tumour segmentation on MRI, on the CPU.",
        version: BundledData.version,
        subcommands: [Demo.self, Info.self, Convert.self, Synthesize.self, Preprocess.self, Evaluate.self, Train.self, Plot.self, Predict.self, OverlayCommand.self, Init.self, Forward.self, Step.self, Bench.self]
    )

    /// The release number `--version` prints (with the commit).
    static let release = "0.4.0"

    /// As ArgumentParser's, with library errors put in the command line's words (see `explained`): usage
    /// errors exit 64 with the usage text, failures while running exit 1 with the message alone.
    static func main() {
        // Past a file size limit (ulimit -f) a write fails with EFBIG and a message naming the file, instead of the
        // signal's default of ending the process mid-write without a word.
        signal(SIGXFSZ, SIG_IGN)
        do {
            var command = try parseAsRoot()
            try command.run()
            MPIGroup.world?.leave()
        } catch {
            if let world = MPIGroup.world, world.size > 1 {
                // One process of a parallel job cannot go on: end them all, so none waits for it forever.
                FileHandle.standardError.write(Data("Error (process \(world.rank) of \(world.size)): \(explained(error))\n".utf8))
                world.abortJob(code: 1)
            }
            exit(withError: explained(error))
        }
    }
}

/// Options every compute command shares.
struct ComputeOptions: ParsableArguments {
    @Option(help: "Compute threads (default: all cores, or OMP_NUM_THREADS).")
    var threads: Int?

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
    }

    func apply() {
        if let threads { Runtime.setThreads(threads) }
    }
}

extension Precision: ExpressibleByArgument {}

/// `--precision`: what the convolutions multiply in.
struct PrecisionOptions: ParsableArguments {
    @Option(help: ArgumentHelp("What convolutions multiply in: fp32, or bf16 mixed precision (bf16 activations and weights in "
                               + "convolutions, float32 elsewhere; needs AVX512_BF16).", valueName: "fp32|bf16"))
    var precision: Precision = .fp32

    func validate() throws {
        do { try precision.checkSupported() } catch let e as EngineError {
            throw ValidationError("--precision \(precision.rawValue): \(e.description). Use --precision fp32 on this machine.")
        }
    }

    /// What a command that makes a model or predictions runs: the precision asked for, except bf16 on a CPU
    /// whose bf16 dot products are no faster than its fp32 FMAs, which runs fp32 (faster and exact there) and
    /// says so on standard error. Measuring commands (bench, step, forward) run what was asked.
    func worthwhile() -> Precision {
        let chosen = precision.worthwhileOnThisCPU
        if chosen != precision, let speedup = Precision.bf16DotProductSpeedup {
            FileHandle.standardError.write(Data(String(
                format: "note: --precision bf16 runs in fp32 on this CPU: its bf16 dot products run at %.2fx the flop rate of its fp32 FMAs (measured), so bf16 kernels would be slower than fp32 ones, and less exact ('unet bench train --precision bf16' compares both)\n",
                speedup).utf8))
        }
        return chosen
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks that print a table (or JSON) and compare against a reference measured in the same run.",
        subcommands: [BenchKernels.self, BenchMemory.self, BenchIO.self, BenchTrain.self, BenchTrainPhase.self, BenchLoader.self, BenchAllreduce.self]
    )
}

/// A failure while running a command (not a usage error): printed as "Error: ..." with exit status 1.
struct RuntimeError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
