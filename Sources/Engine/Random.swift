import Foundation

/// Seeded SplitMix64: reproducible on every machine, for initialisation, phantom data and augmentation.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64
    private var spare: Double?

    /// Starts from `state` as given.
    public init(state: UInt64) { self.state = state }

    /// Starts from a mix of `seed`, so nearby seeds give unrelated streams (a raw state s + 1 would replay
    /// the stream of s shifted by one draw).
    public init(mixing seed: UInt64) {
        var z = seed &+ 0x632B_E59B_D9B4_E019
        z = (z ^ (z >> 33)) &* 0xFF51_AFD7_ED55_8CCD
        z = (z ^ (z >> 33)) &* 0xC4CE_B9FE_1A85_EC53
        self.init(state: z ^ (z >> 33))
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    public mutating func uniform() -> Double { Double(next() >> 11) * 0x1p-53 }
    public mutating func uniform(_ lo: Double, _ hi: Double) -> Double { lo + (hi - lo) * uniform() }
    public mutating func chance(_ p: Double) -> Bool { uniform() < p }

    /// Two standard normal values (Box-Muller).
    public mutating func normalPair() -> (Double, Double) {
        let u = max(uniform(), 1e-300), v = uniform()
        let r = (-2 * log(u)).squareRoot()
        return (r * cos(2 * .pi * v), r * sin(2 * .pi * v))
    }

    /// One standard normal value (the pair's second is kept for the next call).
    public mutating func normal() -> Double {
        if let s = spare { spare = nil; return s }
        let (a, b) = normalPair()
        spare = b
        return a
    }
}
