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

    /// The vector instruction sets of this CPU that the engine's kernels use, asked at run time.
    public struct CPUFeatures: OptionSet, Sendable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        public static let avx2 = CPUFeatures(rawValue: Int32(CDNNL_CPU_AVX2))
        /// AVX-512 F, BW, DQ and VL.
        public static let avx512 = CPUFeatures(rawValue: Int32(CDNNL_CPU_AVX512))
        /// AVX-512 bf16 dot products (avx512_bf16).
        public static let avx512BF16 = CPUFeatures(rawValue: Int32(CDNNL_CPU_AVX512_BF16))
    }

    public static var cpuFeatures: CPUFeatures { CPUFeatures(rawValue: cdnnl_cpu_features()) }

    /// Layouts on which SwiftUNet's own kernels (Winograd, backward weights, upsampling) run on this
    /// CPU: blocked8 with AVX2, blocked16 with AVX-512.
    public static var ownKernelLayouts: [Layout] {
        [Layout.blocked8, .blocked16].filter { cdnnl_own_kernels_available($0.cValue) != 0 }
    }

    /// Bytes above which the own kernels (Winograd, upsampling) store an output around the caches
    /// (12 MiB by default: such an output leaves the caches before its reader comes). The values
    /// written do not depend on it.
    public static var streamingStoreThreshold: Int {
        get { Int(cdnnl_stream_threshold()) }
        set { cdnnl_set_stream_threshold(max(0, newValue)) }
    }
}

extension Runtime {
    /// Runs body(unit) for every unit in [0, count) on the compute threads (oneDNN's OpenMP pool, so the work
    /// does not compete with its spinning workers); returns when all have run. Units must be independent
    /// (which thread runs which is unspecified).
    public static func forEachUnit(_ count: Int, _ body: (Int) -> Void) {
        guard count > 1 else {
            if count == 1 { body(0) }
            return
        }
        withoutActuallyEscaping(body) { body in
            var f = body
            withUnsafeMutablePointer(to: &f) { pointer in
                cdnnl_parallel_for(Int64(count), { context, begin, end in
                    let f = context!.assumingMemoryBound(to: ((Int) -> Void).self).pointee
                    for u in Int(begin) ..< Int(end) { f(u) }
                }, pointer)
            }
        }
    }
}
