import Engine
import Foundation
import MedicalImaging

extension SplitMix64 {
    /// Two standard normal values as Float (phantom noise, augmentation).
    mutating func normalFloats() -> (Float, Float) {
        let (a, b) = normalPair()
        return (Float(a), Float(b))
    }
}

/// Healthy anatomy on a voxel grid as soft tissue fractions (white matter, grey matter, CSF; zero outside
/// the brain). Arrays are in NIfTI index order, x fastest: index = (z * Y + y) * X + x.
public struct Anatomy: Sendable {
    public var shape: [Int]  // X, Y, Z
    public var wm: [Float]
    public var gm: [Float]
    public var csf: [Float]
    /// Indices of voxels inside the brain (wm + gm + csf > 0).
    public var brain: [Int32]
    public var header: NiftiHeader
    public var source: String

    /// The BraTS-grid brain template: tissue fractions from its T1 intensities (CSF dark, grey matter
    /// ~0.8 and white matter ~1.0 of the white-matter level, linear in between).
    public static func template(t1Path: String) throws -> Anatomy {
        let image = try NiftiImage.read(t1Path)
        guard image.shape.count == 3 else { throw SegmentationError.invalidFile(t1Path, "expected a 3D T1 image, shape is \(image.shape)") }
        let t1 = image.floatValues()
        var brainValues = t1.filter { $0 > 0 }
        guard brainValues.count > 1000 else { throw SegmentationError.invalidFile(t1Path, "fewer than 1,000 brain voxels (> 0)") }
        brainValues.sort()
        let wmLevel = brainValues[Int(Double(brainValues.count) * 0.92)]  // white matter: the bright mode
        var a = Anatomy(shape: image.shape, wm: [], gm: [], csf: [], brain: [], header: image.header, source: t1Path)
        let n = t1.count
        a.wm = [Float](repeating: 0, count: n)
        a.gm = a.wm
        a.csf = a.wm
        for i in 0 ..< n where t1[i] > 0 {
            let t = t1[i] / wmLevel
            let (w, g, c): (Float, Float, Float)
            if t <= 0.3 { (w, g, c) = (0, 0, 1) }
            else if t < 0.8 { let f = (t - 0.3) / 0.5; (w, g, c) = (0, f, 1 - f) }
            else if t < 1.0 { let f = (t - 0.8) / 0.2; (w, g, c) = (f, 1 - f, 0) }
            else { (w, g, c) = (1, 0, 0) }
            a.wm[i] = w; a.gm[i] = g; a.csf[i] = c
            a.brain.append(Int32(i))
        }
        return a
    }

    /// A procedural brain on the BraTS grid (240 x 240 x 155, 1 mm) for machines without the template:
    /// an ellipsoid with an irregular surface, a folded grey-matter ribbon with CSF in the sulci,
    /// interhemispheric fissure, lateral ventricles and thalami.
    public static func procedural(shape: [Int] = [240, 240, 155]) -> Anatomy {
        let (X, Y, Z) = (shape[0], shape[1], shape[2])
        // Proportions of a brain on the BraTS grid (semi-axes 68, 83, 62 mm in 240 x 240 x 155); smaller
        // grids (tests) get a smaller brain with the same layout.
        let centre = [Double(X) / 2, Double(Y) * 0.45, Double(Z) * 0.47]
        let axes = [68.0 / 240 * Double(X), 83.0 / 240 * Double(Y), 62.0 / 155 * Double(Z)]
        var a = Anatomy(shape: shape, wm: [Float](repeating: 0, count: X * Y * Z), gm: [], csf: [], brain: [],
                        header: NiftiHeader(), source: "procedural")
        a.gm = a.wm
        a.csf = a.wm
        a.header.shape = shape
        a.header.setAffine(.identity)
        func smooth(_ edge: Double, _ width: Double, _ v: Double) -> Double {  // 0 below edge-width, 1 above edge+width
            let t = min(1, max(0, (v - edge + width) / (2 * width)))
            return t * t * (3 - 2 * t)
        }
        for z in 0 ..< Z {
            for y in 0 ..< Y {
                for x in 0 ..< X {
                    let q = [(Double(x) - centre[0]) / axes[0], (Double(y) - centre[1]) / axes[1], (Double(z) - centre[2]) / axes[2]]
                    // Position in mm of the full-size brain, so structures keep their layout on any grid.
                    let p = [q[0] * 68, q[1] * 83, q[2] * 62]
                    var rho = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2]).squareRoot()
                    if rho > 1.08 { continue }
                    // Irregular outline and flattened base.
                    rho *= 1 + 0.035 * sin(3 * atan2(q[1], q[0]) + 2 * q[2]) + (q[2] < -0.4 ? 0.25 * (-0.4 - q[2]) : 0)
                    let inside = 1 - smooth(1, 0.012, rho)
                    if inside <= 0.001 { continue }
                    // Gyri: a 3D folding pattern makes the grey ribbon 3-11 mm deep and opens CSF-filled sulci.
                    let fold = sin(0.25 * p[0] + 1.5 * sin(0.07 * p[1])) * sin(0.22 * p[1] + 1.2 * sin(0.06 * p[2]))
                        * sin(0.24 * p[2] + 1.1 * sin(0.05 * p[0]))
                    let depth = 0.05 + 0.09 * (fold + 1) / 2  // ribbon thickness in units of rho
                    let sulcus = fold > 0.3 ? 0.02 + 0.11 * (fold - 0.3) / 0.7 : 0.015
                    var csf = smooth(1 - sulcus, 0.01, rho)
                    var gm = smooth(1 - depth, 0.015, rho) * (1 - csf)
                    // Interhemispheric fissure.
                    let fissure = (1 - smooth(1.6, 0.8, abs(p[0]))) * smooth(0.55, 0.1, rho) * (q[2] > -0.3 ? 1 : 0)
                    csf = max(csf, fissure)
                    // Lateral ventricles (two curved ellipsoids) and thalami (deep grey matter).
                    for side in [-1.0, 1.0] {
                        let v = [(p[0] - side * 9) / 7, (p[1] + 4 + 0.004 * p[2] * p[2]) / 26, (p[2] - 6 - 0.01 * p[1] * p[1] / 10) / 10]
                        let rv = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).squareRoot()
                        csf = max(csf, 1 - smooth(1, 0.15, rv))
                        let t = [(p[0] - side * 12) / 9, (p[1] + 14) / 13, (p[2] + 2) / 9]
                        let rt = (t[0] * t[0] + t[1] * t[1] + t[2] * t[2]).squareRoot()
                        gm = max(gm, (1 - smooth(1, 0.2, rt)) * 0.8)
                    }
                    gm = min(gm, 1 - csf)
                    let wm = max(0, 1 - gm - csf)
                    let i = (z * Y + y) * X + x
                    a.wm[i] = Float(wm * inside)
                    a.gm[i] = Float(gm * inside)
                    a.csf[i] = Float(csf * inside)
                    a.brain.append(Int32(i))
                }
            }
        }
        return a
    }
}

/// Relative intensities of each tissue in the four contrasts (FLAIR, T1w, T1gd, T2w), white matter on T1 = 1.
/// CSF: dark on T1 and FLAIR, bright on T2. Edema: bright on FLAIR and T2. Enhancing rim: bright only on
/// T1gd. Necrosis: dark on T1.
enum Contrast {
    static let wm: [Float] = [0.48, 1.00, 1.00, 0.42]
    static let gm: [Float] = [0.62, 0.66, 0.69, 0.62]
    static let csf: [Float] = [0.10, 0.28, 0.30, 1.00]
    static let edema: [Float] = [1.00, 0.60, 0.62, 0.88]
    static let necrosis: [Float] = [0.52, 0.30, 0.36, 0.97]
    static let enhancing: [Float] = [0.80, 0.72, 1.55, 0.70]
}

/// One synthetic lesion: necrotic / non-enhancing core, enhancing rim (maybe thin or absent), edema around.
public struct Lesion: Codable, Sendable {
    public var centre: [Double]  // voxel coordinates (x, y, z)
    public var coreRadius: Double  // mm
    public var rimThickness: Double  // mm; 0 = non-enhancing lesion
    public var edemaRadius: Double  // mm
    public var kind: String  // "ring", "thin-rim", "non-enhancing"
    // Shape harmonics: random unit directions, frequencies, phases, amplitudes for core and edema outlines.
    var coreShape: [[Double]]
    var edemaShape: [[Double]]
}

/// Generates Task01-like cases: anatomy + lesions -> four contrasts and labels 0-3.
public struct PhantomGenerator: Sendable {
    public let anatomy: Anatomy

    public init(anatomy: Anatomy) { self.anatomy = anatomy }

    /// Picks 1-2 lesions, placed in white matter, of varied size and kind.
    func lesions(_ rng: inout SplitMix64) -> [Lesion] {
        let (X, Y) = (anatomy.shape[0], anatomy.shape[1])
        var result: [Lesion] = []
        let count = rng.chance(0.3) ? 2 : 1
        func harmonics(_ rng: inout SplitMix64, amplitude: Double) -> [[Double]] {
            (0 ..< 6).map { _ in
                var v = [rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(-1, 1)]
                let n = max(1e-6, (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).squareRoot())
                v = v.map { $0 / n }
                return v + [rng.uniform(1, 3.5), rng.uniform(0, 2 * .pi), rng.uniform(0, amplitude)]
            }
        }
        for _ in 0 ..< count {
            let kindDraw = rng.uniform(0, 1)
            let kind = kindDraw < 0.65 ? "ring" : (kindDraw < 0.82 ? "thin-rim" : "non-enhancing")
            let core = rng.uniform(3, 15)
            let rim = kind == "ring" ? rng.uniform(1.5, 4.5) : (kind == "thin-rim" ? rng.uniform(0.8, 1.6) : 0)
            // Centre in white matter, and a second lesion's core clear of the first one's.
            var centre = [0.0, 0, 0]
            for _ in 0 ..< 400 {
                let i = Int(anatomy.brain[Int.random(in: 0 ..< anatomy.brain.count, using: &rng)])
                let candidate = [Double(i % X), Double(i / X % Y), Double(i / (X * Y))]
                let clear = result.allSatisfy { other in
                    let d = zip(candidate, other.centre).map { ($0 - $1) * ($0 - $1) }.reduce(0, +).squareRoot()
                    return d > 1.4 * (other.coreRadius + other.rimThickness + core + rim) + 4
                }
                if anatomy.wm[i] > 0.7 && clear {
                    centre = candidate
                    break
                }
            }
            let edema = core + rim + rng.uniform(4, 24)
            result.append(Lesion(centre: centre, coreRadius: core, rimThickness: rim, edemaRadius: edema, kind: kind,
                                 coreShape: harmonics(&rng, amplitude: 0.13), edemaShape: harmonics(&rng, amplitude: 0.22)))
        }
        return result
    }

    /// Radius multiplier of an irregular outline in direction `u` (unit vector).
    @inline(__always) static func outline(_ h: [[Double]], _ u: (Double, Double, Double)) -> Double {
        var r = 1.0
        for k in h { r += k[5] * sin(k[3] * (u.0 * k[0] + u.1 * k[1] + u.2 * k[2]) * .pi + k[4]) }
        return r
    }

    public struct Case: Sendable {
        /// (X, Y, Z, 4) in NIfTI order: channel is the slowest axis.
        public var image: [Float]
        public var label: [UInt8]
        public var lesions: [Lesion]
        public var labelCounts: [Int]
    }

    /// One case from `seed`: labels (0 background, 1 edema, 2 non-enhancing/necrotic core, 3 enhancing),
    /// four contrasts with partial-volume edges, a smooth multiplicative bias field per channel,
    /// Gaussian noise inside the brain, a random intensity scale per channel, and a random shift / left-right flip.
    public func generate(seed: UInt64) -> Case {
        var rng = SplitMix64(mixing: seed)
        let (X, Y, Z) = (anatomy.shape[0], anatomy.shape[1], anatomy.shape[2])
        let n = X * Y * Z
        let lesions = lesions(&rng)
        // Lesion memberships (soft, for intensities) and labels (hard), only inside each lesion's box.
        var label = [UInt8](repeating: 0, count: n)
        var edemaW = [Float](repeating: 0, count: n), coreW = edemaW, rimW = edemaW
        for lesion in lesions {
            let reach = Int(lesion.edemaRadius * 1.35) + 2
            let c = lesion.centre
            let thinGaps = lesion.kind == "thin-rim"
            for z in max(0, Int(c[2]) - reach) ..< min(Z, Int(c[2]) + reach) {
                for y in max(0, Int(c[1]) - reach) ..< min(Y, Int(c[1]) + reach) {
                    for x in max(0, Int(c[0]) - reach) ..< min(X, Int(c[0]) + reach) {
                        let i = (z * Y + y) * X + x
                        let inBrain = anatomy.wm[i] + anatomy.gm[i] + anatomy.csf[i]
                        if inBrain < 0.5 { continue }
                        let d = (Double(x) - c[0], Double(y) - c[1], Double(z) - c[2])
                        let r = max(1e-6, (d.0 * d.0 + d.1 * d.1 + d.2 * d.2).squareRoot())
                        let u = (d.0 / r, d.1 / r, d.2 / r)
                        let coreEdge = lesion.coreRadius * Self.outline(lesion.coreShape, u)
                        let rimEdge = coreEdge + lesion.rimThickness * (thinGaps ? max(0, 0.6 + 0.8 * sin(5 * u.0 + 3 * u.1)) : 1)
                        // Edema follows white matter (finger-like), spares CSF.
                        let wm = Double(anatomy.wm[i]), csf = Double(anatomy.csf[i])
                        let edemaEdge = lesion.edemaRadius * Self.outline(lesion.edemaShape, u) * (0.7 + 0.35 * wm) * (1 - 0.6 * csf)
                        func soft(_ edge: Double) -> Float { Float(min(1, max(0, 0.5 + (edge - r) / 1.2))) }
                        let core = soft(coreEdge), rim = max(0, soft(rimEdge) - core), edema = max(0, soft(edemaEdge) - core - rim)
                        coreW[i] = max(coreW[i], core)
                        rimW[i] = max(rimW[i], rim)
                        edemaW[i] = max(edemaW[i], edema)
                        let l: UInt8 = r < coreEdge ? 2 : (r < rimEdge ? 3 : (r < edemaEdge && csf < 0.5 ? 1 : 0))
                        if l > 0, label[i] == 0 || l > label[i] { label[i] = l }
                    }
                }
            }
        }
        // Intensities: tissue mix, then lesion tissues by membership.
        var image = [Float](repeating: 0, count: 4 * n)
        let scale = (0 ..< 4).map { _ in Float(rng.uniform(0.6, 1.7) * 1000) }
        let noise = Float(rng.uniform(0.015, 0.04))
        // Separable smooth bias field per channel: exp of low-frequency sines along each axis.
        func axisField(_ length: Int, _ rng: inout SplitMix64) -> [Float] {
            let a1 = rng.uniform(-0.12, 0.12), a2 = rng.uniform(-0.06, 0.06), p1 = rng.uniform(0, 6.3), p2 = rng.uniform(0, 6.3)
            return (0 ..< length).map { t in
                let s = Double(t) / Double(length) * .pi
                return Float(exp(a1 * sin(s + p1) + a2 * sin(2 * s + p2)))
            }
        }
        for ch in 0 ..< 4 {
            let fx = axisField(X, &rng), fy = axisField(Y, &rng), fz = axisField(Z, &rng)
            let base = ch * n
            let sigma = noise * scale[ch]
            image.withUnsafeMutableBufferPointer { out in
                var pending: Float? = nil
                for index in anatomy.brain {
                    let i = Int(index)
                    let w = anatomy.wm[i], g = anatomy.gm[i], c = anatomy.csf[i]
                    let total = w + g + c
                    let lesionW = edemaW[i] + coreW[i] + rimW[i]
                    let healthy = max(0, 1 - lesionW)
                    let share = lesionW > 1 ? total / lesionW : total  // overlapping lesions share the voxel
                    var v = healthy * (w * Contrast.wm[ch] + g * Contrast.gm[ch] + c * Contrast.csf[ch])
                    v += share * (edemaW[i] * Contrast.edema[ch] + coreW[i] * Contrast.necrosis[ch] + rimW[i] * Contrast.enhancing[ch])
                    let x = i % X, y = i / X % Y, z = i / (X * Y)
                    let z0: Float
                    if let p = pending { z0 = p; pending = nil } else { let (a, b) = rng.normalFloats(); z0 = a; pending = b }
                    // Partial-volume voxels at the brain edge fade to 0, as skull-stripped scans do.
                    let value = v * scale[ch] * fx[x] * fy[y] * fz[z] + sigma * z0 * min(1, total)
                    out[base + i] = max(value, total < 1 ? 0 : 1e-3 * scale[ch])
                }
            }
        }
        // Variety between cases: a random shift and left-right flip of the whole case.
        let flip = rng.chance(0.5)
        let shift = [Int.random(in: -8 ... 8, using: &rng), Int.random(in: -8 ... 8, using: &rng), Int.random(in: -2 ... 8, using: &rng)]
        func move<T>(_ v: [T], zero: T, channels: Int) -> [T] {
            var out = [T](repeating: zero, count: v.count)
            for c in 0 ..< channels {
                for z in 0 ..< Z {
                    let sz = z - shift[2]
                    guard sz >= 0 && sz < Z else { continue }
                    for y in 0 ..< Y {
                        let sy = y - shift[1]
                        guard sy >= 0 && sy < Y else { continue }
                        let src = c * n + (sz * Y + sy) * X, dst = c * n + (z * Y + y) * X
                        for x in 0 ..< X {
                            var sx = x - shift[0]
                            if flip { sx = X - 1 - sx }
                            if sx >= 0 && sx < X { out[dst + x] = v[src + sx] }
                        }
                    }
                }
            }
            return out
        }
        image = move(image, zero: 0, channels: 4)
        label = move(label, zero: 0, channels: 1)
        var counts = [0, 0, 0, 0]
        for l in label { counts[Int(l)] += 1 }
        var placed = lesions
        for k in placed.indices {
            var c = placed[k].centre
            if flip { c[0] = Double(X - 1) - c[0] }
            placed[k].centre = [c[0] + Double(shift[0]), c[1] + Double(shift[1]), c[2] + Double(shift[2])]
        }
        return Case(image: image, label: label, lesions: placed, labelCounts: counts)
    }
}
