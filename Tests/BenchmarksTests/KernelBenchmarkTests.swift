@testable import Benchmarks
import Testing

@Suite("Kernel benchmark")
struct KernelBenchmarkTests {
    static func result(_ direction: KernelBenchmark.Direction, gflops: Double, local: Double) -> KernelBenchmark.Result {
        KernelBenchmark.Result(dim: 3, op: "conv", direction: direction, inChannels: 32, outChannels: 32, spatial: [64, 64, 64],
                               batch: 1, kernel: 3, stride: 1, gflops: gflops, fractionOfPeak: gflops / local,
                               seconds: 1, localPeakGflops: local, fractionOfLocalPeak: gflops / local,
                               implementation: "test", algorithm: "direct", chosen: true)
    }

    /// Each kernel keeps its fastest pass with that pass's local SGEMM; the peak is the best SGEMM of
    /// every pass, and fractions are taken against it.
    @Test func passesKeepEachKernelsBestAndTheRunsBestPeak() {
        let first = [Self.result(.forward, gflops: 100, local: 150), Self.result(.backwardWeights, gflops: 90, local: 120)]
        let second = [Self.result(.forward, gflops: 80, local: 160), Self.result(.backwardWeights, gflops: 110, local: 130)]
        let (kernels, peak) = KernelBenchmark.best(of: [first, second])
        #expect(peak == 160)
        #expect(kernels.map(\.gflops) == [100, 110])
        #expect(kernels.map(\.localPeakGflops) == [150, 130])
        #expect(kernels.map(\.fractionOfPeak) == [100.0 / 160, 110.0 / 160])
        #expect(kernels.map(\.fractionOfLocalPeak) == [100.0 / 150, 110.0 / 130])
        #expect(KernelBenchmark.best(of: [first]).peak == 150)
        #expect(KernelBenchmark.best(of: []).kernels.isEmpty)
    }
}
