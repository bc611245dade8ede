import Foundation

/// A training checkpoint: the weights (loadable as they are by PyTorch after dropping the `optimizer/`
/// tensors), the optimizer's flat state, and in the metadata the configuration, optimizer settings,
/// step, epoch and the caller's RNG state. Written atomically.
public struct Checkpoint {
    public var step: Int
    public var epoch: Int
    /// Opaque RNG state of the training loop (e.g. the data loader's generator), restored on resume.
    public var rngState: [UInt64]
    /// The metadata key of the spacing (x, y, z, mm, comma-separated) of the volumes a model was trained on.
    public static let spacingKey = "training_spacing"

    /// Free-form extra values (e.g. best metric so far).
    public var extra: [String: String]

    public init(step: Int, epoch: Int, rngState: [UInt64] = [], extra: [String: String] = [:]) {
        self.step = step
        self.epoch = epoch
        self.rngState = rngState
        self.extra = extra
    }

    static let firstMoment = UNet.optimizerPrefix + "first"
    static let secondMoment = UNet.optimizerPrefix + "second"

    /// Saves network, optimizer and loop state to `path` (atomically).
    public func save(network: UNet, optimizer: Optimizer, to path: String) throws {
        var meta = extra
        meta["checkpoint.step"] = "\(step)"
        meta["checkpoint.epoch"] = "\(epoch)"
        meta["checkpoint.rng"] = rngState.map { String($0) }.joined(separator: ",")
        meta["checkpoint.optimizer_step"] = "\(optimizer.step)"
        meta["checkpoint.optimizer"] = String(decoding: try sortedJSON.encode(optimizer.settings), as: UTF8.self)
        let moments = [Safetensors.Entry(name: Self.firstMoment, floats: optimizer.first, shape: [optimizer.first.count]),
                       Safetensors.Entry(name: Self.secondMoment, floats: optimizer.second, shape: [optimizer.second.count])]
        try network.save(to: path, metadata: meta, extra: moments)
    }

    /// Loads a checkpoint: the network (architecture from the file), an optimizer with its state, and the loop state.
    public static func load(_ path: String) throws -> (network: UNet, optimizer: Optimizer, checkpoint: Checkpoint) {
        let (net, file) = try UNet.load(path, optimizerState: true)
        let m = file.metadata
        guard let stepText = m["checkpoint.step"], let step = Int(stepText), let epoch = m["checkpoint.epoch"].flatMap(Int.init),
              let settingsText = m["checkpoint.optimizer"], let optimizerStep = m["checkpoint.optimizer_step"].flatMap(Int.init),
              let settings = try? JSONDecoder().decode(Optimizer.Settings.self, from: Data(settingsText.utf8)) else {
            throw NetworkError.weights("\(path): not a training checkpoint (weights only, or its metadata is damaged)")
        }
        let rng = (m["checkpoint.rng"] ?? "").split(separator: ",").compactMap { UInt64($0) }
        let optimizer = try Optimizer(settings, parameters: net.parameters)
        guard let first = file.entry(firstMoment), let second = file.entry(secondMoment) else {
            throw NetworkError.weights("\(path): checkpoint without optimizer state (\(firstMoment), \(secondMoment))")
        }
        try optimizer.restore(step: optimizerStep, first: first.floats(), second: second.floats())
        let extra = m.filter { !$0.key.hasPrefix("checkpoint.") && $0.key != UNet.configKey && $0.key != "format" }
        return (net, optimizer, Checkpoint(step: step, epoch: epoch, rngState: rng, extra: extra))
    }
}
