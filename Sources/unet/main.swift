import Engine
import Foundation
func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
let n = 4096
let a = try Tensor(zeros: [n, n]), b = try Tensor(zeros: [n, n]), c = try Tensor(zeros: [n, n])
try GEMM.multiply(a, b, into: c)
var t0 = now(); for _ in 0..<3 { try GEMM.multiply(a, b, into: c) }
print("gemm", 3 * 2.0 * Double(n*n*n) / (now() - t0) / 1e9)
for (ci, co, s, st) in [(32,32,64,1),(32,32,128,1),(64,32,128,1),(320,320,8,1),(32,64,128,2)] {
let g = ConvolutionGeometry(spatialRank: 3, inputChannels: ci, outputChannels: co, kernel: 3, stride: st)
let conv = try Convolution(g, inputDims: [1, ci, s, s, s])
let x = try Tensor(zeros: conv.inputDims, layout: .native)
let w = try Tensor(zeros: g.weightDims); let dw = try Tensor(zeros: g.weightDims)
let y = try conv(x, weight: w)
try conv.backwardData(outputGradient: y, weight: w, inputGradient: x)
try conv.backwardWeights(input: x, outputGradient: y, weightGradient: dw)
t0 = now(); for _ in 0..<3 { try conv.forward(input: x, weight: w, output: y) }
let f = conv.flops * 3 / (now() - t0) / 1e9
t0 = now(); for _ in 0..<3 { try conv.backwardData(outputGradient: y, weight: w, inputGradient: x) }
let bd = conv.flops * 3 / (now() - t0) / 1e9
t0 = now(); for _ in 0..<3 { try conv.backwardWeights(input: x, outputGradient: y, weightGradient: dw) }
let bw = conv.flops * 3 / (now() - t0) / 1e9
print(ci, co, s, st, f, bd, bw)
}
