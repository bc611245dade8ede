import CMPI
import Engine
import Foundation

/// MPI_COMM_WORLD as a `ProcessGroup`, when the process was started by an MPI launcher (`mpirun`, `srun`).
public final class MPIGroup: ProcessGroup, @unchecked Sendable {
    public let rank: Int
    public let size: Int
    /// Ranks on this machine (cores are shared among them).
    public let localSize: Int

    public enum Failure: Error, CustomStringConvertible {
        case initialisation(String)
        case collective(String)
        public var description: String {
            switch self {
            case .initialisation(let m): return "MPI could not start: \(m)"
            case .collective(let m): return "MPI \(m) failed"
            }
        }
    }

    /// Whether an MPI launcher started this process (its environment says so: Open MPI's `mpirun`, PMIx,
    /// MPICH/Hydra and Slurm's PMI). A process started any other way runs alone and never touches MPI.
    public static var launched: Bool {
        let env = ProcessInfo.processInfo.environment
        return ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"].contains { env[$0] != nil }
    }

    /// The world group once joined (nil before, and in a process that runs alone).
    nonisolated(unsafe) public private(set) static var world: MPIGroup?

    /// The world group, initialising MPI on first use. nil when not started by a launcher.
    public static func joinWorld() throws -> MPIGroup? {
        if let world { return world }
        guard launched else { return nil }
        var (rank, size, local): (Int32, Int32, Int32) = (0, 0, 0)
        var message = [CChar](repeating: 0, count: 512)
        guard cmpi_init(&rank, &size, &local, &message, Int32(message.count)) == 0 else {
            throw Failure.initialisation(String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        let group = MPIGroup(rank: Int(rank), size: Int(size), localSize: Int(local))
        world = group
        return group
    }

    private init(rank: Int, size: Int, localSize: Int) {
        (self.rank, self.size, self.localSize) = (rank, size, localSize)
    }

    /// Ends MPI on a normal exit (every rank must call it).
    public func leave() { cmpi_finalize() }

    /// Ends every rank of the job with `code`: what a rank does when it cannot go on, so the others never wait
    /// for it in a collective.
    public func abortJob(code: Int32) -> Never {
        cmpi_abort(code)
        exit(code)
    }

    public func sum(_ values: UnsafeMutablePointer<Float>, count: Int) throws {
        guard cmpi_sum_float(values, Int64(count)) == 0 else { throw Failure.collective("allreduce of \(count) floats") }
    }

    public func sum(_ values: UnsafeMutablePointer<Double>, count: Int) throws {
        guard cmpi_sum_double(values, Int64(count)) == 0 else { throw Failure.collective("allreduce of \(count) doubles") }
    }

    public func broadcast(_ bytes: UnsafeMutableRawPointer, count: Int, from root: Int) throws {
        guard cmpi_broadcast(bytes, Int64(count), Int32(root)) == 0 else { throw Failure.collective("broadcast of \(count) bytes") }
    }

    public func startSum(_ values: UnsafeMutablePointer<Float>, count: Int) throws {
        guard cmpi_start_sum_float(values, Int64(count)) == 0 else { throw Failure.collective("start of a sum of \(count) floats") }
    }

    public func progress() throws { _ = cmpi_progress() }

    public func finishSums() throws {
        guard cmpi_wait_sums() == 0 else { throw Failure.collective("wait for started sums") }
    }

    /// Compute threads for one rank when none were asked for: OMP_NUM_THREADS, else this machine's cores shared
    /// evenly among its ranks (so `mpirun -np 2` on 2 cores runs 1 thread each, not 2 on each core).
    public func defaultThreads() -> Int {
        if let n = ProcessInfo.processInfo.environment["OMP_NUM_THREADS"].flatMap(Int.init), n > 0 { return n }
        return max(1, ProcessInfo.processInfo.activeProcessorCount / max(localSize, 1))
    }
}
