/// NIfTI voxel datatypes SwiftUNet reads and writes (NIfTI-1 codes).
public enum NiftiDatatype: Int, Sendable, CaseIterable, CustomStringConvertible {
    case uint8 = 2, int16 = 4, int32 = 8, float32 = 16, float64 = 64
    case int8 = 256, uint16 = 512, uint32 = 768, int64 = 1024

    public var bytesPerVoxel: Int {
        switch self {
        case .uint8, .int8: return 1
        case .int16, .uint16: return 2
        case .int32, .uint32, .float32: return 4
        case .int64, .float64: return 8
        }
    }

    public var description: String {
        switch self {
        case .uint8: return "uint8"
        case .int8: return "int8"
        case .int16: return "int16"
        case .uint16: return "uint16"
        case .int32: return "int32"
        case .uint32: return "uint32"
        case .int64: return "int64"
        case .float32: return "float32"
        case .float64: return "float64"
        }
    }

    public init?(name: String) {
        guard let match = Self.allCases.first(where: { $0.description == name }) else { return nil }
        self = match
    }
}

public enum ByteOrder: String, Sendable { case little, big }

/// The fields of a NIfTI-1 or NIfTI-2 header, version-independent (integers as Int, reals as Double).
/// `shape` holds dim[1...dim[0]]: for an MSD image (X, Y, Z, channels), x varies fastest in the data.
public struct NiftiHeader: Sendable, Equatable {
    public var version = 1
    /// The byte order the file was stored in (files are always written little-endian).
    public var byteOrder = ByteOrder.little
    public var shape: [Int] = [1]
    public var datatype = NiftiDatatype.float32
    /// pixdim[0...7]: pixdim[0] is qfac (the sign of the qform's z axis), pixdim[1...] the spacing.
    public var pixdim: [Double] = [1, 1, 1, 1, 1, 1, 1, 1]
    /// Byte offset of the voxel data in the (decompressed) file.
    public var voxOffset = 352
    /// Scaling: value = stored * slope + intercept; slope 0 (or not finite) means none.
    public var sclSlope: Double = 0
    public var sclInter: Double = 0
    public var qformCode = 0
    public var sformCode = 0
    public var quaternion: [Double] = [0, 0, 0]  // b, c, d
    public var qoffset: [Double] = [0, 0, 0]
    public var srow: [[Double]] = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
    /// xyzt_units: bits 0-2 spatial unit (2 = mm), bits 3-5 temporal.
    public var xyztUnits = 2
    public var dimInfo = 0
    public var intentCode = 0
    public var intentParameters: [Double] = [0, 0, 0]
    public var intentName = ""
    public var description = ""
    public var auxFile = ""
    public var calMin: Double = 0
    public var calMax: Double = 0
    public var sliceCode = 0
    public var sliceStart = 0
    public var sliceEnd = 0
    public var sliceDuration: Double = 0
    public var toffset: Double = 0

    public init() {}

    public var voxelCount: Int { shape.reduce(1, *) }
    public var dataByteCount: Int { voxelCount * datatype.bytesPerVoxel }

    /// Voxel spacing of the spatial axes (up to 3), in the file's units.
    public var spacing: [Double] { (0 ..< min(3, shape.count)).map { abs(pixdim[$0 + 1]) } }

    /// Whether stored values are scaled on reading.
    public var hasScaling: Bool {
        sclSlope.isFinite && sclSlope != 0 && !(sclSlope == 1 && (sclInter == 0 || !sclInter.isFinite))
    }
}

// MARK: - Binary layout

/// Reads header fields from raw bytes in a given byte order.
struct FieldReader {
    let bytes: [UInt8]
    let swapped: Bool

    func int16(_ offset: Int) -> Int { Int(Int16(bitPattern: raw(UInt16.self, offset))) }
    func int32(_ offset: Int) -> Int { Int(Int32(bitPattern: raw(UInt32.self, offset))) }
    func int64(_ offset: Int) -> Int { Int(Int64(bitPattern: raw(UInt64.self, offset))) }
    func float32(_ offset: Int) -> Double { Double(Float(bitPattern: raw(UInt32.self, offset))) }
    func float64(_ offset: Int) -> Double { Double(bitPattern: raw(UInt64.self, offset)) }
    func uint8(_ offset: Int) -> Int { Int(bytes[offset]) }
    func string(_ offset: Int, _ length: Int) -> String {
        let slice = bytes[offset ..< offset + length].prefix { $0 != 0 }
        return String(decoding: slice, as: UTF8.self)
    }

    private func raw<T: FixedWidthInteger>(_: T.Type, _ offset: Int) -> T {
        var value: T = 0
        for i in 0 ..< MemoryLayout<T>.size { value |= T(bytes[offset + i]) << (8 * i) }
        return swapped ? value.byteSwapped : value
    }
}

/// Appends little-endian header fields.
struct FieldWriter {
    var bytes: [UInt8]
    init(size: Int) { bytes = [UInt8](repeating: 0, count: size) }

    mutating func int16(_ offset: Int, _ v: Int) { put(UInt16(bitPattern: Int16(truncatingIfNeeded: v)), offset) }
    mutating func int32(_ offset: Int, _ v: Int) { put(UInt32(bitPattern: Int32(truncatingIfNeeded: v)), offset) }
    mutating func int64(_ offset: Int, _ v: Int) { put(UInt64(bitPattern: Int64(v)), offset) }
    mutating func float32(_ offset: Int, _ v: Double) { put(Float(v).bitPattern, offset) }
    mutating func float64(_ offset: Int, _ v: Double) { put(v.bitPattern, offset) }
    mutating func uint8(_ offset: Int, _ v: Int) { bytes[offset] = UInt8(truncatingIfNeeded: v) }
    mutating func string(_ offset: Int, _ length: Int, _ s: String) {
        for (i, b) in s.utf8.prefix(length - 1).enumerated() { bytes[offset + i] = b }
    }
    mutating func raw(_ offset: Int, _ values: [UInt8]) {
        for (i, b) in values.enumerated() { bytes[offset + i] = b }
    }

    private mutating func put<T: FixedWidthInteger>(_ value: T, _ offset: Int) {
        for i in 0 ..< MemoryLayout<T>.size { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
    }
}

extension NiftiHeader {
    static let nifti1Size = 348
    static let nifti2Size = 540
    static let nifti2Magic: [UInt8] = [0x6E, 0x2B, 0x32, 0x00, 0x0D, 0x0A, 0x1A, 0x0A]  // "n+2\0\r\n\032\n"

    /// Which version the first four bytes (sizeof_hdr) announce, and whether the file is big-endian.
    static func detect(_ first4: [UInt8]) -> (version: Int, swapped: Bool)? {
        let little = Int(first4[0]) | Int(first4[1]) << 8 | Int(first4[2]) << 16 | Int(first4[3]) << 24
        let big = Int(first4[3]) | Int(first4[2]) << 8 | Int(first4[1]) << 16 | Int(first4[0]) << 24
        if little == nifti1Size { return (1, false) }
        if big == nifti1Size { return (1, true) }
        if little == nifti2Size { return (2, false) }
        if big == nifti2Size { return (2, true) }
        return nil
    }

    /// Parses and validates a header. `bytes` holds exactly 348 (NIfTI-1) or 540 (NIfTI-2) bytes.
    /// Only checks the header itself; sizes against the file are checked by the reader.
    static func parse(_ bytes: [UInt8], swapped: Bool, file: String) throws -> NiftiHeader {
        let r = FieldReader(bytes: bytes, swapped: swapped)
        var h = NiftiHeader()
        h.byteOrder = swapped ? .big : .little
        func bad(_ field: String, _ reason: String) -> ImagingError {
            .invalidField(file: file, field: field, reason: reason)
        }
        let dims: [Int]
        let datatypeCode: Int
        let bitpix: Int
        let voxOffset: Double
        if bytes.count == nifti1Size {
            h.version = 1
            let magic = Array(bytes[344 ..< 348])
            if magic == [0x6E, 0x69, 0x31, 0x00] {  // "ni1": header and data in separate files
                throw bad("magic", "\"ni1\" (separate .hdr/.img pair) is not supported; convert to a single .nii file")
            }
            guard magic == [0x6E, 0x2B, 0x31, 0x00] else { throw bad("magic", "expected \"n+1\", found \(printable(magic))") }
            dims = (0 ..< 8).map { r.int16(40 + 2 * $0) }
            h.intentParameters = [r.float32(56), r.float32(60), r.float32(64)]
            h.intentCode = r.int16(68)
            datatypeCode = r.int16(70)
            bitpix = r.int16(72)
            h.sliceStart = r.int16(74)
            h.pixdim = (0 ..< 8).map { r.float32(76 + 4 * $0) }
            voxOffset = r.float32(108)
            h.sclSlope = r.float32(112)
            h.sclInter = r.float32(116)
            h.sliceEnd = r.int16(120)
            h.sliceCode = r.uint8(122)
            h.xyztUnits = r.uint8(123)
            h.calMax = r.float32(124)
            h.calMin = r.float32(128)
            h.sliceDuration = r.float32(132)
            h.toffset = r.float32(136)
            h.description = r.string(148, 80)
            h.auxFile = r.string(228, 24)
            h.qformCode = r.int16(252)
            h.sformCode = r.int16(254)
            h.quaternion = [r.float32(256), r.float32(260), r.float32(264)]
            h.qoffset = [r.float32(268), r.float32(272), r.float32(276)]
            h.srow = (0 ..< 3).map { row in (0 ..< 4).map { r.float32(280 + 16 * row + 4 * $0) } }
            h.intentName = r.string(328, 16)
            h.dimInfo = r.uint8(39)
        } else {
            h.version = 2
            let magic = Array(bytes[4 ..< 12])
            if Array(magic[0 ..< 4]) == [0x6E, 0x69, 0x32, 0x00] {
                throw bad("magic", "\"ni2\" (separate header and image files) is not supported")
            }
            guard magic == nifti2Magic else { throw bad("magic", "expected \"n+2\" with its line-ending check, found \(printable(magic))") }
            datatypeCode = r.int16(12)
            bitpix = r.int16(14)
            dims = (0 ..< 8).map { r.int64(16 + 8 * $0) }
            h.intentParameters = [r.float64(80), r.float64(88), r.float64(96)]
            h.pixdim = (0 ..< 8).map { r.float64(104 + 8 * $0) }
            voxOffset = Double(r.int64(168))
            h.sclSlope = r.float64(176)
            h.sclInter = r.float64(184)
            h.calMax = r.float64(192)
            h.calMin = r.float64(200)
            h.sliceDuration = r.float64(208)
            h.toffset = r.float64(216)
            h.sliceStart = r.int64(224)
            h.sliceEnd = r.int64(232)
            h.description = r.string(240, 80)
            h.auxFile = r.string(320, 24)
            h.qformCode = r.int32(344)
            h.sformCode = r.int32(348)
            h.quaternion = [r.float64(352), r.float64(360), r.float64(368)]
            h.qoffset = [r.float64(376), r.float64(384), r.float64(392)]
            h.srow = (0 ..< 3).map { row in (0 ..< 4).map { r.float64(400 + 32 * row + 8 * $0) } }
            h.sliceCode = r.int32(496)
            h.xyztUnits = r.int32(500)
            h.intentCode = r.int32(504)
            h.intentName = r.string(508, 16)
            h.dimInfo = r.uint8(524)
        }

        // Dimensions: 1...7 axes, each >= 1, axes beyond the fifth must be 1, total size must not overflow.
        let ndim = dims[0]
        guard (1 ... 7).contains(ndim) else { throw bad("dim[0]", "number of dimensions is \(ndim), must be 1...7") }
        var shape = Array(dims[1 ... ndim])
        for (i, n) in shape.enumerated() where n < 1 {
            throw bad("dim[\(i + 1)]", "size \(n) (must be >= 1)")
        }
        while shape.count > 5 {
            guard shape.last == 1 else { throw bad("dim[0]", "\(ndim) dimensions of sizes \(shape); at most 5 are supported") }
            shape.removeLast()
        }
        h.shape = shape
        guard let datatype = NiftiDatatype(rawValue: datatypeCode) else {
            throw bad("datatype", "code \(datatypeCode) is not supported (supported: " +
                NiftiDatatype.allCases.map { "\($0) = \($0.rawValue)" }.joined(separator: ", ") + ")")
        }
        h.datatype = datatype
        guard bitpix == 8 * datatype.bytesPerVoxel else {
            throw bad("bitpix", "\(bitpix) does not match datatype \(datatype) (\(8 * datatype.bytesPerVoxel) bits)")
        }
        var total = 1
        for n in shape {
            let (product, overflow) = total.multipliedReportingOverflow(by: n)
            guard !overflow else { throw bad("dim", "sizes \(shape) overflow") }
            total = product
        }
        guard !total.multipliedReportingOverflow(by: datatype.bytesPerVoxel).overflow else {
            throw bad("dim", "sizes \(shape) of \(datatype) overflow")
        }

        // Spacing of the axes in use must be finite and nonzero.
        for i in 1 ... min(3, shape.count) where !(h.pixdim[i].isFinite && h.pixdim[i] != 0) {
            throw bad("pixdim[\(i)]", "spacing \(h.pixdim[i]) is not a positive number")
        }
        let minimumOffset = h.version == 1 ? 352 : 544
        guard voxOffset.isFinite, voxOffset == voxOffset.rounded(), voxOffset >= Double(minimumOffset), voxOffset < 0x1p62 else {
            throw bad("vox_offset", "\(voxOffset) (must be a whole number >= \(minimumOffset))")
        }
        h.voxOffset = Int(voxOffset)
        // Scaling: as the standard says, slope 0 means none; a non-finite slope is treated the same (as nibabel does).
        if !h.sclSlope.isFinite { h.sclSlope = 0 }
        if !h.sclInter.isFinite { h.sclInter = 0 }

        guard (0 ... 5).contains(h.qformCode) else { throw bad("qform_code", "\(h.qformCode) (must be 0...5)") }
        guard (0 ... 5).contains(h.sformCode) else { throw bad("sform_code", "\(h.sformCode) (must be 0...5)") }
        if h.qformCode > 0 {
            guard (h.quaternion + h.qoffset).allSatisfy(\.isFinite) else { throw bad("quatern/qoffset", "not finite") }
            let norm = h.quaternion.reduce(0) { $0 + $1 * $1 }
            guard norm <= 1 + 1e-5 else { throw bad("quatern_b/c/d", "b^2 + c^2 + d^2 = \(norm) exceeds 1") }
        }
        if h.sformCode > 0 {
            guard h.srow.joined().allSatisfy(\.isFinite) else { throw bad("srow_x/y/z", "not finite") }
        }
        return h
    }

    /// The header as stored (little-endian), including the 4 extension bytes (all zero: no extensions).
    /// NIfTI-2 is used when `version` is 2 or when a size does not fit NIfTI-1's 16-bit fields.
    func serialized() -> [UInt8] {
        let needs2 = version == 2 || shape.contains { $0 > Int(Int16.max) }
        let dims = [shape.count] + shape + [Int](repeating: 1, count: 7 - shape.count)
        if !needs2 {
            var w = FieldWriter(size: 352)
            w.int32(0, 348)
            w.uint8(38, 0x72)  // "r": regular, as ANALYZE readers expect
            w.uint8(39, dimInfo)
            for (i, d) in dims.enumerated() { w.int16(40 + 2 * i, d) }
            for (i, p) in intentParameters.enumerated() { w.float32(56 + 4 * i, p) }
            w.int16(68, intentCode)
            w.int16(70, datatype.rawValue)
            w.int16(72, 8 * datatype.bytesPerVoxel)
            w.int16(74, sliceStart)
            for (i, p) in pixdim.enumerated() { w.float32(76 + 4 * i, p) }
            w.float32(108, 352)
            w.float32(112, sclSlope)
            w.float32(116, sclInter)
            w.int16(120, sliceEnd)
            w.uint8(122, sliceCode)
            w.uint8(123, xyztUnits)
            w.float32(124, calMax)
            w.float32(128, calMin)
            w.float32(132, sliceDuration)
            w.float32(136, toffset)
            w.string(148, 80, description)
            w.string(228, 24, auxFile)
            w.int16(252, qformCode)
            w.int16(254, sformCode)
            for i in 0 ..< 3 {
                w.float32(256 + 4 * i, quaternion[i])
                w.float32(268 + 4 * i, qoffset[i])
            }
            for row in 0 ..< 3 { for c in 0 ..< 4 { w.float32(280 + 16 * row + 4 * c, srow[row][c]) } }
            w.string(328, 16, intentName)
            w.raw(344, [0x6E, 0x2B, 0x31, 0x00])
            return w.bytes
        }
        var w = FieldWriter(size: 544)
        w.int32(0, 540)
        w.raw(4, Self.nifti2Magic)
        w.int16(12, datatype.rawValue)
        w.int16(14, 8 * datatype.bytesPerVoxel)
        for (i, d) in dims.enumerated() { w.int64(16 + 8 * i, d) }
        for (i, p) in intentParameters.enumerated() { w.float64(80 + 8 * i, p) }
        for (i, p) in pixdim.enumerated() { w.float64(104 + 8 * i, p) }
        w.int64(168, 544)
        w.float64(176, sclSlope)
        w.float64(184, sclInter)
        w.float64(192, calMax)
        w.float64(200, calMin)
        w.float64(208, sliceDuration)
        w.float64(216, toffset)
        w.int64(224, sliceStart)
        w.int64(232, sliceEnd)
        w.string(240, 80, description)
        w.string(320, 24, auxFile)
        w.int32(344, qformCode)
        w.int32(348, sformCode)
        for i in 0 ..< 3 {
            w.float64(352 + 8 * i, quaternion[i])
            w.float64(376 + 8 * i, qoffset[i])
        }
        for row in 0 ..< 3 { for c in 0 ..< 4 { w.float64(400 + 32 * row + 8 * c, srow[row][c]) } }
        w.int32(496, sliceCode)
        w.int32(500, xyztUnits)
        w.int32(504, intentCode)
        w.string(508, 16, intentName)
        w.uint8(524, dimInfo)
        return w.bytes
    }
}

private func printable(_ bytes: [UInt8]) -> String {
    "\"" + bytes.map { (0x20 ..< 0x7F).contains($0) ? String(UnicodeScalar($0)) : String(format: "\\x%02X", $0) }.joined() + "\""
}

import Foundation
