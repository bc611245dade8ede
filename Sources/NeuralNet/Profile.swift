import Foundation

/// Opt-in time accounting per kind of work (set UNET_PROFILE=1): `unet bench train` prints the table to
/// stderr, to see where a step's time goes. Off, it costs one branch per call.
public enum Profile {
    nonisolated(unsafe) public static var enabled = ["1", "layers"].contains(ProcessInfo.processInfo.environment["UNET_PROFILE"])
    /// UNET_PROFILE=layers: convolutions are accounted per shape and kernel, not per kind.
    nonisolated(unsafe) public static var perLayer = ProcessInfo.processInfo.environment["UNET_PROFILE"] == "layers"
    nonisolated(unsafe) private static var totals: [String: (seconds: Double, calls: Int)] = [:]

    @inline(__always)
    public static func measure<R>(_ label: String, _ body: () throws -> R) rethrows -> R {
        guard enabled else { return try body() }
        let start = DispatchTime.now().uptimeNanoseconds
        let r = try body()
        let t = Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
        totals[label, default: (0, 0)].seconds += t
        totals[label, default: (0, 0)].calls += 1
        return r
    }

    public static func reset() { totals = [:] }

    /// The table, largest first, or "" when profiling is off.
    public static func report() -> String {
        guard enabled else { return "" }
        let all = totals.values.reduce(0) { $0 + $1.seconds }
        return totals.sorted { $0.value.seconds > $1.value.seconds }.map {
            String(format: "%-28@ %8.3f s %6.1f%% %6d calls", $0.key as NSString, $0.value.seconds, 100 * $0.value.seconds / max(all, 1e-12), $0.value.calls)
        }.joined(separator: "\n")
    }
}
