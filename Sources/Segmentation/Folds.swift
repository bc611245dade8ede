import FileSupport
import Foundation
import MedicalImaging

/// NumPy's legacy `RandomState` (MT19937 seeded with one 32-bit integer), reproduced so that case splits
/// match scikit-learn's `KFold(shuffle=True, random_state=seed)`, which Composer (seed 0) and NVIDIA
/// (seed 12345) use: the same seed gives the same "fold 0" as theirs.
struct LegacyMersenneTwister {
    private var state = [UInt32](repeating: 0, count: 624)
    private var index = 624

    init(seed: UInt32) {
        state[0] = seed
        for i in 1 ..< 624 {
            state[i] = 1_812_433_253 &* (state[i - 1] ^ (state[i - 1] >> 30)) &+ UInt32(i)
        }
    }

    mutating func next32() -> UInt32 {
        if index >= 624 {
            for i in 0 ..< 624 {
                let y = (state[i] & 0x8000_0000) | (state[(i + 1) % 624] & 0x7FFF_FFFF)
                state[i] = state[(i + 397) % 624] ^ (y >> 1) ^ ((y & 1) != 0 ? 0x9908_B0DF : 0)
            }
            index = 0
        }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }

    /// A uniform integer in 0...max by masked rejection, as numpy's legacy `random_interval` draws it.
    mutating func interval(_ max: UInt32) -> UInt32 {
        if max == 0 { return 0 }
        var mask = max
        mask |= mask >> 1; mask |= mask >> 2; mask |= mask >> 4; mask |= mask >> 8; mask |= mask >> 16
        while true {
            let v = next32() & mask
            if v <= max { return v }
        }
    }

    /// In-place Fisher-Yates shuffle in the order `RandomState.shuffle` uses (from the end).
    mutating func shuffle<T>(_ items: inout [T]) {
        guard items.count > 1 else { return }
        for i in stride(from: items.count - 1, through: 1, by: -1) {
            let j = Int(interval(UInt32(i)))
            items.swapAt(i, j)
        }
    }
}

/// A k-fold split of case ids, stored as `splits.json` beside the preprocessed cases.
public struct FoldSplits: Codable, Sendable, Equatable {
    public struct Fold: Codable, Sendable, Equatable {
        public var train: [String]
        public var val: [String]
    }
    public var seed: UInt32
    public var method: String
    public var folds: [Fold]

    /// scikit-learn `KFold(n_splits: k, shuffle: true, random_state: seed)` over `ids` sorted by name (the
    /// order Composer's sorted glob gives): fold i validates on the i-th chunk of the shuffled order
    /// (the first n % k chunks one larger) and trains on the rest, both listed in sorted order.
    public static func kFold(ids: [String], folds k: Int = 5, seed: UInt32 = 0) throws -> FoldSplits {
        let sorted = ids.sorted()
        guard k >= 2, sorted.count >= k else {
            throw SegmentationError.invalidArgument("\(k)-fold split needs at least \(k) cases, found \(sorted.count)")
        }
        var order = Array(0 ..< sorted.count)
        var rng = LegacyMersenneTwister(seed: seed)
        rng.shuffle(&order)
        var folds: [Fold] = []
        var start = 0
        for i in 0 ..< k {
            let size = sorted.count / k + (i < sorted.count % k ? 1 : 0)
            let val = Set(order[start ..< start + size])
            start += size
            folds.append(Fold(train: sorted.indices.filter { !val.contains($0) }.map { sorted[$0] },
                              val: val.sorted().map { sorted[$0] }))
        }
        return FoldSplits(seed: seed, method: "sklearn.model_selection.KFold(n_splits=\(k), shuffle=True, random_state=\(seed)) over sorted case ids", folds: folds)
    }

    /// Reads `splits.json` from `folder`, or creates it (once) for `ids`; an existing file is reused
    /// only when it covers exactly these cases.
    public static func loadOrCreate(folder: String, ids: [String], seed: UInt32) throws -> FoldSplits {
        let path = folder + "/splits.json"
        if FileManager.default.fileExists(atPath: path) {
            let existing: FoldSplits
            do {
                existing = try JSONDecoder().decode(FoldSplits.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
            } catch {
                throw SegmentationError.invalidFile(path, "not a splits file: \(error)")
            }
            let covered = Set(existing.folds.first.map { $0.train + $0.val } ?? [])
            guard covered == Set(ids) else {
                throw SegmentationError.invalidFile(path, "covers \(covered.count) cases, the folder holds \(ids.count) others; remove it to split anew")
            }
            return existing
        }
        let splits = try kFold(ids: ids, seed: seed)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(Array(try encoder.encode(splits)), to: path)
        return splits
    }
}
