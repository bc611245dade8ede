/// The processes that train one model together, each on its share of every batch (data parallelism). Every
/// operation is collective: all members call it in the same order with the same counts, and it returns on each
/// once all have called it. A single process has no group (nil wherever one is taken).
public protocol ProcessGroup: AnyObject, Sendable {
    /// This process's index, 0 ..< size.
    var rank: Int { get }
    var size: Int { get }
    /// Replaces `count` floats at `values` by their sum over the group.
    func sum(_ values: UnsafeMutablePointer<Float>, count: Int) throws
    /// Replaces `count` doubles at `values` by their sum over the group.
    func sum(_ values: UnsafeMutablePointer<Double>, count: Int) throws
    /// Copies `count` bytes at `bytes` on member `root` to every member.
    func broadcast(_ bytes: UnsafeMutableRawPointer, count: Int, from root: Int) throws
    /// Starts replacing `count` floats at `values` by their sum over the group and returns, possibly before it is
    /// done (so communication overlaps the computation that follows); the values are the sum once `finishSums()`
    /// returns, and must not be touched before. Members start the same sums in the same order.
    func startSum(_ values: UnsafeMutablePointer<Float>, count: Int) throws
    /// Lets started sums advance (call it now and then while computing).
    func progress() throws
    /// Waits until every started sum is done.
    func finishSums() throws
}

extension ProcessGroup {
    /// A group without nonblocking sums sums at once.
    public func startSum(_ values: UnsafeMutablePointer<Float>, count: Int) throws { try sum(values, count: count) }
    public func progress() throws {}
    public func finishSums() throws {}

    /// The element-wise sum of `values` over the group.
    public func sum(_ values: [Double]) throws -> [Double] {
        var v = values
        try v.withUnsafeMutableBufferPointer { try sum($0.baseAddress!, count: $0.count) }
        return v
    }

    /// Member `root`'s `values` (the same count on every member).
    public func broadcast<T: BitwiseCopyable>(_ values: [T], from root: Int) throws -> [T] {
        var v = values
        try v.withUnsafeMutableBytes { try broadcast($0.baseAddress!, count: $0.count, from: root) }
        return v
    }

    /// The first sample of a global batch of `batch` that member `rank` computes, and how many: the batch is
    /// cut into `size` contiguous shares whose lengths differ by at most one.
    public func share(of batch: Int, rank r: Int? = nil) -> Range<Int> {
        let r = r ?? rank
        return (batch * r / size) ..< (batch * (r + 1) / size)
    }
}
