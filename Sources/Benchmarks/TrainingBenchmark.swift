import Engine
import NeuralNet
import Foundation

/// Times one training step (forward, loss, backward, optimizer) or one inference forward at a given
/// batch and input size, on random data. Each phase is meant to run in its own process so its peak
/// memory is its own.
public enum TrainingBenchmark {
    public struct Result: Codable, Sendable {
        public var implementation: String
        public var phase: String
        public var preset: String
        public var batch: Int
        public var spatial: [Int]
        /// Median seconds per step over the timed steps.
        public var seconds: Double
        public var imagesPerSecond: Double
        /// Convolution GFLOP/s (training: 3x the forward's FLOPs per step).
        public var gflops: Double
        /// Peak resident memory of the process, MB (10^6 bytes).
        public var peakRSSMB: Double
        public var steps: Int
    }

    /// Peak resident set size of this process in bytes (getrusage).
    public static func peakResidentBytes() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Int(usage.ru_maxrss) * 1024
    }

    public static func run(preset: String, config: UNetConfig, phase: String, batch: Int, spatial: [Int], steps: Int,
                           precision: Precision = .fp32) throws -> Result {
        let net = try UNet(config: config)
        try net.setPrecision(precision)
        net.initialize(seed: 1)
        let dims = [batch, config.inputChannels] + spatial
        let count = dims.reduce(1, *)
        var rng = SplitMix64(state: 0x5DEE_CE66_D1CE_4E5B ^ 2)
        let input = try Tensor(dims: dims, values: (0 ..< count).map { _ in Float(rng.normal()) })
        let voxels = batch * spatial.reduce(1, *)
        let target = try Labels(dims: [batch, 1] + spatial, values: (0 ..< voxels).map { _ in UInt8(rng.next() % UInt64(config.classes)) })
        let training = phase == "train"
        net.training = training
        let optimizer = try Optimizer(.recipe, parameters: net.parameters)
        var times: [Double] = []
        for step in 0 ..< steps + 1 {  // the first step builds primitives and memory: not timed
            let start = Date()
            if training {
                _ = try net.trainingStep(input: input, target: target, optimizer: optimizer)
            } else {
                _ = try Profile.measure("forward (total)") { try net.forward(input) } as [Tensor]
            }
            if step > 0 { times.append(Date().timeIntervalSince(start)) } else { Profile.reset() }
        }
        if Profile.enabled {
            let w = net.workspaceBytes
            FileHandle.standardError.write(Data((Profile.report() + String(format: "\nworkspace: peak in use %.0f MB, held %.0f MB; peak RSS %.0f MB\n",
                Double(w.peakInUse) / 1e6, Double(w.held) / 1e6, Double(peakResidentBytes()) / 1e6)).utf8))
        }
        times.sort()
        let median = times[times.count / 2]
        let flops = net.lastForwardFlops * (training ? 3 : 1)
        return Result(implementation: precision == .fp32 ? "SwiftUNet" : "SwiftUNet \(precision.rawValue)", phase: phase, preset: preset, batch: batch, spatial: spatial, seconds: median,
                      imagesPerSecond: Double(batch) / median, gflops: flops / median / 1e9,
                      peakRSSMB: Double(peakResidentBytes()) / 1e6, steps: steps)
    }
}
