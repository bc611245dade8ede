import FileSupport
import Foundation

/// The safetensors format: 8-byte little-endian header length, a JSON header
/// `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {string: string}}`, then the
/// raw little-endian tensor bytes (offsets relative to the end of the header). Read and written here
/// without any dependency; every size is checked against the file before use.
public enum Safetensors {
    public enum DType: String, Sendable, CaseIterable {
        case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16", i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8", u8 = "U8", bool = "BOOL"
        public var size: Int {
            switch self {
            case .f64, .i64: return 8
            case .f32, .i32: return 4
            case .f16, .bf16, .i16: return 2
            case .i8, .u8, .bool: return 1
            }
        }
        public var isFloat: Bool { [.f64, .f32, .f16, .bf16].contains(self) }
    }

    /// One stored tensor; `bytes` are the raw little-endian data.
    public struct Entry: Sendable {
        public var name: String
        public var dtype: DType
        public var shape: [Int]
        public var bytes: [UInt8]

        public init(name: String, dtype: DType, shape: [Int], bytes: [UInt8]) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
            self.bytes = bytes
        }

        public init(name: String, floats: [Float], shape: [Int]) {
            self.init(name: name, dtype: .f32, shape: shape, bytes: floats.withUnsafeBytes { Array($0) })
        }

        /// Values as Float (float types converted; integers as their value).
        public func floats() -> [Float] {
            let n = bytes.count / dtype.size
            return bytes.withUnsafeBytes { raw -> [Float] in
                switch dtype {
                case .f32:
                    #if _endian(little)
                    return [Float](unsafeUninitializedCapacity: n) { out, count in
                        UnsafeMutableRawBufferPointer(out).copyMemory(from: raw)
                        count = n
                    }
                    #else
                    return (0 ..< n).map { Float(bitPattern: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self).littleEndian) }
                    #endif
                case .f64: return (0 ..< n).map { Float(Double(bitPattern: raw.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self).littleEndian)) }
                case .f16: return (0 ..< n).map { halfToFloat(raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self).littleEndian) }
                case .bf16: return (0 ..< n).map { Float(bitPattern: UInt32(raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self).littleEndian) << 16) }
                case .i64: return (0 ..< n).map { Float(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self))) }
                case .i32: return (0 ..< n).map { Float(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self))) }
                case .i16: return (0 ..< n).map { Float(Int16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * $0, as: Int16.self))) }
                case .i8: return (0 ..< n).map { Float(Int8(bitPattern: raw[$0])) }
                case .u8, .bool: return (0 ..< n).map { Float(raw[$0]) }
                }
            }
        }

        /// The first value as an integer (for scalars such as `num_batches_tracked`).
        public func integer() -> Int? {
            guard !bytes.isEmpty else { return nil }
            switch dtype {
            case .i64: return bytes.withUnsafeBytes { Int(Int64(littleEndian: $0.loadUnaligned(as: Int64.self))) }
            case .i32: return bytes.withUnsafeBytes { Int(Int32(littleEndian: $0.loadUnaligned(as: Int32.self))) }
            default: return floats().first.flatMap { Int(exactly: $0) }
            }
        }
    }

    public struct File: Sendable {
        public var entries: [Entry]
        public var metadata: [String: String]
        public func entry(_ name: String) -> Entry? { entries.first { $0.name == name } }
    }

    static let maximumHeader = 100 << 20

    /// Reads and validates a whole file.
    /// Tensors whose names `keeping` rejects are checked but not copied out (and not in the result).
    public static func read(_ path: String, keeping: (String) -> Bool = { _ in true }) throws -> File {
        let mapped: MappedFile
        do { mapped = try MappedFile(path: path) } catch let e as FileError { throw NetworkError.weights("\(e.file): \(e.reason)") }
        let b = mapped.bytes
        func bad(_ m: String) -> NetworkError { .weights("\(path): not a valid safetensors file: \(m)") }
        guard b.count >= 8 else { throw bad("only \(b.count) bytes") }
        var headerLength = 0
        for i in 0 ..< 8 { headerLength |= Int(b[i]) << (8 * i) }
        guard headerLength > 1, headerLength <= maximumHeader, headerLength <= b.count - 8 else {
            throw bad("header length \(headerLength) does not fit the file's \(b.count) bytes")
        }
        let json = Data(b[8 ..< 8 + headerLength])
        guard json.first == UInt8(ascii: "{"), let object = try? JSONSerialization.jsonObject(with: json) as? [String: Any] else {
            throw bad("the header is not a JSON object")
        }
        let dataStart = 8 + headerLength
        let dataLength = b.count - dataStart
        var metadata: [String: String] = [:]
        var entries: [(Entry, Int, Int)] = []
        for (name, value) in object {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else { throw bad("__metadata__ is not an object") }
                for (k, v) in m {
                    guard let s = v as? String else { throw bad("__metadata__ value of \(k) is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard let info = value as? [String: Any], let dtypeName = info["dtype"] as? String,
                  let shape = info["shape"] as? [Int], let offsets = info["data_offsets"] as? [Int], offsets.count == 2 else {
                throw NetworkError.weights("\(path): tensor \(name): entry needs dtype, shape and data_offsets")
            }
            guard let dtype = DType(rawValue: dtypeName) else {
                throw NetworkError.weights("\(path): tensor \(name): dtype \(dtypeName) is not supported")
            }
            guard shape.allSatisfy({ $0 >= 0 }) else { throw NetworkError.weights("\(path): tensor \(name): negative size in shape \(shape)") }
            var count = 1
            for n in shape {
                let (p, o) = count.multipliedReportingOverflow(by: n)
                guard !o else { throw NetworkError.weights("\(path): tensor \(name): shape \(shape) overflows") }
                count = p
            }
            let (begin, end) = (offsets[0], offsets[1])
            let (bytes, o) = count.multipliedReportingOverflow(by: dtype.size)
            guard !o, begin >= 0, end >= begin, end <= dataLength else {
                throw NetworkError.weights("\(path): tensor \(name): data_offsets \(offsets) outside the \(dataLength) data bytes (file truncated?)")
            }
            guard end - begin == bytes else {
                throw NetworkError.weights("\(path): tensor \(name): shape \(shape) of \(dtypeName) needs \(bytes) bytes, offsets give \(end - begin)")
            }
            let data = keeping(name) ? Array(b[dataStart + begin ..< dataStart + end]) : []
            entries.append((Entry(name: name, dtype: dtype, shape: shape, bytes: data), begin, end))
        }
        // The data must be covered exactly once, without holes or overlaps.
        entries.sort { ($0.1, $0.2) < ($1.1, $1.2) }
        var position = 0
        for (e, begin, end) in entries {
            guard begin == position else { throw bad("tensor \(e.name) starts at \(begin), expected \(position) (overlap or hole)") }
            position = end
        }
        guard position == dataLength else { throw bad("\(dataLength - position) bytes after the last tensor") }
        return File(entries: entries.map(\.0).filter { keeping($0.name) }, metadata: metadata)
    }

    /// Writes tensors atomically; the header is padded with spaces to a multiple of 8 bytes.
    public static func write(_ entries: [Entry], metadata: [String: String], to path: String) throws {
        var header: [String: Any] = [:]
        var offset = 0
        for e in entries {
            header[e.name] = ["dtype": e.dtype.rawValue, "shape": e.shape, "data_offsets": [offset, offset + e.bytes.count]] as [String: Any]
            offset += e.bytes.count
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = Array(try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]))
        while (8 + json.count) % 8 != 0 { json.append(UInt8(ascii: " ")) }
        var length = [UInt8](repeating: 0, count: 8)
        for i in 0 ..< 8 { length[i] = UInt8(truncatingIfNeeded: json.count >> (8 * i)) }
        do {
            try AtomicFile.write(to: path) { append in
                try length.withUnsafeBytes { try append($0) }
                try json.withUnsafeBytes { try append($0) }
                for e in entries { try e.bytes.withUnsafeBytes { try append($0) } }
            }
        } catch let e as FileError {
            throw NetworkError.weights("\(e.file): \(e.reason)")
        }
    }
}

/// IEEE half to single precision.
func halfToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exponent = Int(h >> 10 & 0x1F)
    let mantissa = UInt32(h & 0x3FF)
    if exponent == 0 {
        if mantissa == 0 { return Float(bitPattern: sign) }
        return (sign != 0 ? -1 : 1) * Float(mantissa) * 0x1p-24  // subnormal
    }
    if exponent == 31 { return Float(bitPattern: sign | 0x7F80_0000 | mantissa << 13) }
    return Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | mantissa << 13)
}
