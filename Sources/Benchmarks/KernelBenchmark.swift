import CDNNL
import Engine

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Measures convolution throughput at the recipe networks' real layer shapes against the
/// machine's FP32 GEMM peak measured in the same run.
public enum KernelBenchmark {
    public enum Direction: String, Codable, Sendable, CaseIterable {
        case forward, backwardData = "backward_data", backwardWeights = "backward_weights"
    }

    /// One convolution layer shape of a recipe network.
    public struct LayerShape: Hashable, Sendable {
        public var dim: Int
        public var inChannels: Int
        public var outChannels: Int
        /// Input spatial size.
        public var spatial: [Int]
        public var batch: Int
        public var kernel: Int
        public var stride: Int
        public var transposed: Bool
        public var bias: Bool

        public var geometry: ConvolutionGeometry {
            ConvolutionGeometry(spatialRank: dim, inputChannels: inChannels, outputChannels: outChannels, kernel: kernel,
                                stride: stride, bias: bias, transposed: transposed)
        }
    }

    public struct Result: Codable, Sendable {
        public var dim: Int
        public var op: String
        public var direction: Direction
        public var inChannels: Int
        public var outChannels: Int
        public var spatial: [Int]
        public var batch: Int
        public var kernel: Int
        public var stride: Int
        public var gflops: Double
        public var fractionOfPeak: Double
        public var seconds: Double
        /// SGEMM GFLOP/s measured right before this layer's kernels (same machine conditions).
        public var localPeakGflops: Double
        /// gflops / localPeakGflops.
        public var fractionOfLocalPeak: Double
        /// Which kernel ran (oneDNN's implementation name, or SwiftUNet's own).
        public var implementation: String
        /// "direct" or "winograd". Winograd's gflops are effective: the direct convolution's FLOPs over
        /// the time, so they can exceed the machine's peak (it does fewer multiplications).
        public var algorithm: String
        /// Whether the networks use this kernel for this layer and direction (the automatic choice).
        public var chosen: Bool

        enum CodingKeys: String, CodingKey {
            case dim, op, direction, spatial, batch, kernel, stride, gflops, seconds, implementation, algorithm, chosen
            case inChannels = "in_channels", outChannels = "out_channels", fractionOfPeak = "fraction_of_peak"
            case localPeakGflops = "local_peak_gflops", fractionOfLocalPeak = "fraction_of_local_peak"
        }
    }

    public struct Report: Codable, Sendable {
        public var peakGflops: Double
        /// Register-only FMA throughput (the arithmetic ceiling; 0 if unmeasured). The SGEMM
        /// peak above is what fractions are taken against.
        public var fmaPeakGflops: Double
        /// The same with 512-bit bf16 dot products (0 without AVX512_BF16): bf16 kernels can only pay where it
        /// passes `fmaPeakGflops`.
        public var bf16DotPeakGflops: Double
        public var threads: Int
        public var backend: String
        public var layout: String
        /// Passes over the layer list; each kernel's figure is its best pass.
        public var passes: Int
        public var kernels: [Result]

        enum CodingKeys: String, CodingKey {
            case kernels, threads, backend, layout, passes
            case peakGflops = "peak_gflops", fmaPeakGflops = "fma_peak_gflops", bf16DotPeakGflops = "bf16_dot_peak_gflops"
        }
    }

    /// Every distinct convolution of a UNet (input block, strided encoder, bottleneck, transposed
    /// upsampling, decoder blocks on the concatenation, 1x1 head) for `filters` and a patch.
    public static func unetLayers(dim: Int, patch: [Int], batch: Int, filters: [Int], inputChannels: Int = 4,
                                  classes: Int = 4) -> [LayerShape] {
        var shapes: [LayerShape] = []
        func add(_ i: Int, _ o: Int, _ size: [Int], k: Int = 3, s: Int = 1, t: Bool = false, bias: Bool = false) {
            let l = LayerShape(dim: dim, inChannels: i, outChannels: o, spatial: size, batch: batch, kernel: k,
                               stride: s, transposed: t, bias: bias)
            if !shapes.contains(l) { shapes.append(l) }
        }
        var size = patch
        var prev = inputChannels
        var sizes: [[Int]] = []
        for (level, f) in filters.enumerated() {
            let s = level == 0 ? 1 : 2
            add(prev, f, size, s: s)                       // first conv (and residual projection)
            if s == 2 { size = size.map { ($0 + 1) / 2 } }
            add(f, f, size)                                // second conv
            sizes.append(size)
            prev = f
        }
        for level in stride(from: filters.count - 2, through: 0, by: -1) {
            let f = filters[level]
            add(prev, f, sizes[level + 1], k: 2, s: 2, t: true, bias: true)
            add(2 * f, f, sizes[level])
            add(f, f, sizes[level])
            prev = f
        }
        add(filters[0], classes, patch, k: 1, bias: true)
        return shapes
    }

    /// Composer's 2D network: batch 16 of 4x192x160, filters 32...512.
    public static var composer2D: [LayerShape] {
        unetLayers(dim: 2, patch: [192, 160], batch: 16, filters: [32, 64, 128, 256, 512, 512])
    }

    /// NVIDIA's 3D network: batch 1 of 4x128^3, filters 32...320; plus the 32->32 convolution
    /// at 64^3, the engine's reference kernel.
    public static var nvidia3D: [LayerShape] {
        [LayerShape(dim: 3, inChannels: 32, outChannels: 32, spatial: [64, 64, 64], batch: 1, kernel: 3, stride: 1,
                    transposed: false, bias: false)]
            + unetLayers(dim: 3, patch: [128, 128, 128], batch: 1, filters: [32, 64, 128, 256, 320, 320])
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    /// Best time of repeated calls: at least `minReps` and until `minSeconds` have passed
    /// (after one warm-up call that also builds the primitive).
    static func bestTime(minReps: Int = 5, minSeconds: Double = 1.0, maxReps: Int = 50, _ body: () throws -> Void) rethrows -> Double {
        try body()
        var best = Double.infinity
        let start = now()
        var reps = 0
        while reps < minReps || (now() - start < minSeconds && reps < maxReps) {
            let t0 = now()
            try body()
            best = min(best, now() - t0)
            reps += 1
        }
        return best
    }

    static func fillRandom(_ t: Tensor, seed: UInt32) {
        var state = seed | 1
        t.withUnsafeMutableFloats { buf in
            for i in buf.indices {
                state = state &* 1_664_525 &+ 1_013_904_223
                buf[i] = Float(Int32(bitPattern: state >> 8) - (1 << 23)) / Float(1 << 24)
            }
        }
    }

    /// FP32 GEMM peak: best of repeated square SGEMMs through oneDNN, in GFLOP/s.
    public static func gemmPeak(size n: Int = 3072, minReps: Int = 5, minSeconds: Double = 2) throws -> Double {
        let a = try Tensor(zeros: [n, n]), b = try Tensor(zeros: [n, n]), c = try Tensor(zeros: [n, n])
        fillRandom(a, seed: 1)
        fillRandom(b, seed: 2)
        let t = try bestTime(minReps: minReps, minSeconds: minSeconds) { try GEMM.multiply(a, b, into: c) }
        return 2 * Double(n) * Double(n) * Double(n) / t / 1e9
    }

    /// Arithmetic peak from independent FMA chains on every thread, in GFLOP/s (best of 5).
    public static func fmaPeak() throws -> Double {
        var flops: Int64 = 0
        let t = bestTime(minReps: 5, minSeconds: 0.5) { flops = cdnnl_fma_peak_flops(Int32(Runtime.threads), 20_000_000) }
        return Double(flops) / t / 1e9
    }

    /// Arithmetic peak of bf16 dot products the same way, in GFLOP/s (0 without AVX512_BF16).
    public static func bf16DotPeak() -> Double {
        guard Runtime.cpuFeatures.contains(.avx512BF16) else { return 0 }
        var flops: Int64 = 0
        let t = bestTime(minReps: 5, minSeconds: 0.5) { flops = cdnnl_bf16_dot_peak_flops(Int32(Runtime.threads), 10_000_000) }
        return Double(flops) / t / 1e9
    }

    /// Times forward, backward-data and backward-weights of one layer in the native layout, with the
    /// given algorithm (only the directions it covers, for Winograd).
    public static func measure(_ shape: LayerShape, peak: Double, layout: Layout = .native,
                               algorithm: ConvolutionAlgorithm = .direct) throws -> [Result] {
        let dims = [shape.batch, shape.inChannels] + shape.spatial
        let conv = try Convolution(shape.geometry, inputDims: dims, layout: layout, algorithm: algorithm)
        let automatic = try Convolution(shape.geometry, inputDims: dims, layout: layout)
        let g = shape.geometry
        let x = try Tensor(zeros: conv.inputDims, layout: layout), dx = try Tensor(zeros: conv.inputDims, layout: layout)
        let y = try Tensor(zeros: conv.outputDims, layout: layout), dy = try Tensor(zeros: conv.outputDims, layout: layout)
        let w = try Tensor(zeros: g.weightDims), dw = try Tensor(zeros: g.weightDims)
        let b = g.bias ? try Tensor(zeros: [g.outputChannels]) : nil
        let db = g.bias ? try Tensor(zeros: [g.outputChannels]) : nil
        // Random values only in real channels: blocked padding must stay zero.
        try x.copy(from: randomPlain(conv.inputDims, seed: 3))
        try dy.copy(from: randomPlain(conv.outputDims, seed: 4))
        fillRandom(w, seed: 5)
        var out: [Result] = []
        for (index, direction) in Direction.allCases.enumerated() {
            let cDirection = Convolution.Direction(rawValue: Int32(index))!
            let isWinograd = { (c: Convolution) in c.implementation(cDirection).contains("winograd") }
            // Winograd runs forward and backward data, and backward weights only where chosen.
            if algorithm == .winograd, !isWinograd(conv) { continue }
            let t = try bestTime {
                switch direction {
                case .forward: try conv.forward(input: x, weight: w, bias: b, output: y)
                case .backwardData: try conv.backwardData(outputGradient: dy, weight: w, inputGradient: dx)
                case .backwardWeights: try conv.backwardWeights(input: x, outputGradient: dy, weightGradient: dw, biasGradient: db)
                }
            }
            let gf = conv.flops / t / 1e9
            out.append(Result(dim: shape.dim, op: shape.transposed ? "conv_transpose" : "conv", direction: direction,
                              inChannels: shape.inChannels, outChannels: shape.outChannels, spatial: shape.spatial,
                              batch: shape.batch, kernel: shape.kernel, stride: shape.stride, gflops: gf,
                              fractionOfPeak: gf / peak, seconds: t, localPeakGflops: peak, fractionOfLocalPeak: gf / peak,
                              implementation: conv.implementation(cDirection),
                              algorithm: isWinograd(conv) ? "winograd" : "direct", chosen: isWinograd(conv) == isWinograd(automatic)))
        }
        return out
    }

    static func randomPlain(_ dims: [Int], seed: UInt32) throws -> Tensor {
        let t = try Tensor(zeros: dims)
        fillRandom(t, seed: seed)
        return t
    }

    /// Runs the whole benchmark, `passes` times over the layer list. `progress` receives each
    /// result as it is measured, with its pass (1-based).
    ///
    /// Shared machines drift (this VM's speed moves by 20-40% between minutes). Each layer is
    /// compared with an SGEMM measured just before it ("local"), and the run's peak is the best of
    /// all those SGEMMs. With several passes each kernel likewise keeps its best pass, so kernel and
    /// peak are both "best of the run"; with one pass the peak has had ~30 chances and each kernel one.
    public static func run(shapes: [LayerShape], passes: Int = 1,
                           progress: (_ result: Result, _ pass: Int) -> Void = { _, _ in }) throws -> Report {
        var rounds: [[Result]] = []
        for pass in 1...max(1, passes) {
            var results: [Result] = []
            for s in shapes {
                let local = try gemmPeak(minReps: 3, minSeconds: 0.5)
                let winograd = (try? Convolution(s.geometry, inputDims: [s.batch, s.inChannels] + s.spatial, algorithm: .winograd)) != nil
                for algorithm in winograd ? [ConvolutionAlgorithm.direct, .winograd] : [.direct] {
                    for r in try measure(s, peak: local, algorithm: algorithm) {
                        results.append(r)
                        progress(r, pass)
                    }
                }
            }
            rounds.append(results)
        }
        let (kernels, peak) = best(of: rounds)
        return Report(peakGflops: peak, fmaPeakGflops: try fmaPeak(), bf16DotPeakGflops: bf16DotPeak(), threads: Runtime.threads, backend: "oneDNN \(Runtime.backendVersion)",
                      layout: Layout.native.rawValue, passes: rounds.count, kernels: kernels)
    }

    /// Merges passes over the same layer list: each kernel's fastest pass (with that pass's local
    /// SGEMM), and the run's peak, the best local SGEMM of all; `fractionOfPeak` is set against it.
    static func best(of rounds: [[Result]]) -> (kernels: [Result], peak: Double) {
        guard var kernels = rounds.first else { return ([], 0) }
        for round in rounds.dropFirst() {
            precondition(round.count == kernels.count, "passes over the same layers measure the same kernels")
            for (i, r) in round.enumerated() where r.gflops > kernels[i].gflops { kernels[i] = r }
        }
        let peak = rounds.joined().map(\.localPeakGflops).max() ?? 0
        for i in kernels.indices { kernels[i].fractionOfPeak = peak > 0 ? kernels[i].gflops / peak : 0 }
        return (kernels, peak)
    }
}
