import ArgumentParser
import Engine
import Benchmarks
import Foundation

struct BenchKernels: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract: "Convolution GFLOP/s at the recipe networks' layer shapes vs this machine's FP32 GEMM peak."
    )

    @OptionGroup var compute: ComputeOptions
    @Flag(help: "Print one JSON object instead of the table.") var json = false
    @Option(help: "Which network's layers: 2d, 3d or all.") var network: String = "all"
    @Option(help: "Measure only the first N layer shapes (the 3D list starts with 32->32 at 64^3).") var limit: Int?
    @Option(help: "Passes over the layer list; each kernel reports its best pass, as the peak is the best SGEMM of the run.")
    var passes = 1

    func validate() throws {
        guard ["2d", "3d", "all"].contains(network) else { throw ValidationError("--network must be 2d, 3d or all, got '\(network)'") }
        guard (1...100).contains(passes) else { throw ValidationError("--passes must be 1...100, got \(passes)") }
    }

    func run() throws {
        compute.apply()
        var shapes: [KernelBenchmark.LayerShape] = []
        if network != "3d" { shapes += KernelBenchmark.composer2D }
        if network != "2d" { shapes += KernelBenchmark.nvidia3D }
        if let limit { shapes = Array(shapes.prefix(max(0, limit))) }
        let stderr = FileHandle.standardError
        stderr.write(Data("oneDNN \(Runtime.backendVersion), \(Runtime.threads) threads, activations in \(Layout.native.rawValue) layout; measuring...\n".utf8))
        let report = try KernelBenchmark.run(shapes: shapes, passes: passes) { r, pass in
            // Progress goes to stderr so stdout stays one table (or one JSON object).
            let tag = passes > 1 ? "[pass \(pass)/\(passes)] " : ""
            stderr.write(Data(String(format: "  %@%dD %@ %d->%d %@ %@ %@: %.1f GFLOP/s\n", tag, r.dim, r.op, r.inChannels, r.outChannels,
                                     r.spatial.map(String.init).joined(separator: "x"), r.direction.rawValue, r.algorithm, r.gflops).utf8))
        }
        if json { return try printJSON(report) }
        print("\(report.backend), \(report.threads) threads, activations in \(report.layout) layout"
              + (report.passes > 1 ? ", each kernel its best of \(report.passes) passes" : ""))
        print(row(["dim", "op", "direction", "in->out", "spatial", "batch", "k", "s", "GFLOP/s", "% peak", "% local", "used", "kernel"]))
        for r in report.kernels {
            print(row(["\(r.dim)", r.op, r.direction.rawValue, "\(r.inChannels)->\(r.outChannels)",
                       r.spatial.map(String.init).joined(separator: "x"), "\(r.batch)", "\(r.kernel)", "\(r.stride)",
                       String(format: "%.1f", r.gflops), String(format: "%.1f%%", 100 * r.fractionOfPeak),
                       String(format: "%.1f%%", 100 * r.fractionOfLocalPeak), r.chosen ? "yes" : "", r.implementation]))
        }
        print("used: the kernel the networks run for that layer and direction. Winograd rows give effective GFLOP/s")
        print("(the direct convolution's FLOPs over the time): it does 2-4x fewer multiplications, so it can pass the peak.")
        print(String(format: "FP32 GEMM peak (SGEMM 3072^3 through oneDNN, best of the run): %.1f GFLOP/s", report.peakGflops))
        print("% peak: against that best; % local: against an SGEMM measured just before each layer (same conditions)")
        print(String(format: "FMA throughput ceiling (register-only FMA loop): %.1f GFLOP/s", report.fmaPeakGflops))
        if report.bf16DotPeakGflops > 0 {
            print(String(format: "bf16 dot-product ceiling (register-only vdpbf16ps loop): %.1f GFLOP/s, %.2fx the FMA ceiling", report.bf16DotPeakGflops,
                         report.bf16DotPeakGflops / max(report.fmaPeakGflops, 1e-9)))
        }
    }
}

struct BenchMemory: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "memory",
        abstract: "Runs forward+backward of a small conv-norm-activation block many times and checks that RSS stays flat."
    )

    @OptionGroup var compute: ComputeOptions
    @Option(help: "Iterations after warm-up.") var iterations = 1000
    @Option(help: "Allowed RSS growth in MiB before the check fails.") var toleranceMib = 4.0
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        compute.apply()
        let r = try MemoryBenchmark.run(iterations: iterations)
        let growth = Double(r.rssAfter - r.rssBefore) / 1_048_576
        if json {
            print("{\"iterations\": \(iterations), \"rss_before_bytes\": \(r.rssBefore), \"rss_after_bytes\": \(r.rssAfter), \"growth_mib\": \(growth)}")
        } else {
            print(String(format: "RSS after warm-up %.1f MiB, after %d iterations %.1f MiB: growth %.2f MiB (allowed %.1f)",
                         Double(r.rssBefore) / 1_048_576, iterations, Double(r.rssAfter) / 1_048_576, growth, toleranceMib))
        }
        if growth > toleranceMib { throw ExitCode(1) }
    }
}

/// One table row: fixed-width columns, left-aligned text, right-aligned numbers.
private func row(_ cells: [String]) -> String {
    let widths = [3, 14, 16, 9, 11, 5, 2, 2, 8, 7, 7, 4, 0]
    return zip(cells, widths).enumerated().map { i, cw in
        let (c, w) = cw
        let pad = String(repeating: " ", count: max(0, w - c.count))
        return i < 5 || i >= 11 ? c + pad : pad + c
    }.joined(separator: " ")
}
