import Engine
import Foundation

/// JSON with sorted keys, so files written from the same state are byte-identical.
public let sortedJSON: JSONEncoder = {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys]
    return e
}()

/// UNet weights as safetensors under PyTorch's state_dict names, so files move both ways:
/// `safetensors.torch.save_file(model.state_dict(), path)` loads here, and our files load with
/// `model.load_state_dict(safetensors.torch.load_file(path))`.
extension UNet {
    /// Tensors in a checkpoint that are not weights (optimizer state) start with this prefix.
    public static let optimizerPrefix = "optimizer/"
    static let configKey = "swiftunet.config"

    /// The state dict: every parameter and buffer as float32, plus `num_batches_tracked` (int64 scalar)
    /// for each batch norm.
    public func stateEntries() throws -> [Safetensors.Entry] {
        var out: [Safetensors.Entry] = []
        for (h, e) in parameters.entries.enumerated() {
            out.append(Safetensors.Entry(name: e.name, floats: try parameters.value(h).toArray(), shape: e.dims))
            if e.name.hasSuffix(".running_var") {
                let prefix = String(e.name.dropLast(".running_var".count))
                let n = Int64(parameters.batchesTracked[prefix] ?? 0)
                out.append(Safetensors.Entry(name: prefix + ".num_batches_tracked", dtype: .i64, shape: [],
                                             bytes: withUnsafeBytes(of: n.littleEndian) { Array($0) }))
            }
        }
        return out
    }

    /// Writes the weights (atomically), with the configuration in the metadata.
    public func save(to path: String, metadata: [String: String] = [:], extra: [Safetensors.Entry] = []) throws {
        var meta = metadata
        meta["format"] = "pt"
        meta[Self.configKey] = String(decoding: try sortedJSON.encode(config), as: UTF8.self)
        try Safetensors.write(try stateEntries() + extra, metadata: meta, to: path)
    }

    /// Loads a weight file, inferring the architecture from its names and shapes (or its metadata).
    /// `override` replaces the inferred configuration (it must still match every tensor).
    /// The returned file holds the optimizer's tensors only with `optimizerState` (a checkpoint resumed).
    public static func load(_ path: String, override: UNetConfig? = nil, layout: Layout = .native,
                            optimizerState: Bool = false) throws -> (UNet, Safetensors.File) {
        let file = try Safetensors.read(path, keeping: { optimizerState || !$0.hasPrefix(optimizerPrefix) })
        let config = try override ?? inferConfig(file, path: path)
        // No random initialisation: loadState sets every parameter or throws.
        let net = try UNet(config: config, layout: layout, initialized: false)
        try net.loadState(file, path: path)
        return (net, file)
    }

    /// Copies every tensor of `file` into the network. Missing, unknown, wrongly shaped or non-float
    /// tensors are all reported, each by name.
    public func loadState(_ file: Safetensors.File, path: String) throws {
        var problems: [String] = []
        var seen = Set<String>()
        for e in file.entries {
            if e.name.hasPrefix(Self.optimizerPrefix) { continue }
            seen.insert(e.name)
            if e.name.hasSuffix(".num_batches_tracked") {
                let prefix = String(e.name.dropLast(".num_batches_tracked".count))
                guard parameters.batchesTracked[prefix] != nil else { problems.append("unknown tensor \(e.name)"); continue }
                guard e.shape.isEmpty || e.shape == [1], let n = e.integer() else {
                    problems.append("tensor \(e.name): expected one integer, got shape \(e.shape) of \(e.dtype.rawValue)"); continue
                }
                parameters.batchesTracked[prefix] = n
                continue
            }
            guard let h = parameters.handle(named: e.name) else { problems.append("unknown tensor \(e.name)"); continue }
            let expected = parameters.entries[h].dims
            guard e.dtype.isFloat else { problems.append("tensor \(e.name): dtype \(e.dtype.rawValue), expected a float type"); continue }
            guard e.shape == expected else { problems.append("tensor \(e.name): shape \(e.shape), expected \(expected)"); continue }
            let values = e.floats()
            parameters.value(h).withUnsafeMutableFloats { v in
                values.withUnsafeBufferPointer { v.baseAddress!.update(from: $0.baseAddress!, count: values.count) }
            }
        }
        for e in parameters.entries where !seen.contains(e.name) { problems.append("missing tensor \(e.name)") }
        if !problems.isEmpty {
            let shown = problems.prefix(12).joined(separator: "\n  ")
            throw NetworkError.weights("\(path): does not match the network:\n  \(shown)" + (problems.count > 12 ? "\n  ... and \(problems.count - 12) more" : ""))
        }
    }

    /// The architecture a state dict describes: dimension and kernel sizes from the convolution shapes,
    /// depth from the number of `downsamples.*`, filters from each level's first convolution, residual
    /// blocks from `input_block.conv2.weight` (plain: `input_block.conv2.conv.weight`), batch norm from
    /// the presence of running statistics, strides from the transposed convolutions' kernels.
    /// Metadata written by SwiftUNet (`swiftunet.config`) is used when present.
    public static func inferConfig(_ file: Safetensors.File, path: String) throws -> UNetConfig {
        if let text = file.metadata[configKey], let config = try? JSONDecoder().decode(UNetConfig.self, from: Data(text.utf8)) {
            return config
        }
        func shape(_ name: String) -> [Int]? { file.entry(name)?.shape }
        func fail(_ m: String) -> NetworkError { .weights("\(path): cannot infer the UNet: \(m)") }
        guard let first = shape("input_block.conv1.conv.weight"), first.count == 4 || first.count == 5 else {
            throw fail("no 4D or 5D tensor input_block.conv1.conv.weight")
        }
        let rank = first.count - 2
        var downsamples = 0
        while shape("downsamples.\(downsamples).conv1.conv.weight") != nil { downsamples += 1 }
        let depth = downsamples + 2
        let names = ["input_block"] + (0 ..< downsamples).map { "downsamples.\($0)" } + ["bottleneck"]
        var filters: [Int] = [], kernels: [Int] = []
        for n in names {
            guard let s = shape(n + ".conv1.conv.weight"), s.count == rank + 2 else { throw fail("no tensor \(n).conv1.conv.weight of rank \(rank + 2)") }
            filters.append(s[0])
            kernels.append(s[2])
        }
        let residual: Bool
        if shape("input_block.conv2.weight") != nil { residual = true }
        else if shape("input_block.conv2.conv.weight") != nil { residual = false }
        else { throw fail("neither input_block.conv2.weight (residual) nor input_block.conv2.conv.weight (plain)") }
        let norm: NormKind = shape("input_block.conv1.norm.running_mean") != nil ? .batch : .instance
        guard let out = shape("output_block.conv.weight") else { throw fail("no tensor output_block.conv.weight") }
        var heads = 0
        while shape("deep_supervision_heads.\(heads).conv.weight") != nil { heads += 1 }
        var strides = [1] + [Int](repeating: 2, count: depth - 1)
        for j in 0 ..< depth - 1 {
            if let s = shape("upsamples.\(j).transp_conv.weight"), s.count == rank + 2 { strides[depth - 1 - j] = s[2] }
        }
        var config = UNetConfig(dimension: rank, inputChannels: first[1], classes: out[0], depth: depth, filterCap: Int.max,
                                residual: residual, norm: norm, deepSupervisionHeads: heads)
        config.filters = filters
        config.kernels = kernels
        config.strides = strides
        if let slope = file.metadata["negative_slope"].flatMap(Float.init) { config.negativeSlope = slope }
        return config
    }
}
