import CDNNL

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
