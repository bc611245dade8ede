import CDNNL

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Memory layout of an activation tensor (N, C, spatial...).
public enum Layout: String, Sendable, Hashable {
    /// NCHW / NCDHW, dense: used at the edges (files, losses, the reference).
    case plain
    /// nChw16c / nCdhw16c: channels in blocks of 16, padded with zeros to a multiple of 16.
    /// The fast layout between layers on AVX-512 machines.
    case blocked16
    /// nChw8c / nCdhw8c: blocks of 8, the fast layout on AVX2 machines.
    case blocked8

    /// The blocked layout this CPU's convolution kernels run fastest on.
    public static var native: Layout { cdnnl_preferred_block() == 16 ? .blocked16 : .blocked8 }

    /// Channels per block (1 for plain).
    public var block: Int {
        switch self { case .plain: 1; case .blocked16: 16; case .blocked8: 8 }
    }

    var cValue: Int32 {
        switch self {
        case .plain: Int32(CDNNL_LAYOUT_PLAIN)
        case .blocked16: Int32(CDNNL_LAYOUT_BLOCKED16)
        case .blocked8: Int32(CDNNL_LAYOUT_BLOCKED8)
        }
    }
}

/// Element type of a tensor. Only float32 exists today; bf16 storage is planned, so sizes and
/// kernels ask the tensor instead of assuming `Float`.
public enum ScalarType: String, Sendable, Hashable {
    case float32
    public var byteCount: Int { 4 }
}

/// 64-byte aligned, zero-initialised memory, freed when the last tensor using it goes away.
public final class TensorStorage: @unchecked Sendable {
    public let byteCount: Int
    let base: UnsafeMutableRawPointer

    /// Storage from this size on is mapped from the kernel: zero and untouched until first written (so the
    /// first writes fault its pages in on the threads that compute, not one memset on the allocating
    /// thread; gradients an inference never touches cost nothing), in huge pages where the system allows.
    static let mappedFrom = 2 << 20
    private let mapped: Int

    /// - Throws: `EngineError.allocationFailed` when the request is not satisfiable.
    public init(byteCount: Int) throws {
        guard byteCount >= 0 else { throw EngineError.allocationFailed(bytes: byteCount) }
        if byteCount >= Self.mappedFrom {
            let length = (byteCount + Self.mappedFrom - 1) / Self.mappedFrom * Self.mappedFrom
            let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            guard let p, p != MAP_FAILED else { throw EngineError.allocationFailed(bytes: byteCount) }
            _ = madvise(p, length, MADV_HUGEPAGE)
            base = p
            mapped = length
        } else {
            let rounded = (max(byteCount, 1) + 63) / 64 * 64
            guard let p = aligned_alloc(64, rounded) else { throw EngineError.allocationFailed(bytes: byteCount) }
            memset(p, 0, rounded)
            base = p
            mapped = 0
        }
        self.byteCount = byteCount
    }

    deinit { if mapped > 0 { munmap(base, mapped) } else { free(base) } }
}

/// An n-dimensional float tensor: a view (dims, layout, offset) over shared storage.
///
/// Activations have dims (N, C, H, W) or (N, C, D, H, W). In a blocked layout dims[1] is the
/// logical channel count; storage holds `paddedChannels` channels (zeros in the padding). Parameters and other tensors
/// use `.plain` with any dims (e.g. convolution weights (O, I, k...)).
public struct Tensor: @unchecked Sendable {
    public let dims: [Int]
    public let layout: Layout
    public let scalarType: ScalarType
    public let storage: TensorStorage
    /// Offset of element 0 in the storage, in elements.
    public let offset: Int

    /// Number of logical elements (product of dims).
    public var count: Int { dims.reduce(1, *) }
    public var batch: Int { dims[0] }
    public var channels: Int { dims[1] }
    public var spatial: [Int] { Array(dims.dropFirst(2)) }
    public var spatialRank: Int { dims.count - 2 }
    /// Channel count as stored: rounded up to the layout's block.
    public var paddedChannels: Int { Tensor.paddedChannels(dims[1], layout) }
    /// Number of elements this tensor occupies in storage (padding included).
    public var storedCount: Int { Tensor.storedCount(dims: dims, layout: layout) }

    public static func paddedChannels(_ c: Int, _ layout: Layout) -> Int {
        (c + layout.block - 1) / layout.block * layout.block
    }

    /// Elements a tensor of `dims` occupies in `layout` (channel padding included).
    public static func storedCount(dims: [Int], layout: Layout) -> Int {
        guard layout != .plain else { return dims.reduce(1, *) }
        return dims[0] * paddedChannels(dims[1], layout) * dims.dropFirst(2).reduce(1, *)
    }

    /// A zero-filled tensor.
    /// - Throws: on negative dims, blocked layout without (N, C, spatial) dims, or allocation failure.
    public init(zeros dims: [Int], layout: Layout = .plain, scalarType: ScalarType = .float32) throws {
        try Tensor.validate(dims: dims, layout: layout)
        // Sizes come from files and flags: multiply with overflow checks before allocating.
        var factors = dims
        if layout != .plain { factors[1] = Tensor.paddedChannels(dims[1], layout) }
        var bytes = scalarType.byteCount
        for d in factors {
            let (p, overflow) = bytes.multipliedReportingOverflow(by: d)
            if overflow { throw EngineError.allocationFailed(bytes: Int.max) }
            bytes = p
        }
        self.init(storage: try TensorStorage(byteCount: bytes), offset: 0, dims: dims, layout: layout,
                  scalarType: scalarType)
    }

    /// A plain-layout tensor holding `values` (row-major over `dims`).
    public init(dims: [Int], values: [Float]) throws {
        try Tensor.validate(dims: dims, layout: .plain)
        guard values.count == dims.reduce(1, *) else {
            throw EngineError.shapeMismatch(op: "Tensor(dims:values:)", expected: "\(dims.reduce(1, *)) values for \(dims)",
                                            got: "\(values.count) values")
        }
        try self.init(zeros: dims)
        values.withUnsafeBufferPointer { src in
            floats.update(from: src.baseAddress!, count: values.count)
        }
    }

    /// A view over existing storage (e.g. one parameter inside a flat parameter buffer).
    public init(storage: TensorStorage, offset: Int, dims: [Int], layout: Layout = .plain,
                scalarType: ScalarType = .float32) {
        self.storage = storage
        self.offset = offset
        self.dims = dims
        self.layout = layout
        self.scalarType = scalarType
        precondition(offset >= 0 && (offset + Tensor.storedCount(dims: dims, layout: layout)) * scalarType.byteCount
                     <= storage.byteCount, "tensor view exceeds its storage")
    }

    static func validate(dims: [Int], layout: Layout) throws {
        guard !dims.isEmpty, dims.allSatisfy({ $0 >= 0 }) else {
            throw EngineError.invalidArgument(op: "Tensor", message: "dimensions must be non-negative, got \(dims)")
        }
        if layout != .plain, !(4...5).contains(dims.count) {
            throw EngineError.invalidArgument(op: "Tensor",
                message: "\(layout.rawValue) layout needs (N, C, H, W) or (N, C, D, H, W) dims, got \(dims)")
        }
    }

    /// Raw element pointer. Valid while the tensor (its storage) is alive.
    var floats: UnsafeMutablePointer<Float> {
        storage.base.assumingMemoryBound(to: Float.self) + offset
    }

    /// Calls `body` with the stored elements (padding included, in this tensor's layout).
    public func withUnsafeMutableFloats<R>(_ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        try withExtendedLifetime(storage) {
            try body(UnsafeMutableBufferPointer(start: floats, count: storedCount))
        }
    }

    /// Values in plain row-major order over `dims`, whatever the layout.
    public func toArray() throws -> [Float] {
        let t = layout == .plain ? self : try converted(to: .plain)
        return t.withUnsafeMutableFloats { Array($0) }
    }

    /// A copy in the requested layout (a copy even when the layout is already right).
    public func converted(to target: Layout) throws -> Tensor {
        let out = try Tensor(zeros: dims, layout: target, scalarType: scalarType)
        try copy(into: out)
        return out
    }

    /// Copies values into `out`, which must have the same dims; layouts may differ.
    public func copy(into out: Tensor) throws {
        guard out.dims == dims else {
            throw EngineError.shapeMismatch(op: "copy", expected: "\(dims)", got: "\(out.dims)")
        }
        if out.layout == layout {
            withExtendedLifetime((storage, out.storage)) {
                // Large copies (the skip connections of 3D windows, 268 MB at the top level) on every compute
                // thread: one thread's copy runs at a fraction of the memory bandwidth.
                let (src, dst, n) = (floats, out.floats, storedCount)
                let unit = 1 << 18
                guard n >= 2 * unit else { dst.update(from: src, count: n); return }
                Runtime.forEachUnit((n + unit - 1) / unit) { u in
                    let start = u * unit
                    (dst + start).update(from: src + start, count: min(unit, n - start))
                }
            }
            return
        }
        let r = try Reorder.cached(dims: dims, from: layout, to: out.layout)
        try r.execute(from: self, to: out)
    }

    /// Copies `source`'s values into this tensor (same dims; layouts may differ).
    public func copy(from source: Tensor) throws { try source.copy(into: self) }

    /// Sets every stored element (padding included) to zero.
    public func zero() {
        withExtendedLifetime(storage) { floats.update(repeating: 0, count: storedCount) }
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        "Tensor(\(dims.map(String.init).joined(separator: "x")), \(layout.rawValue))"
    }
}

/// Shape text used in error messages, e.g. "2x32x16x16".
func shapeText(_ dims: [Int]) -> String { dims.map(String.init).joined(separator: "x") }
