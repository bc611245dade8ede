import Engine
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Leak check: forward and backward of conv -> batch norm -> leaky ReLU (3D, small), with
/// fresh activations every iteration and fresh primitives every 100, must keep RSS flat.
public enum MemoryBenchmark {
    /// Resident set size of this process in bytes (Linux /proc/self/statm), or 0 if unknown.
    public static func residentBytes() -> Int {
        guard let f = fopen("/proc/self/statm", "r") else { return 0 }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 128)
        guard fgets(&line, 128, f) != nil else { return 0 }
        let fields = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    public static func run(iterations: Int, warmup: Int = 100) throws -> (rssBefore: Int, rssAfter: Int) {
        let dims = [2, 8, 8, 8, 8]
        let g = ConvolutionGeometry(spatialRank: 3, inputChannels: 8, outputChannels: 16, kernel: 3)
        let w = try Tensor(zeros: g.weightDims), dw = try Tensor(zeros: g.weightDims)
        let scale = try Tensor(dims: [16], values: [Float](repeating: 1, count: 16)), shift = try Tensor(zeros: [16])
        let dscale = try Tensor(zeros: [16]), dshift = try Tensor(zeros: [16])
        let mean = try Tensor(zeros: [16]), variance = try Tensor(zeros: [16])
        let rm = try Tensor(zeros: [16]), rv = try Tensor(zeros: [16])
        KernelBenchmark.fillRandom(w, seed: 7)
        var before = 0
        var conv: Convolution? = nil, bn: BatchNormalization? = nil, act: LeakyReLU? = nil
        for i in 0..<(warmup + iterations) {
            if i == warmup { before = residentBytes() }
            if i % 100 == 0 {
                conv = try Convolution(g, inputDims: dims)
                bn = try BatchNormalization(dims: conv!.outputDims)
                act = try LeakyReLU(dims: conv!.outputDims)
            }
            guard let conv, let bn, let act else { break }
            let x = try KernelBenchmark.randomPlain(dims, seed: UInt32(i)).converted(to: .native)
            let y = try conv(x, weight: w)
            let z = try Tensor(zeros: y.dims, layout: .native)
            try bn.forwardTraining(input: y, scale: scale, shift: shift, output: z, mean: mean, variance: variance,
                                   runningMean: rm, runningVariance: rv)
            try act.forward(input: z, output: z)
            let dz = try z.converted(to: .native)
            try act.backward(input: z, outputGradient: dz, inputGradient: dz)
            let dy = try Tensor(zeros: y.dims, layout: .native)
            try bn.backward(input: y, outputGradient: dz, scale: scale, mean: mean, variance: variance,
                            inputGradient: dy, scaleGradient: dscale, shiftGradient: dshift)
            let dx = try Tensor(zeros: dims, layout: .native)
            try conv.backwardData(outputGradient: dy, weight: w, inputGradient: dx)
            try conv.backwardWeights(input: x, outputGradient: dy, weightGradient: dw)
        }
        return (before, residentBytes())
    }
}
