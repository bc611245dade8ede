import FileSupport
import CZlib

/// A source of bytes read front to back: a plain file's bytes, or a gzip stream decompressed on the fly.
/// `upperBound` is the most bytes the source can possibly yield, known before anything is allocated.
protocol ByteSource {
    var path: String { get }
    var upperBound: Int { get }
    /// Whether the source itself vouches that it holds exactly `length` bytes (so a buffer of that size
    /// may be allocated before reading). When it does not, readers grow buffers as data actually arrives.
    func confirms(length: Int) -> Bool
    /// Fills `buffer` completely unless the source ends first; returns the bytes written.
    mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

/// The bytes of an uncompressed file.
struct PlainSource: ByteSource {
    let file: MappedFile
    var offset = 0
    var path: String { file.path }
    var upperBound: Int { file.bytes.count }

    init(file: MappedFile) { self.file = file }

    func confirms(length: Int) -> Bool { length <= file.bytes.count }

    mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = min(buffer.count, file.bytes.count - offset)
        if n > 0 {
            buffer.baseAddress!.copyMemory(from: file.bytes.baseAddress! + offset, byteCount: n)
        }
        offset += n
        return n
    }
}

/// The decompressed bytes of a gzip file (concatenated members read as one stream).
final class GzipSource: ByteSource {
    /// Deflate cannot expand data by more than about 1032:1, so a header announcing more than this
    /// is refused before allocating (a lying header cannot make us allocate unboundedly).
    static let maximumRatio = 1032

    let file: MappedFile
    private let inflater: OpaquePointer
    var path: String { file.path }
    var upperBound: Int { file.bytes.count.multipliedReportingOverflow(by: Self.maximumRatio).partialValue + 4096 }

    init(file: MappedFile) throws {
        self.file = file
        let base = file.bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)
        guard let inflater = czlib_inflater_create(base, file.bytes.count) else {
            throw ImagingError.io(file: file.path, reason: "cannot start gzip decompression (out of memory)")
        }
        self.inflater = inflater
    }

    deinit { czlib_inflater_destroy(inflater) }

    /// The gzip trailer's ISIZE (length mod 2^32 of a single-member stream) matches. A header that lies
    /// about the size, or a multi-member file, takes the growing-buffer path instead.
    func confirms(length: Int) -> Bool {
        let b = file.bytes
        guard b.count >= 18 else { return false }
        let n = b.count
        let isize = UInt32(b[n - 4]) | UInt32(b[n - 3]) << 8 | UInt32(b[n - 2]) << 16 | UInt32(b[n - 1]) << 24
        return isize == UInt32(truncatingIfNeeded: length)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard buffer.count > 0 else { return 0 }
        var produced = 0
        let status = czlib_inflater_read(inflater, buffer.baseAddress!.assumingMemoryBound(to: UInt8.self), buffer.count, &produced)
        switch status {
        case Int32(CZLIB_OK), Int32(CZLIB_END): return produced
        case Int32(CZLIB_TRUNCATED):
            throw ImagingError.corruptCompression(file: path, reason: "the gzip stream ends early (file truncated?)")
        case Int32(CZLIB_NOMEM): throw ImagingError.io(file: path, reason: "out of memory while decompressing")
        default:
            let message = String(cString: czlib_inflater_message(inflater))
            throw ImagingError.corruptCompression(file: path, reason: message.isEmpty ? "invalid data" : message)
        }
    }
}

/// Opens a file as a byte source, decompressing when it starts with the gzip magic (whatever its name).
func openSource(_ path: String) throws -> any ByteSource {
    let file = try mapFile(path)
    if file.bytes.count >= 2, file.bytes[0] == 0x1f, file.bytes[1] == 0x8b {
        return try GzipSource(file: file)
    }
    return PlainSource(file: file)
}

/// Streams bytes into a gzip file.
final class GzipWriter {
    private let deflater: OpaquePointer
    private let path: String

    /// `zlib`: a zlib stream (PNG) instead of a gzip member.
    init(level: Int, path: String, zlib: Bool = false) throws {
        self.path = path
        let l = Int32(max(0, min(9, level)))
        guard let d = zlib ? czlib_deflater_create_zlib(l) : czlib_deflater_create(l) else {
            throw ImagingError.io(file: path, reason: "cannot start gzip compression")
        }
        deflater = d
    }

    deinit { czlib_deflater_destroy(deflater) }

    /// Compresses `bytes` and passes the compressed chunks to `sink`; `finish` ends the member.
    func write(_ bytes: UnsafeRawBufferPointer, finish: Bool, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        // The C side calls back synchronously; carry the Swift closure and any error through a box.
        final class Context {
            let sink: (UnsafeRawBufferPointer) throws -> Void
            var error: Error?
            init(_ sink: @escaping (UnsafeRawBufferPointer) throws -> Void) { self.sink = sink }
        }
        try withoutActuallyEscaping(sink) { sink in
            let context = Context(sink)
            let unmanaged = Unmanaged.passRetained(context)
            defer { unmanaged.release() }
            let status = czlib_deflater_write(
                deflater, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count, finish ? 1 : 0,
                { raw, chunk, length in
                    let context = Unmanaged<Context>.fromOpaque(raw!).takeUnretainedValue()
                    do { try context.sink(UnsafeRawBufferPointer(start: chunk, count: length)) } catch {
                        context.error = error
                        return 1
                    }
                    return 0
                }, unmanaged.toOpaque())
            if let error = context.error { throw error }
            if status != 0 { throw ImagingError.io(file: path, reason: "gzip compression failed") }
        }
    }
}

/// Maps a file, reporting failures as `ImagingError.io` like every other problem with an image file.
func mapFile(_ path: String) throws -> MappedFile {
    do { return try MappedFile(path: path) } catch let error as FileError {
        throw ImagingError.io(file: error.file, reason: error.reason)
    }
}
