import Engine
import Testing

/// Seeded SplitMix64: reproducible test data without Foundation.
struct SeededRandom {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    mutating func uniform() -> Double { Double(next() >> 11) / Double(1 << 53) * 2 - 1 }
    mutating func values(_ n: Int, scale: Double = 1) -> [Double] { (0..<n).map { _ in uniform() * scale } }
    mutating func labels(_ n: Int, classes: Int) -> [UInt8] { (0..<n).map { _ in UInt8(next() % UInt64(classes)) } }
}

/// A tensor in `layout` holding `values` (plain order), rounded to Float.
func tensor(_ dims: [Int], _ values: [Double], layout: Layout = .plain) throws -> Tensor {
    let plain = try Tensor(dims: dims, values: values.map(Float.init))
    return layout == .plain ? plain : try plain.converted(to: layout)
}

/// The same values as Double, for feeding the reference exactly what the fast path saw.
func rounded(_ v: [Double]) -> [Double] { v.map { Double(Float($0)) } }

/// Max |a - b| relative to max |b| (the tests' error measure).
func relativeError(_ a: [Float], _ b: [Double]) -> Double {
    precondition(a.count == b.count, "compared arrays differ in length: \(a.count) vs \(b.count)")
    let scale = max(b.map(abs).max() ?? 0, 1e-12)
    var worst = 0.0
    for i in 0..<a.count { worst = max(worst, abs(Double(a[i]) - b[i])) }
    return worst / scale
}

func expectClose(_ a: [Float], _ b: [Double], tolerance: Double = 1e-4, _ what: String,
                 sourceLocation: SourceLocation = #_sourceLocation) {
    let e = relativeError(a, b)
    #expect(e <= tolerance, "\(what): relative error \(e) > \(tolerance)", sourceLocation: sourceLocation)
}

/// Central finite difference of a Double function at every coordinate of x.
func numericGradient(_ x: [Double], h: Double = 1e-6, _ f: ([Double]) -> Double) -> [Double] {
    var x = x
    return (0..<x.count).map { i in
        let old = x[i]
        x[i] = old + h; let up = f(x)
        x[i] = old - h; let down = f(x)
        x[i] = old
        return (up - down) / (2 * h)
    }
}

func dot(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }

/// Every layout a kernel must accept.
let allLayouts: [Layout] = [.plain, .blocked8, .blocked16]
