import Engine
import Foundation
import Testing
@testable import NeuralNet

@Suite struct LabelDownsampleTests {
    /// Deep supervision's targets: PyTorch's nearest interpolation takes source index floor(i * in / out) per
    /// axis, the same for every sample.
    @Test func nearestMatchesPyTorch() throws {
        let values = (0 ..< 2 * 5 * 6).map { UInt8($0) }
        let labels = try Labels(dims: [2, 1, 5, 6], values: values)
        let out = try SegmentationLoss.downsample(labels, to: [2, 4])
        #expect(out.dims == [2, 1, 2, 4])
        // rows floor(i * 5 / 2) = 0, 2; columns floor(j * 6 / 4) = 0, 1, 3, 4
        let expected = [0, 30].flatMap { b in [0, 2].flatMap { r in [0, 1, 3, 4].map { c in UInt8(b + r * 6 + c) } } }
        #expect(out.values == expected)
    }
}

@Suite struct UNetStructureTests {
    /// The presets have exactly the published parameter counts.
    @Test func presetParameterCounts() throws {
        #expect(try UNet(config: .composer2D).parameters.parameterCount == 24_543_268)
        #expect(try UNet(config: .nvidia3D).parameters.parameterCount == 31_192_868)
    }

    @Test func namesFollowPyTorch() throws {
        let net = try UNet(config: .composer2D)
        let names = Set(net.parameters.entries.map(\.name))
        for n in ["input_block.conv1.conv.weight", "input_block.conv1.norm.running_mean", "input_block.conv2.weight",
                  "input_block.norm.weight", "input_block.downsample.weight", "input_block.norm_res.bias",
                  "downsamples.3.conv1.conv.weight", "bottleneck.downsample.weight", "upsamples.4.transp_conv.bias",
                  "upsamples.0.conv_block.conv2.norm.running_var", "output_block.conv.weight", "output_block.conv.bias"] {
            #expect(names.contains(n), "\(n)")
        }
        #expect(net.parameters.entry(named: "upsamples.0.transp_conv.weight")?.dims == [512, 512, 2, 2])
        #expect(net.parameters.entry(named: "upsamples.4.conv_block.conv1.conv.weight")?.dims == [32, 64, 3, 3])
        let plain = try UNet(config: .nvidia3D)
        #expect(plain.parameters.entry(named: "input_block.conv2.conv.weight")?.dims == [32, 32, 3, 3, 3])
        #expect(plain.parameters.entry(named: "input_block.conv1.norm.running_mean") == nil)
    }
}

@Suite struct MemorySavingTests {
    /// Recovering each norm's input from its activated output gives the gradients of keeping it.
    @Test(arguments: ["unet2d_resid_batch", "unet3d_plain_instance"])
    func reconstructedInputsGiveTheSameGradients(_ name: String) throws {
        let io = try Safetensors.read(fixtures + "/\(name)_io.safetensors")
        let x = io.entry("input")!, y = io.entry("target")!
        let input = try Tensor(dims: x.shape, values: x.floats())
        let target = try Labels(dims: y.shape, values: y.bytes)
        var gradients: [[Float]] = []
        for keep in [false, true] {
            let (net, _) = try UNet.load(fixtures + "/\(name)_weights.safetensors")
            net.context.keepNormInputs = keep
            net.training = true
            let out = try net.forward(input)
            net.parameters.zeroGradients()
            try net.backward(try SegmentationLoss.evaluate(out, target: target).gradients)
            gradients.append(try net.parameters.entries.indices.filter { net.parameters.entries[$0].kind == .trainable }
                .flatMap { try net.parameters.gradient($0).toArray() })
        }
        #expect(relativeError(gradients[0], gradients[1]) < 1e-5)
    }
}

@Suite struct FixedWeightsTests {
    /// Inference inside `withFixedWeights` (convolutions keep their transformed kernels) gives exactly the
    /// logits of inference outside it, batch after batch; weights changed between two scopes are seen.
    @Test func sameLogitsAndChangesSeenBetweenScopes() throws {
        var config = UNetConfig(dimension: 2, depth: 3, filterCap: 32, residual: true, norm: .batch)
        config.filters = [16, 32, 32]  // multiples of 16: Winograd on blocked8 and blocked16 alike
        let net = try UNet(config: config)
        net.training = false
        var rng = SplitMix64(state: 5)
        let x = try Tensor(dims: [4, 4, 32, 32], values: (0 ..< 4 * 4 * 32 * 32).map { _ in Float(rng.normal()) })
        let outside = try net.forward(x)[0].toArray()
        let inside = try net.withFixedWeights { try (0 ..< 3).map { _ in try net.forward(x)[0].toArray() } }
        for logits in inside { #expect(logits == outside) }

        let h = net.parameters.handle(named: "input_block.conv2.weight")!
        net.parameters.value(h).withUnsafeMutableFloats { v in for i in v.indices { v[i] *= -1 } }
        let changed = try net.forward(x)[0].toArray()
        #expect(changed != outside)
        #expect(try net.withFixedWeights { try net.forward(x)[0].toArray() } == changed)
    }
}

@Suite struct JoinedSkipTests {
    /// Logits (inference) and parameter gradients (training) of the same network with the decoders reading
    /// the upsampling and the skip in place, and with them joined into one tensor (and the gradient split).
    static func run(_ net: UNet, inPlace: Bool, training: Bool, _ x: Tensor, _ target: Labels) throws -> [Float] {
        net.context.skipsInPlace = inPlace
        net.training = training
        let out = try net.forward(x)
        guard training else { return try out[0].toArray() }
        net.parameters.zeroGradients()
        try net.backward(try SegmentationLoss.evaluate(out, target: target).gradients)
        return try net.parameters.entries.indices.filter { net.parameters.entries[$0].kind == .trainable }
            .flatMap { try net.parameters.gradient($0).toArray() }
    }

    /// Winograd on blocked8 and blocked16 alike: channels multiples of 16; in training (weight gradients
    /// on Winograd) 64 channels or more.
    @Test(arguments: [false, true])
    func inPlaceMatchesJoined(training: Bool) throws {
        var config = UNetConfig(dimension: 2, depth: 3, filterCap: 64, residual: true, norm: .batch)
        config.filters = training ? [64, 64, 64] : [16, 32, 32]
        let net = try UNet(config: config)
        var rng = SplitMix64(state: 11)
        let x = try Tensor(dims: [2, 4, 32, 32], values: (0 ..< 2 * 4 * 32 * 32).map { _ in Float(rng.normal()) })
        let target = try Labels(dims: [2, 1, 32, 32], values: (0 ..< 2 * 32 * 32).map { _ in UInt8(rng.next() % 4) })
        let joined = try Self.run(net, inPlace: false, training: training, x, target)
        let inPlace = try Self.run(net, inPlace: true, training: training, x, target)
        // The same kernels add in the same order: equal, not merely close.
        #expect(inPlace.elementsEqual(joined), "relative error \(relativeError(inPlace, joined))")
        #expect(!joined.isEmpty && joined.contains { $0 != 0 })
        // The top decoder's first convolution did take the two parts (its operator exists after the forward),
        // on a CPU with the Winograd kernel (AVX2 and up).
        guard Runtime.cpuFeatures.contains(.avx2) else { return }
        let top = net.upsamples[net.upsamples.count - 1], f = config.filters[0]
        #expect(try top.block.conv1.conv.readsJoined([2, 2 * f, 32, 32], Layout.native, firstChannels: f, weightGradients: training,
                                                      net.context))
    }
}
