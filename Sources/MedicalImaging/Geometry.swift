import Foundation

/// A 4x4 voxel-to-world matrix (row-major, world in mm, RAS+ as NIfTI defines it):
/// world = affine * (i, j, k, 1) for voxel indices (i, j, k) in file order.
public struct Affine: Sendable, Equatable, CustomStringConvertible {
    public var rows: [[Double]]

    public init(rows: [[Double]]) { self.rows = rows }
    public static let identity = Affine(rows: [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])

    /// Column `axis` of the rotation/zoom part: the world direction of one step along voxel axis `axis`.
    public func column(_ axis: Int) -> [Double] { (0 ..< 3).map { rows[$0][axis] } }

    public var description: String {
        rows.map { $0.map { String(format: "%10.4f", $0) }.joined(separator: " ") }.joined(separator: "\n")
    }

    /// Voxel axes' directions as a three-letter code, each letter the world direction the axis points to
    /// (R/L, A/P, S/I), e.g. "RAS" or "LPS". Axes are matched greedily, largest component first.
    public var orientation: String {
        var used = Set<Int>()
        var letters = [Character](repeating: "?", count: 3)
        let positive: [Character] = ["R", "A", "S"]
        let negative: [Character] = ["L", "P", "I"]
        // Normalise each column, then assign the strongest (axis, world) pairs first.
        var candidates: [(value: Double, axis: Int, world: Int)] = []
        for axis in 0 ..< 3 {
            let c = column(axis)
            let norm = sqrt(c.reduce(0) { $0 + $1 * $1 })
            guard norm > 0 else { continue }
            for w in 0 ..< 3 { candidates.append((c[w] / norm, axis, w)) }
        }
        candidates.sort { abs($0.value) > abs($1.value) }
        var assigned = Set<Int>()
        for c in candidates where !assigned.contains(c.axis) && !used.contains(c.world) && c.value != 0 {
            letters[c.axis] = c.value > 0 ? positive[c.world] : negative[c.world]
            assigned.insert(c.axis)
            used.insert(c.world)
        }
        return String(letters)
    }
}

extension NiftiHeader {
    /// The affine of the qform (method 2 of the standard): rotation from the quaternion (b, c, d),
    /// spacing from pixdim with qfac = pixdim[0] (-1 flips z; any other value counts as 1).
    public var qformAffine: Affine {
        let b = quaternion[0], c = quaternion[1], d = quaternion[2]
        let a = sqrt(max(0, 1 - (b * b + c * c + d * d)))
        let r = [
            [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
            [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
            [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
        ]
        let qfac: Double = pixdim[0] == -1 ? -1 : 1
        let zoom = [pixdim[1], pixdim[2], pixdim[3] * qfac]
        var rows = (0 ..< 3).map { i in (0 ..< 3).map { j in r[i][j] * zoom[j] } + [qoffset[i]] }
        rows.append([0, 0, 0, 1])
        return Affine(rows: rows)
    }

    public var sformAffine: Affine { Affine(rows: srow + [[0, 0, 0, 1]]) }

    /// The voxel-to-world affine, chosen as nibabel does: the sform when sform_code > 0, else the qform
    /// when qform_code > 0, else spacing only (method 1 of the standard: diag(pixdim), no rotation).
    public var affine: Affine {
        if sformCode > 0 { return sformAffine }
        if qformCode > 0 { return qformAffine }
        let s = (1 ... 3).map { $0 < pixdim.count && $0 <= shape.count ? abs(pixdim[$0]) : 1 }
        return Affine(rows: [[s[0], 0, 0, 0], [0, s[1], 0, 0], [0, 0, s[2], 0], [0, 0, 0, 1]])
    }

    /// Copies the geometry of `reference` (pixdim, qform and sform with their codes, units, dim_info),
    /// so an image written with this header overlays the reference in any viewer.
    public mutating func copyGeometry(from reference: NiftiHeader) {
        for i in 0 ..< 8 where i == 0 || i <= min(3, shape.count) || i <= reference.shape.count {
            pixdim[i] = reference.pixdim[i]
        }
        qformCode = reference.qformCode
        sformCode = reference.sformCode
        quaternion = reference.quaternion
        qoffset = reference.qoffset
        srow = reference.srow
        xyztUnits = reference.xyztUnits
        dimInfo = reference.dimInfo
    }

    /// Sets sform (code 2, aligned) and qform (code 2) from an affine; spacing from its column norms.
    public mutating func setAffine(_ affine: Affine, code: Int = 2) {
        srow = Array(affine.rows.prefix(3))
        sformCode = code
        let zooms = (0 ..< 3).map { axis in sqrt(affine.column(axis).reduce(0) { $0 + $1 * $1 }) }
        for i in 0 ..< 3 { pixdim[i + 1] = zooms[i] == 0 ? 1 : zooms[i] }
        // qform: the nearest rotation (columns normalised); a left-handed matrix flips z through qfac.
        var r = (0 ..< 3).map { i in (0 ..< 3).map { j in affine.rows[i][j] / (zooms[j] == 0 ? 1 : zooms[j]) } }
        let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1]) - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
            + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0])
        var qfac = 1.0
        if det < 0 {
            qfac = -1
            for i in 0 ..< 3 { r[i][2] = -r[i][2] }
        }
        pixdim[0] = qfac
        // Quaternion from rotation matrix (a >= 0 convention of the standard).
        let trace = r[0][0] + r[1][1] + r[2][2]
        var a: Double, b: Double, c: Double, d: Double
        if trace > 0 {
            a = 0.5 * sqrt(1 + trace)
            b = 0.25 * (r[2][1] - r[1][2]) / a
            c = 0.25 * (r[0][2] - r[2][0]) / a
            d = 0.25 * (r[1][0] - r[0][1]) / a
        } else if r[0][0] > r[1][1] && r[0][0] > r[2][2] {
            b = 0.5 * sqrt(max(0, 1 + r[0][0] - r[1][1] - r[2][2]))
            a = 0.25 * (r[2][1] - r[1][2]) / b
            c = 0.25 * (r[0][1] + r[1][0]) / b
            d = 0.25 * (r[0][2] + r[2][0]) / b
        } else if r[1][1] > r[2][2] {
            c = 0.5 * sqrt(max(0, 1 - r[0][0] + r[1][1] - r[2][2]))
            a = 0.25 * (r[0][2] - r[2][0]) / c
            b = 0.25 * (r[0][1] + r[1][0]) / c
            d = 0.25 * (r[1][2] + r[2][1]) / c
        } else {
            d = 0.5 * sqrt(max(0, 1 - r[0][0] - r[1][1] + r[2][2]))
            a = 0.25 * (r[1][0] - r[0][1]) / d
            b = 0.25 * (r[0][2] + r[2][0]) / d
            c = 0.25 * (r[1][2] + r[2][1]) / d
        }
        if a < 0 { (b, c, d) = (-b, -c, -d) }
        quaternion = [b, c, d]
        qoffset = (0 ..< 3).map { affine.rows[$0][3] }
        qformCode = code
    }
}
