import Foundation
import Glibc

/// A file could not be opened, read, mapped or written; `reason` is the system's explanation.
public struct FileError: Error, CustomStringConvertible, Equatable {
    public var file: String
    public var reason: String
    public static func io(file: String, reason: String) -> FileError { FileError(file: file, reason: reason) }
    public var description: String { "\(file): \(reason)" }
}

/// A read-only memory map of a whole file (empty files map to an empty buffer).
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let bytes: UnsafeRawBufferPointer
    private let base: UnsafeMutableRawPointer?

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw FileError.io(file: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw FileError.io(file: path, reason: String(cString: strerror(errno))) }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw FileError.io(file: path, reason: "not a regular file") }
        let size = Int(info.st_size)
        if size == 0 {
            base = nil
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let mapped, mapped != MAP_FAILED else {
            throw FileError.io(file: path, reason: "cannot map: " + String(cString: strerror(errno)))
        }
        madvise(mapped, size, MADV_SEQUENTIAL)
        base = mapped
        bytes = UnsafeRawBufferPointer(start: mapped, count: size)
    }

    deinit {
        if let base { munmap(base, bytes.count) }
    }
}

/// Files that describe data (dataset.json and the like): read whole, refused past a size limit, so that a wrong
/// or hostile file cannot make the reader allocate without bound. (Read through a mapping: Foundation's
/// Data(contentsOf:) leaks a buffer on an empty file, as fuzzing found.)
public enum SmallFile {
    public static func read(_ path: String, limit: Int) throws -> Data {
        let file = try MappedFile(path: path)
        guard file.bytes.count <= limit else {
            throw FileError.io(file: path, reason: "is \(file.bytes.count) bytes, more than the \(limit) such a file may have")
        }
        return file.bytes.isEmpty ? Data() : Data(file.bytes)
    }
}

/// Writes a file so that readers see either the old file or the complete new one, never a part:
/// the content goes to a hidden temporary file in the same folder, is flushed to disk, then renamed.
public enum AtomicFile {
    /// Calls `body` with a function that appends bytes to the temporary file.
    public static func write(to path: String, _ body: (_ append: (UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws {
        let url = URL(fileURLWithPath: path)
        let folder = url.deletingLastPathComponent().path
        let temporary = folder + "/.\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        guard fd >= 0 else {
            throw FileError.io(file: path, reason: "cannot create \(temporary): " + String(cString: strerror(errno)))
        }
        var closed = false
        do {
            try body { chunk in
                var offset = 0
                while offset < chunk.count {
                    let n = Glibc.write(fd, chunk.baseAddress! + offset, chunk.count - offset)
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw FileError.io(file: path, reason: "write failed: " + String(cString: strerror(errno)))
                    }
                    offset += n
                }
            }
            guard fsync(fd) == 0 else { throw FileError.io(file: path, reason: "fsync failed: " + String(cString: strerror(errno))) }
            closed = true
            guard close(fd) == 0 else { throw FileError.io(file: path, reason: "close failed: " + String(cString: strerror(errno))) }
            guard rename(temporary, path) == 0 else {
                throw FileError.io(file: path, reason: "rename failed: " + String(cString: strerror(errno)))
            }
        } catch {
            if !closed { close(fd) }
            unlink(temporary)
            throw error
        }
    }

    /// Removes the temporary files that killed writers left in `folder` (those of processes that no longer
    /// run; a live writer's are kept). Returns their names. Writers call it on the folders they write into, so a
    /// kill never leaves temporary files piling up.
    @discardableResult
    public static func removeStale(in folder: String) -> [String] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else { return [] }
        var removed: [String] = []
        for name in names where name.hasPrefix(".") {
            // .NAME.tmp-PID-RANDOM
            guard let mark = name.range(of: ".tmp-", options: .backwards) else { continue }
            let parts = name[mark.upperBound...].split(separator: "-")
            guard parts.count == 2, let pid = Int32(parts[0]), UInt32(parts[1]) != nil else { continue }
            if kill(pid, 0) == 0 || errno == EPERM { continue }  // that writer still runs
            if unlink(folder + "/" + name) == 0 { removed.append(name) }
        }
        return removed
    }

    /// Writes `data` atomically.
    public static func write(_ data: [UInt8], to path: String) throws {
        try write(to: path) { append in try data.withUnsafeBytes { try append($0) } }
    }

    /// Writes UTF-8 text atomically.
    public static func write(text: String, to path: String) throws {
        try write(Array(text.utf8), to: path)
    }
}
