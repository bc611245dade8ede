import CDNNL
import Synchronization

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
