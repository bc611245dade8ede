import Foundation

/// Results of a parallel map, filled by worker threads under a lock.
private final class ParallelResults<T>: @unchecked Sendable {
    let lock = NSLock()
    var next = 0
    var results: [Result<T, Error>?]
    init(_ n: Int) { results = [Result<T, Error>?](repeating: nil, count: n) }
    func take() -> Int { lock.lock(); defer { lock.unlock() }; next += 1; return next - 1 }
    func put(_ i: Int, _ r: Result<T, Error>) { lock.lock(); results[i] = r; lock.unlock() }
}

enum Parallel {
    /// Runs `body(i)` for every i in 0..<count on up to `workers` threads (each takes the next index as it
    /// finishes one), returning the results in index order. One item's failure does not stop the others.
    static func map<T>(count: Int, workers: Int, _ body: @Sendable (Int) throws -> T) -> [Result<T, Error>] {
        let shared = ParallelResults<T>(count)
        DispatchQueue.concurrentPerform(iterations: max(1, min(workers, count))) { _ in
            while true {
                let i = shared.take()
                guard i < count else { return }
                shared.put(i, Result { try body(i) })
            }
        }
        return shared.results.map { $0! }
    }
}
