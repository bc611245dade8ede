import CDNNL
import Synchronization

/// Process-wide settings of the compute engine.
public enum Runtime {
    /// Number of threads oneDNN kernels use (OpenMP). Defaults to all cores (or OMP_NUM_THREADS).
    public static var threads: Int { Int(cdnnl_max_threads()) }

    /// Sets the number of compute threads (>= 1) and returns the count in effect.
    @discardableResult
    public static func setThreads(_ n: Int) -> Int { Int(cdnnl_set_threads(Int32(max(1, n)))) }

    /// oneDNN's version, e.g. "2.6.3".
    public static var backendVersion: String { String(cString: cdnnl_version()) }
}

/// Reorders activations between layouts (a oneDNN reorder; cached per shape).
final class Reorder: @unchecked Sendable {
    let dims: [Int]
    let from: Layout, to: Layout
    private let handle: OpaquePointer
    private let lock = Mutex(())

    private static let cache = Mutex<[String: Reorder]>([:])

    static func cached(dims: [Int], from: Layout, to: Layout) throws -> Reorder {
        let key = "\(dims)|\(from)|\(to)"
        if let r = cache.withLock({ $0[key] }) { return r }
        let r = try Reorder(dims: dims, from: from, to: to)
        cache.withLock { $0[key] = r }
        return r
    }

    init(dims: [Int], from: Layout, to: Layout) throws {
        guard (4...5).contains(dims.count) else {
            throw EngineError.invalidArgument(op: "reorder", message: "layout changes need (N, C, spatial...) dims, got \(dims)")
        }
        self.dims = dims
        self.from = from
        self.to = to
        var h: OpaquePointer?
        let spatial = dims.dropFirst(2).map(Int64.init)
        try check(spatial.withUnsafeBufferPointer {
            cdnnl_reorder_create(&h, Int32(dims.count - 2), Int64(dims[0]), Int64(dims[1]), $0.baseAddress,
                                 from.cValue, to.cValue)
        }, "reorder \(shapeText(dims)) \(from.rawValue) -> \(to.rawValue)")
        handle = h!
    }

    deinit { cdnnl_reorder_destroy(handle) }

    func execute(from src: Tensor, to dst: Tensor) throws {
        try lock.withLock { _ in
            try withExtendedLifetime((src.storage, dst.storage)) {
                try check(cdnnl_reorder_execute(handle, src.floats, dst.floats), "reorder")
            }
        }
    }
}
