import Foundation

/// Progress of a long job on stderr: a bar with rate and ETA on a terminal, plain periodic lines otherwise
/// (logs, CI). Thread-safe; `advance` may be called from worker threads.
public final class ProgressReporter: @unchecked Sendable {
    private let total: Int
    private let label: String
    private let unit: String
    private let interactive: Bool
    private let start = Date()
    private var done = 0
    private var lastLine = Date.distantPast
    private let lock = NSLock()

    public init(total: Int, label: String, unit: String = "case") {
        self.total = total
        self.label = label
        self.unit = unit
        interactive = isatty(STDERR_FILENO) != 0 && ProcessInfo.processInfo.environment["TERM"] != "dumb"
    }

    /// Marks `count` more items done; `note` is shown beside the bar (e.g. the case just finished). `eta`, when
    /// the caller knows better (e.g. a time budget), replaces the estimate from the rate so far.
    public func advance(by count: Int = 1, note: String = "", eta: Double? = nil) {
        if Self.silent { return }
        lock.lock()
        defer { lock.unlock() }
        done += count
        let elapsed = Date().timeIntervalSince(start)
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let eta = eta ?? (rate > 0 ? Double(total - done) / rate : 0)
        let stats = String(format: "%d/%d %@s, %.2f %@/s, ETA %@", done, total, unit, rate, unit, Self.duration(eta))
        if interactive {
            let width = 30
            let filled = total > 0 ? width * done / total : width
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            FileHandle.standardError.write(Data("\r\u{1B}[K\(label) [\(bar)] \(stats)  \(note)".utf8))
            if done >= total { FileHandle.standardError.write(Data("\n".utf8)) }
        } else if done >= total || Date().timeIntervalSince(lastLine) >= 5 {
            lastLine = Date()
            FileHandle.standardError.write(Data("\(label): \(stats) \(note)\n".utf8))
        }
    }

    /// No progress and no information lines at all (set once at start-up, e.g. on every process of a parallel
    /// job but the first, which speaks for all).
    nonisolated(unsafe) public static var silent = false

    /// A line of information for the person watching (stderr, beside the progress lines).
    public static func say(_ text: String) {
        if silent { return }
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    /// "1h02m", "3m05s", "12s".
    public static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "?" }
        let s = Int(seconds.rounded())
        if s >= 3600 { return String(format: "%dh%02dm", s / 3600, s % 3600 / 60) }
        if s >= 60 { return String(format: "%dm%02ds", s / 60, s % 60) }
        return "\(s)s"
    }
}
