import Engine
import Foundation
import Testing
@testable import NeuralNet

@Suite struct WeightFileTests {
    private func temporary(_ name: String) -> String { NSTemporaryDirectory() + "swiftunet-\(name)-\(UInt32.random(in: 0 ... .max)).safetensors" }

    private func expectFailure(_ path: String, mentions: [String]) {
        do {
            _ = try UNet.load(path)
            Issue.record("loaded a malformed file")
        } catch let error as NetworkError {
            for m in mentions { #expect(error.description.contains(m), "'\(m)' not in: \(error)") }
        } catch {
            Issue.record("untyped error \(error)")
        }
    }

    /// Our files load back to the same values, configuration and batch counts.
    @Test func roundTrip() throws {
        let (net, _) = try UNet.load(fixtures + "/unet2d_resid_batch_weights.safetensors")
        net.parameters.batchesTracked["input_block.conv1.norm"] = 42
        let path = temporary("roundtrip")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try net.save(to: path)
        let (back, file) = try UNet.load(path)
        #expect(back.config == net.config)
        #expect(file.metadata["format"] == "pt")
        #expect(back.parameters.batchesTracked["input_block.conv1.norm"] == 42)
        for (h, _) in net.parameters.entries.enumerated() {
            #expect(try back.parameters.value(h).toArray() == net.parameters.value(h).toArray())
        }
    }

    /// Unknown, missing, misshaped, non-float tensors and truncated files: errors that name the tensor or file.
    @Test func malformedFilesNameTheProblem() throws {
        let source = try Safetensors.read(fixtures + "/unet3d_plain_instance_weights.safetensors")
        let path = temporary("bad")
        defer { try? FileManager.default.removeItem(atPath: path) }
        func write(_ edit: (inout [Safetensors.Entry]) -> Void) throws {
            var entries = source.entries
            edit(&entries)
            try? FileManager.default.removeItem(atPath: path)
            try Safetensors.write(entries, metadata: [:], to: path)
        }
        try write { $0.append(Safetensors.Entry(name: "extra.weight", floats: [1, 2], shape: [2])) }
        expectFailure(path, mentions: ["unknown tensor extra.weight"])
        try write { $0.removeAll { $0.name == "upsamples.1.conv_block.conv2.norm.bias" } }
        expectFailure(path, mentions: ["missing tensor upsamples.1.conv_block.conv2.norm.bias"])
        try write { e in
            let i = e.firstIndex { $0.name == "downsamples.0.conv2.norm.weight" }!
            e[i] = Safetensors.Entry(name: e[i].name, floats: [Float](repeating: 1, count: 15), shape: [15])
        }
        expectFailure(path, mentions: ["downsamples.0.conv2.norm.weight", "[15]", "[16]"])
        try write { e in
            let i = e.firstIndex { $0.name == "output_block.conv.bias" }!
            e[i] = Safetensors.Entry(name: e[i].name, dtype: .i32, shape: [4], bytes: [UInt8](repeating: 0, count: 16))
        }
        expectFailure(path, mentions: ["output_block.conv.bias", "I32"])
        try write { $0.removeAll { $0.name == "input_block.conv1.conv.weight" } }
        expectFailure(path, mentions: ["input_block.conv1.conv.weight"])
        // Truncated: the last tensor's bytes are cut.
        let whole = try Data(contentsOf: URL(fileURLWithPath: fixtures + "/unet3d_plain_instance_weights.safetensors"))
        try whole.prefix(whole.count - 100).write(to: URL(fileURLWithPath: path))
        expectFailure(path, mentions: [path])
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: path))
        expectFailure(path, mentions: [path, "not a valid safetensors"])
        // A header length beyond the file.
        var lying = whole
        lying[7] = 0x7F
        try lying.write(to: URL(fileURLWithPath: path))
        expectFailure(path, mentions: ["header length"])
    }

    @Test func schedulesAndOptimizers() throws {
        let cosine = LearningRateSchedule.cosineWarmRestarts(period: 10, multiplier: 2, minimum: 0)
        #expect(cosine.rate(base: 1, at: 0) == 1)
        #expect(abs(cosine.rate(base: 1, at: 5) - 0.5) < 1e-12)
        #expect(cosine.rate(base: 1, at: 10) == 1)  // restart, next period 20
        #expect(abs(cosine.rate(base: 1, at: 20) - 0.5) < 1e-12)
        let poly = LearningRateSchedule.polynomial(total: 100, power: 0.9, end: 0)
        #expect(poly.rate(base: 1, at: 100) == 0 && poly.rate(base: 1, at: 0) == 1)
        // Each optimizer lowers a quadratic loss (gradient = parameter) on a tiny network's parameters.
        for kind in Optimizer.Kind.allCases {
            let net = try UNet(config: UNetConfig(dimension: 2, depth: 2, filterCap: 8, residual: false, norm: .instance))
            var settings = Optimizer.Settings(kind: kind, learningRate: 1e-2)
            settings.clipNorm = 100
            let opt = try Optimizer(settings, parameters: net.parameters)
            func norm() -> Double { net.parameters.withFlatBuffers { p, _ in p.reduce(0) { $0 + Double($1 * $1) } } }
            let before = norm()
            for _ in 0 ..< 20 {
                net.parameters.withFlatBuffers { p, g in for i in 0 ..< p.count { g[i] = p[i] } }
                opt.update()
            }
            #expect(norm() < 0.9 * before, "\(kind)")
        }
    }
}

/// Our optimizers against PyTorch's Adam, AdamW, SGD (momentum, Nesterov) and the reference RAdam:
/// three steps with fixed gradients from the same start.
@Suite struct OptimizerParityTests {
    @Test(arguments: ["adam", "adamw", "sgd", "sgd_nesterov", "radam"])
    func matchesPyTorch(_ name: String) throws {
        let file = try Safetensors.read(fixtures + "/optimizers.safetensors")
        let ps = ParameterSet()
        let h = ps.register("p", dims: [50])
        try ps.allocate()
        let p0 = file.entry("p0")!.floats()
        ps.value(h).withUnsafeMutableFloats { v in for i in 0 ..< 50 { v[i] = p0[i] } }
        let kind: Optimizer.Kind = name.hasPrefix("sgd") ? .sgd : Optimizer.Kind(rawValue: name)!
        var settings = Optimizer.Settings(kind: kind, learningRate: 1e-2, weightDecay: 1e-2)
        settings.nesterov = name == "sgd_nesterov"
        let opt = try Optimizer(settings, parameters: ps)
        for k in 1 ... 3 {
            let g = file.entry("g\(k)")!.floats()
            ps.gradient(h).withUnsafeMutableFloats { v in for i in 0 ..< 50 { v[i] = g[i] } }
            opt.update()
        }
        let error = relativeError(try ps.value(h).toArray(), file.entry(name)!.floats())
        #expect(error < 1e-6, "\(name): \(error)")
    }
}

@Suite struct CheckpointTests {
    /// Stopping after 2 steps and resuming from the checkpoint gives exactly the losses of 4 uninterrupted steps.
    @Test func resumeReproducesTheUninterruptedRun() throws {
        let io = try Safetensors.read(fixtures + "/unet2d_resid_batch_io.safetensors")
        let x = io.entry("input")!, y = io.entry("target")!
        let input = try Tensor(dims: x.shape, values: x.floats())
        let target = try Labels(dims: y.shape, values: y.bytes)
        func steps(_ net: UNet, _ opt: Optimizer, _ k: Int) throws -> [Float] {
            try (0 ..< k).map { _ in try net.trainingStep(input: input, target: target, optimizer: opt) }
        }
        let weights = fixtures + "/unet2d_resid_batch_weights.safetensors"
        let (a, _) = try UNet.load(weights)
        let straight = try steps(a, try Optimizer(.recipe, parameters: a.parameters), 4)

        let (b, _) = try UNet.load(weights)
        let optB = try Optimizer(.recipe, parameters: b.parameters)
        let first = try steps(b, optB, 2)
        let path = NSTemporaryDirectory() + "swiftunet-checkpoint-\(UInt32.random(in: 0 ... .max)).safetensors"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Checkpoint(step: 2, epoch: 1, rngState: [7, 9], extra: ["best": "0.5"]).save(network: b, optimizer: optB, to: path)
        let (c, optC, state) = try Checkpoint.load(path)
        #expect(state.step == 2 && state.epoch == 1 && state.rngState == [7, 9] && state.extra["best"] == "0.5")
        #expect(optC.step == 2)
        let rest = try steps(c, optC, 2)
        #expect(first + rest == straight, "\(first + rest) vs \(straight)")
        // The checkpoint's weights still load as plain weights.
        #expect(try UNet.load(path).0.config == c.config)
    }
}
