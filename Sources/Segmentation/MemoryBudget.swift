import Foundation

/// What a case will need in memory, checked before the work starts, so that a volume too large for the
/// machine is refused with a message instead of ending in the kernel's out-of-memory kill.
///
/// The factors are measured peaks (`/usr/bin/time -v`, a 512x512x400 4-channel float32 volume, 1.68 GB as
/// float32): in units of the case's channels as float32, `unet predict` peaks at 4.3x in 2D (the image, its
/// preprocessed copy, the logits of 4 classes and their restored probabilities) and 3.7x in 3D (the sliding
/// window's sums take the place of the logits), `unet preprocess` at 3.0x per case in flight (the file's values,
/// the channels, the cropped and normalised copy).
public enum MemoryBudget {
    /// Peak bytes per byte of the case's float32 channels.
    public static let prediction2D = 4.5
    public static let prediction3D = 4.0
    public static let preprocessing = 3.2
    /// The network, its workspace and the process itself.
    public static let fixed = 1 << 30

    /// Bytes this process can still take: the kernel's MemAvailable, or less under a cgroup (container) limit.
    /// `UNET_MEMORY_AVAILABLE` (bytes, or with a K/M/G suffix) overrides both, to try a smaller machine.
    public static func available() -> Int? {
        if let text = ProcessInfo.processInfo.environment["UNET_MEMORY_AVAILABLE"], let v = parseBytes(text) { return v }
        var best: Int?
        if let info = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
           let line = info.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
           let kb = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) {
            best = kb * 1024
        }
        if let limit = (try? String(contentsOfFile: "/sys/fs/cgroup/memory.max", encoding: .utf8)).flatMap({ Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }),
           let used = (try? String(contentsOfFile: "/sys/fs/cgroup/memory.current", encoding: .utf8)).flatMap({ Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }) {
            best = min(best ?? .max, max(0, limit - used))
        }
        return best
    }

    static func parseBytes(_ text: String) -> Int? {
        let t = text.trimmingCharacters(in: .whitespaces).uppercased()
        let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
        if let last = t.last, let unit = units[last], let v = Double(t.dropLast()) { return Int(v * Double(unit)) }
        return Int(t)
    }

    static func gigabytes(_ bytes: Int) -> String { String(format: "%.1f GB", Double(bytes) / 1e9) }

    /// Throws when `need` bytes exceed what is available; `what` names the work and the case, `basis` how the
    /// need was estimated. Returns what is available (nil: unknown).
    @discardableResult
    public static func check(need: Int, what: String, basis: String) throws -> Int? {
        let free = available()
        guard let free, need > free else { return free }
        throw SegmentationError.invalidArgument("\(what) needs about \(gigabytes(need)) of memory (\(basis)); \(gigabytes(free)) are available. "
            + "Free memory, or use a machine with more")
    }
}
