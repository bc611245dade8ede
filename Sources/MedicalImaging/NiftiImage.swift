import FileSupport
import Foundation

/// Voxel values as stored, in NIfTI index order (the first axis varies fastest).
public enum VoxelArray: Sendable, Equatable {
    case uint8([UInt8]), int8([Int8]), int16([Int16]), uint16([UInt16])
    case int32([Int32]), uint32([UInt32]), int64([Int64])
    case float32([Float]), float64([Double])

    public var datatype: NiftiDatatype {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .int16: return .int16
        case .uint16: return .uint16
        case .int32: return .int32
        case .uint32: return .uint32
        case .int64: return .int64
        case .float32: return .float32
        case .float64: return .float64
        }
    }

    public var count: Int {
        switch self {
        case let .uint8(v): return v.count
        case let .int8(v): return v.count
        case let .int16(v): return v.count
        case let .uint16(v): return v.count
        case let .int32(v): return v.count
        case let .uint32(v): return v.count
        case let .int64(v): return v.count
        case let .float32(v): return v.count
        case let .float64(v): return v.count
        }
    }

    /// Values as Double (exact for every type but int64 beyond 2^53).
    public func doubles() -> [Double] {
        switch self {
        case let .uint8(v): return v.map(Double.init)
        case let .int8(v): return v.map(Double.init)
        case let .int16(v): return v.map(Double.init)
        case let .uint16(v): return v.map(Double.init)
        case let .int32(v): return v.map(Double.init)
        case let .uint32(v): return v.map(Double.init)
        case let .int64(v): return v.map(Double.init)
        case let .float32(v): return v.map(Double.init)
        case let .float64(v): return v
        }
    }

    /// Values as Float, optionally scaled (value * slope + intercept).
    public func floats(slope: Double = 1, intercept: Double = 0) -> [Float] {
        let identity = slope == 1 && intercept == 0
        if identity, case let .float32(v) = self { return v }
        let s = Float(slope), b = Float(intercept)
        func map<T>(_ v: [T], _ f: (T) -> Float) -> [Float] {
            identity ? v.map(f) : v.map { f($0) * s + b }
        }
        switch self {
        case let .uint8(v): return map(v) { Float($0) }
        case let .int8(v): return map(v) { Float($0) }
        case let .int16(v): return map(v) { Float($0) }
        case let .uint16(v): return map(v) { Float($0) }
        case let .int32(v): return map(v) { Float($0) }
        case let .uint32(v): return map(v) { Float($0) }
        case let .int64(v): return map(v) { Float($0) }
        case let .float32(v): return map(v) { $0 }
        case let .float64(v):
            // Scale in Double before rounding to Float.
            return identity ? v.map { Float($0) } : v.map { Float($0 * slope + intercept) }
        }
    }

    /// Calls `body` with the values' bytes in native (little-endian) order.
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        switch self {
        case let .uint8(v): return try v.withUnsafeBytes(body)
        case let .int8(v): return try v.withUnsafeBytes(body)
        case let .int16(v): return try v.withUnsafeBytes(body)
        case let .uint16(v): return try v.withUnsafeBytes(body)
        case let .int32(v): return try v.withUnsafeBytes(body)
        case let .uint32(v): return try v.withUnsafeBytes(body)
        case let .int64(v): return try v.withUnsafeBytes(body)
        case let .float32(v): return try v.withUnsafeBytes(body)
        case let .float64(v): return try v.withUnsafeBytes(body)
        }
    }
}

/// A NIfTI-1/2 image: header and voxels. `voxels` are the stored values; `floatValues()` applies scl_slope/inter.
public struct NiftiImage: Sendable {
    public var header: NiftiHeader
    public var voxels: VoxelArray

    public var shape: [Int] { header.shape }
    public var affine: Affine { header.affine }

    /// A new image; the header's shape and datatype are set from the arguments, geometry defaults to 1 mm
    /// spacing with an identity sform and qform unless `like` gives a reference image's header to copy.
    public init(shape: [Int], voxels: VoxelArray, like reference: NiftiHeader? = nil) throws {
        guard (1 ... 5).contains(shape.count), shape.allSatisfy({ $0 >= 1 }) else {
            throw ImagingError.invalidArgument("image shape \(shape): need 1 to 5 sizes, each >= 1")
        }
        guard shape.reduce(1, *) == voxels.count else {
            throw ImagingError.invalidArgument("image shape \(shape) holds \(shape.reduce(1, *)) voxels, \(voxels.count) given")
        }
        var h = NiftiHeader()
        h.shape = shape
        h.datatype = voxels.datatype
        if let reference {
            h.copyGeometry(from: reference)
        } else {
            h.setAffine(.identity)
        }
        header = h
        self.voxels = voxels
    }

    init(header: NiftiHeader, voxels: VoxelArray) {
        self.header = header
        self.voxels = voxels
    }

    /// Voxel values after scaling, as Float, in NIfTI index order.
    public func floatValues() -> [Float] {
        header.hasScaling ? voxels.floats(slope: header.sclSlope, intercept: header.sclInter) : voxels.floats()
    }

    /// Reads only the header of a `.nii` or `.nii.gz` file.
    public static func readHeader(_ path: String) throws -> NiftiHeader {
        var source = try openSource(path)
        return try readHeader(from: &source)
    }

    /// Reads a `.nii` or `.nii.gz` file (gzip is detected from the content). Every size is checked against
    /// what the file can hold before anything is allocated.
    public static func read(_ path: String) throws -> NiftiImage {
        var source = try openSource(path)
        let header = try readHeader(from: &source)
        let consumed = header.version == 1 ? NiftiHeader.nifti1Size : NiftiHeader.nifti2Size
        let end = header.voxOffset.addingReportingOverflow(header.dataByteCount)
        guard !end.overflow, end.partialValue <= source.upperBound else {
            throw ImagingError.truncated(file: path, expectedBytes: header.dataByteCount,
                                         availableBytes: max(0, source.upperBound - header.voxOffset))
        }
        // Skip extensions up to vox_offset.
        var skip = header.voxOffset - consumed
        var scratch = [UInt8](repeating: 0, count: min(skip, 1 << 16))
        while skip > 0 {
            let n = try scratch.withUnsafeMutableBytes { try source.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0 ..< min(skip, $0.count)])) }
            guard n > 0 else { throw ImagingError.invalidField(file: path, field: "vox_offset", reason: "\(header.voxOffset) is past the end of the file") }
            skip -= n
        }
        let count = header.voxelCount
        let swapped = header.byteOrder == .big
        // When the source vouches for the size (plain file length, gzip trailer), decompress straight into
        // the final array; otherwise collect chunks as they arrive, so a lying header allocates nothing
        // beyond the data that really exists.
        let direct = source.confirms(length: header.voxOffset + header.dataByteCount)
        func load<T: FixedWidthInteger>(_: T.Type) throws -> [T] {
            var chunks: [[UInt8]] = []
            if !direct {
                var remaining = count * MemoryLayout<T>.size
                while remaining > 0 {
                    var chunk = [UInt8](repeating: 0, count: min(remaining, 1 << 26))
                    let n = try chunk.withUnsafeMutableBytes { try source.read(into: $0) }
                    guard n == chunk.count else {
                        throw ImagingError.truncated(file: path, expectedBytes: header.dataByteCount,
                                                     availableBytes: header.dataByteCount - remaining + n)
                    }
                    remaining -= n
                    chunks.append(chunk)
                }
            }
            let values = try [T](unsafeUninitializedCapacity: count) { buffer, initialized in
                let raw = UnsafeMutableRawBufferPointer(buffer)
                if direct {
                    let n = try source.read(into: raw)
                    guard n == raw.count else {
                        throw ImagingError.truncated(file: path, expectedBytes: raw.count, availableBytes: n)
                    }
                } else {
                    var offset = 0
                    for chunk in chunks {
                        chunk.withUnsafeBytes { raw.baseAddress!.advanced(by: offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                        offset += chunk.count
                    }
                }
                if swapped { for i in 0 ..< count { buffer[i] = buffer[i].byteSwapped } }
                initialized = count
            }
            return values
        }
        let voxels: VoxelArray
        switch header.datatype {
        case .uint8: voxels = .uint8(try load(UInt8.self))
        case .int8: voxels = .int8(try load(Int8.self))
        case .int16: voxels = .int16(try load(Int16.self))
        case .uint16: voxels = .uint16(try load(UInt16.self))
        case .int32: voxels = .int32(try load(Int32.self))
        case .uint32: voxels = .uint32(try load(UInt32.self))
        case .int64: voxels = .int64(try load(Int64.self))
        case .float32: voxels = .float32(try load(UInt32.self).withUnsafeBufferPointer { Self.reinterpret($0) })
        case .float64: voxels = .float64(try load(UInt64.self).withUnsafeBufferPointer { Self.reinterpret($0) })
        }
        return NiftiImage(header: header, voxels: voxels)
    }

    /// Reinterprets bit patterns as floating-point values (one pass; no arithmetic).
    private static func reinterpret<S, T>(_ bits: UnsafeBufferPointer<S>) -> [T] {
        [T](unsafeUninitializedCapacity: bits.count) { buffer, initialized in
            UnsafeMutableRawBufferPointer(buffer).copyMemory(from: UnsafeRawBufferPointer(bits))
            initialized = bits.count
        }
    }

    private static func readHeader(from source: inout any ByteSource) throws -> NiftiHeader {
        let path = source.path
        var first = [UInt8](repeating: 0, count: NiftiHeader.nifti1Size)
        let n = try first.withUnsafeMutableBytes { try source.read(into: $0) }
        guard n >= 4, let (version, swapped) = NiftiHeader.detect(Array(first[0 ..< 4])) else {
            throw ImagingError.notRecognized(file: path, reason: n < 4 ? "only \(n) bytes" :
                "sizeof_hdr is neither 348 (NIfTI-1) nor 540 (NIfTI-2) in either byte order")
        }
        guard n == NiftiHeader.nifti1Size else {
            throw ImagingError.truncated(file: path, expectedBytes: NiftiHeader.nifti1Size, availableBytes: n)
        }
        if version == 2 {
            var rest = [UInt8](repeating: 0, count: NiftiHeader.nifti2Size - NiftiHeader.nifti1Size)
            let m = try rest.withUnsafeMutableBytes { try source.read(into: $0) }
            guard m == rest.count else {
                throw ImagingError.truncated(file: path, expectedBytes: NiftiHeader.nifti2Size, availableBytes: n + m)
            }
            first += rest
        }
        return try NiftiHeader.parse(first, swapped: swapped, file: path)
    }

    /// Writes the image atomically as NIfTI-1 (or NIfTI-2 when the header says so or a size needs it),
    /// little-endian, gzip-compressed when `path` ends in `.gz`. `compressionLevel` 1 is fast; 6 is gzip's default.
    public func write(to path: String, compressionLevel: Int = 1) throws {
        guard voxels.count == header.voxelCount else {
            throw ImagingError.invalidArgument("\(path): header shape \(header.shape) does not match \(voxels.count) voxels")
        }
        var h = header
        h.datatype = voxels.datatype
        h.byteOrder = .little
        let head = h.serialized()
        let compressed = path.hasSuffix(".gz")
        try AtomicFile.write(to: path) { append in
            if compressed {
                let gzip = try GzipWriter(level: compressionLevel, path: path)
                try head.withUnsafeBytes { try gzip.write($0, finish: false, sink: append) }
                try voxels.withUnsafeBytes { try gzip.write($0, finish: true, sink: append) }
            } else {
                try head.withUnsafeBytes { try append($0) }
                try voxels.withUnsafeBytes { try append($0) }
            }
        }
    }
}
