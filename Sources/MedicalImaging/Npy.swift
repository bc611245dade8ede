import FileSupport
import Foundation

/// A NumPy array as stored in a `.npy` file (format versions 1-3).
/// `values` are in memory order: C order (last axis fastest) unless `fortranOrder`, where the first is fastest.
public struct NpyArray: Sendable, Equatable {
    public var shape: [Int]
    public var values: VoxelArray
    public var fortranOrder: Bool

    public init(shape: [Int], values: VoxelArray, fortranOrder: Bool = false) throws {
        guard shape.allSatisfy({ $0 >= 0 }), shape.reduce(1, *) == values.count else {
            throw ImagingError.invalidArgument("array shape \(shape) does not hold \(values.count) values")
        }
        self.shape = shape
        self.values = values
        self.fortranOrder = fortranOrder
    }

    /// A C-order float32 array.
    public init(shape: [Int], floats: [Float]) throws { try self.init(shape: shape, values: .float32(floats)) }
}

/// Reading and writing NumPy `.npy` files, the format preprocessed cases and tensors are exchanged in.
public enum Npy {
    private static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // "\x93NUMPY"

    private static func descr(_ t: NiftiDatatype) -> String {
        switch t {
        case .uint8: return "|u1"
        case .int8: return "|i1"
        case .int16: return "<i2"
        case .uint16: return "<u2"
        case .int32: return "<i4"
        case .uint32: return "<u4"
        case .int64: return "<i8"
        case .float32: return "<f4"
        case .float64: return "<f8"
        }
    }

    /// Where a `.npy` file's values are and what they are.
    public struct Layout: Sendable {
        public var shape: [Int]
        public var datatype: NiftiDatatype
        public var bigEndian: Bool
        public var fortranOrder: Bool
        /// Offset of the first value in the file, in bytes.
        public var dataStart: Int
        public var count: Int
    }

    /// A memory-mapped `.npy` file (values read in place, e.g. one slice of a preprocessed case).
    public final class Mapped: @unchecked Sendable {
        public let layout: Layout
        let file: MappedFile
        init(file: MappedFile, layout: Layout) { self.file = file; self.layout = layout }

        /// Copies `count` little-endian float32 values starting at value index `start` into `destination`.
        public func copyFloats(from start: Int, count: Int, into destination: UnsafeMutablePointer<Float>) {
            precondition(layout.datatype == .float32 && !layout.bigEndian && start >= 0 && start + count <= layout.count)
            UnsafeMutableRawPointer(destination).copyMemory(from: file.bytes.baseAddress! + layout.dataStart + 4 * start, byteCount: 4 * count)
        }

        /// Copies `count` uint8 values starting at value index `start`.
        public func copyBytes(from start: Int, count: Int, into destination: UnsafeMutablePointer<UInt8>) {
            precondition(layout.datatype == .uint8 && start >= 0 && start + count <= layout.count)
            UnsafeMutableRawPointer(destination).copyMemory(from: file.bytes.baseAddress! + layout.dataStart + start, byteCount: count)
        }
    }

    /// Maps a `.npy` file after checking its header and size.
    public static func map(_ path: String) throws -> Mapped {
        let file = try mapFile(path)
        return Mapped(file: file, layout: try layout(file.bytes, path: path))
    }

    static func layout(_ bytes: UnsafeRawBufferPointer, path: String) throws -> Layout {
        func bad(_ reason: String) -> ImagingError { .notRecognized(file: path, reason: reason) }
        guard bytes.count >= 10, Array(bytes[0 ..< 6]) == magic else { throw bad("missing the NumPy .npy magic") }
        let major = bytes[6]
        let headerLength: Int
        let headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw bad("header ends early") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        default: throw bad(".npy format version \(major) is not supported")
        }
        guard headerLength <= 1 << 20, headerStart + headerLength <= bytes.count else {
            throw ImagingError.truncated(file: path, expectedBytes: headerStart + headerLength, availableBytes: bytes.count)
        }
        let text = String(decoding: bytes[headerStart ..< headerStart + headerLength], as: UTF8.self)
        let header = try PythonDictionary.parse(text, file: path)
        guard case let .string(descr)? = header["descr"] else { throw bad("header has no 'descr' string") }
        guard case let .bool(fortran)? = header["fortran_order"] else { throw bad("header has no 'fortran_order'") }
        guard case let .tuple(shape)? = header["shape"] else { throw bad("header has no 'shape' tuple") }
        guard shape.allSatisfy({ $0 >= 0 }) else { throw bad("negative size in shape \(shape)") }
        guard descr.count == 3, let order = descr.first, "<>|=".contains(order),
              let type = NiftiDatatype.allCases.first(where: { self.descr($0).dropFirst() == descr.dropFirst() })
        else { throw bad("dtype '\(descr)' is not supported (numeric types up to 8 bytes)") }
        var count = 1
        for n in shape {
            let (p, o) = count.multipliedReportingOverflow(by: n)
            guard !o else { throw bad("shape \(shape) overflows") }
            count = p
        }
        let dataStart = headerStart + headerLength
        let (byteCount, overflow) = count.multipliedReportingOverflow(by: type.bytesPerVoxel)
        guard !overflow, byteCount <= bytes.count - dataStart else {
            throw ImagingError.truncated(file: path, expectedBytes: overflow ? Int.max : byteCount, availableBytes: bytes.count - dataStart)
        }
        return Layout(shape: shape, datatype: type, bigEndian: order == ">" && type.bytesPerVoxel > 1, fortranOrder: fortran,
                      dataStart: dataStart, count: count)
    }

    /// Reads a `.npy` file; sizes are checked against the file before copying.
    public static func read(_ path: String) throws -> NpyArray {
        let file = try mapFile(path)
        let bytes = file.bytes
        let l = try layout(bytes, path: path)
        let (type, count, bigEndian, dataStart, shape, fortran) = (l.datatype, l.count, l.bigEndian, l.dataStart, l.shape, l.fortranOrder)
        let byteCount = count * type.bytesPerVoxel
        let raw = UnsafeRawBufferPointer(rebasing: bytes[dataStart ..< dataStart + byteCount])
        func load<T: FixedWidthInteger>(_: T.Type) -> [T] {
            [T](unsafeUninitializedCapacity: count) { buffer, initialized in
                if count > 0 { UnsafeMutableRawBufferPointer(buffer).copyMemory(from: raw) }
                if bigEndian { for i in 0 ..< count { buffer[i] = buffer[i].byteSwapped } }
                initialized = count
            }
        }
        func loadFloat<T: BinaryFloatingPoint, B: FixedWidthInteger>(_: T.Type, _: B.Type) -> [T] {
            let bits = load(B.self)
            return [T](unsafeUninitializedCapacity: count) { buffer, initialized in
                bits.withUnsafeBytes { UnsafeMutableRawBufferPointer(buffer).copyMemory(from: $0) }
                initialized = count
            }
        }
        let values: VoxelArray
        switch type {
        case .uint8: values = .uint8(load(UInt8.self))
        case .int8: values = .int8(load(Int8.self))
        case .int16: values = .int16(load(Int16.self))
        case .uint16: values = .uint16(load(UInt16.self))
        case .int32: values = .int32(load(Int32.self))
        case .uint32: values = .uint32(load(UInt32.self))
        case .int64: values = .int64(load(Int64.self))
        case .float32: values = .float32(loadFloat(Float.self, UInt32.self))
        case .float64: values = .float64(loadFloat(Double.self, UInt64.self))
        }
        return try NpyArray(shape: shape, values: values, fortranOrder: fortran)
    }

    /// Writes `array` atomically as a version 1.0 `.npy` file (little-endian).
    public static func write(_ array: NpyArray, to path: String) throws {
        let shapeText = array.shape.count == 1 ? "(\(array.shape[0]),)" : "(" + array.shape.map(String.init).joined(separator: ", ") + ")"
        var text = "{'descr': '\(descr(array.values.datatype))', 'fortran_order': \(array.fortranOrder ? "True" : "False"), 'shape': \(shapeText), }"
        // Pad with spaces so the data starts on a 64-byte boundary; the header ends with a newline.
        let total = 10 + text.utf8.count + 1
        text += String(repeating: " ", count: (64 - total % 64) % 64) + "\n"
        let length = text.utf8.count
        guard length <= 65535 else { throw ImagingError.invalidArgument("\(path): array header too long") }
        let head = magic + [1, 0, UInt8(length & 0xFF), UInt8(length >> 8)] + Array(text.utf8)
        try AtomicFile.write(to: path) { append in
            try head.withUnsafeBytes { try append($0) }
            try array.values.withUnsafeBytes { try append($0) }
        }
    }
}

/// The small subset of Python literal syntax used by `.npy` headers: a dict with string keys whose values
/// are strings, booleans or tuples of integers.
enum PythonValue: Equatable {
    case string(String), bool(Bool), tuple([Int])
}

enum PythonDictionary {
    static func parse(_ text: String, file: String) throws -> [String: PythonValue] {
        var chars = Array(text.unicodeScalars)[...]
        func bad(_ why: String) -> ImagingError { .notRecognized(file: file, reason: "malformed .npy header (\(why)): \(text.prefix(200))") }
        func skipSpace() { while let c = chars.first, c == " " || c == "\n" || c == "\t" { chars.removeFirst() } }
        func expect(_ c: Unicode.Scalar) throws {
            skipSpace()
            guard chars.first == c else { throw bad("expected '\(c)'") }
            chars.removeFirst()
        }
        func string() throws -> String {
            skipSpace()
            guard let q = chars.first, q == "'" || q == "\"" else { throw bad("expected a string") }
            chars.removeFirst()
            var s = ""
            while let c = chars.first, c != q { s.unicodeScalars.append(c); chars.removeFirst() }
            guard !chars.isEmpty else { throw bad("unterminated string") }
            chars.removeFirst()
            return s
        }
        func integer() throws -> Int {
            skipSpace()
            var digits = ""
            while let c = chars.first, ("0" ... "9").contains(c) || c == "-" { digits.unicodeScalars.append(c); chars.removeFirst() }
            if chars.first == "L" { chars.removeFirst() }  // Python 2 long suffix
            guard digits.count <= 19, let v = Int(digits) else { throw bad("bad integer '\(digits)'") }
            return v
        }
        var result: [String: PythonValue] = [:]
        try expect("{")
        while true {
            skipSpace()
            if chars.first == "}" { chars.removeFirst(); break }
            let key = try string()
            try expect(":")
            skipSpace()
            switch chars.first {
            case "'", "\"": result[key] = .string(try string())
            case "T", "F":
                let word = String(String.UnicodeScalarView(chars.prefix(while: { $0.properties.isAlphabetic })))
                guard word == "True" || word == "False" else { throw bad("unknown word \(word)") }
                chars.removeFirst(word.unicodeScalars.count)
                result[key] = .bool(word == "True")
            case "(":
                chars.removeFirst()
                var items: [Int] = []
                while true {
                    skipSpace()
                    if chars.first == ")" { chars.removeFirst(); break }
                    items.append(try integer())
                    guard items.count <= 32 else { throw bad("too many dimensions") }
                    skipSpace()
                    if chars.first == "," { chars.removeFirst() } else if chars.first != ")" { throw bad("expected ',' or ')'") }
                }
                result[key] = .tuple(items)
            default: throw bad("unexpected value for '\(key)'")
            }
            skipSpace()
            if chars.first == "," { chars.removeFirst() } else if chars.first != "}" { throw bad("expected ',' or '}'") }
        }
        return result
    }
}
