import Engine
import Foundation

/// Every named tensor of a network, stored in three flat buffers: trainable parameters, their
/// gradients (same offsets), and non-trainable buffers (batch norm running statistics). Flat storage
/// makes an optimizer one loop and a weight file one pass.
///
/// Names and shapes are PyTorch's `state_dict` ones (e.g. `input_block.conv1.conv.weight`, (O, I, k...)).
public final class ParameterSet: @unchecked Sendable {
    public enum Kind: Sendable { case trainable, buffer }

    public struct Entry: Sendable {
        public let name: String
        public let dims: [Int]
        public let kind: Kind
        /// Offset in elements into `values`/`gradients` (trainable) or `buffers` (buffer).
        public let offset: Int
        public var count: Int { dims.reduce(1, *) }
    }

    public private(set) var entries: [Entry] = []
    private var index: [String: Int] = [:]
    public private(set) var trainableCount = 0
    public private(set) var bufferCount = 0
    /// Batch norm layers' `num_batches_tracked`, by the layer's prefix (e.g. `input_block.conv1.norm`).
    public var batchesTracked: [String: Int] = [:]

    private var valueStorage: TensorStorage?
    private var gradientStorage: TensorStorage?
    private var bufferStorage: TensorStorage?

    init() {}

    /// Registers a tensor before `allocate()`; returns its handle.
    @discardableResult
    func register(_ name: String, dims: [Int], kind: Kind = .trainable) -> Int {
        precondition(valueStorage == nil, "register before allocate")
        precondition(index[name] == nil, "duplicate parameter \(name)")
        let n = dims.reduce(1, *)
        let offset: Int
        switch kind {
        case .trainable:
            // Keep every tensor 64-byte aligned inside the flat buffer.
            offset = (trainableCount + 15) / 16 * 16
            trainableCount = offset + n
        case .buffer:
            offset = (bufferCount + 15) / 16 * 16
            bufferCount = offset + n
        }
        index[name] = entries.count
        entries.append(Entry(name: name, dims: dims, kind: kind, offset: offset))
        return entries.count - 1
    }

    func allocate() throws {
        valueStorage = try TensorStorage(byteCount: max(1, trainableCount) * 4)
        gradientStorage = try TensorStorage(byteCount: max(1, trainableCount) * 4)
        bufferStorage = try TensorStorage(byteCount: max(1, bufferCount) * 4)
    }

    /// Number of trainable scalars (what PyTorch's `sum(p.numel() for p in model.parameters())` counts).
    public var parameterCount: Int { entries.filter { $0.kind == .trainable }.reduce(0) { $0 + $1.count } }

    public func entry(named name: String) -> Entry? { index[name].map { entries[$0] } }
    public func handle(named name: String) -> Int? { index[name] }

    /// The value tensor of entry `handle` (a view: writes go into the set).
    public func value(_ handle: Int) -> Tensor {
        let e = entries[handle]
        return Tensor(storage: e.kind == .trainable ? valueStorage! : bufferStorage!, offset: e.offset, dims: e.dims)
    }

    /// The gradient tensor of trainable entry `handle`.
    public func gradient(_ handle: Int) -> Tensor {
        let e = entries[handle]
        precondition(e.kind == .trainable, "\(e.name) has no gradient")
        return Tensor(storage: gradientStorage!, offset: e.offset, dims: e.dims)
    }

    public func value(named name: String) -> Tensor? { index[name].map { value($0) } }

    /// Sets every gradient to zero (backward passes add into gradients).
    public func zeroGradients() {
        Tensor(storage: gradientStorage!, offset: 0, dims: [trainableCount]).zero()
    }

    /// The flat trainable values and gradients (alignment gaps included, always zero in both), for optimizers.
    public func withFlatBuffers<R>(_ body: (UnsafeMutableBufferPointer<Float>, UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        let v = Tensor(storage: valueStorage!, offset: 0, dims: [trainableCount])
        let g = Tensor(storage: gradientStorage!, offset: 0, dims: [trainableCount])
        return try v.withUnsafeMutableFloats { vp in try g.withUnsafeMutableFloats { gp in try body(vp, gp) } }
    }

    /// The flat non-trainable buffers (batch norm running statistics; alignment gaps included).
    public func withFlatStatistics<R>(_ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        try Tensor(storage: bufferStorage!, offset: 0, dims: [max(1, bufferCount)]).withUnsafeMutableFloats { try body($0) }
    }

    /// Copies values of every entry (and batch counts) from `other`, which must have the same names and shapes.
    public func copyValues(from other: ParameterSet) throws {
        for e in entries {
            guard let o = other.entry(named: e.name), o.dims == e.dims else {
                throw NetworkError.weights("tensor \(e.name): missing or shaped differently in the source")
            }
            try value(index[e.name]!).copy(from: other.value(other.handle(named: e.name)!))
        }
        batchesTracked = other.batchesTracked
    }
}

/// Errors of the network layer: configuration, weight files, optimizer settings.
public enum NetworkError: Error, CustomStringConvertible, Equatable {
    case configuration(String)
    case weights(String)
    case invalidArgument(String)

    public var description: String {
        switch self {
        case let .configuration(m): return "network configuration: \(m)"
        case let .weights(m): return m
        case let .invalidArgument(m): return m
        }
    }
}
