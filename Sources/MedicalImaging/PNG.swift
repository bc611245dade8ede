import FileSupport
import CZlib
import Foundation

/// An 8-bit RGB picture, rows top to bottom, written as PNG (for overlays and plots).
public struct RGBImage: Sendable {
    public let width: Int, height: Int
    public var pixels: [UInt8]  // (height, width, 3)

    public init(width: Int, height: Int, fill: (UInt8, UInt8, UInt8) = (0, 0, 0)) {
        self.width = width
        self.height = height
        pixels = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0 ..< width * height { (pixels[3 * i], pixels[3 * i + 1], pixels[3 * i + 2]) = fill }
    }

    public subscript(x: Int, y: Int) -> (UInt8, UInt8, UInt8) {
        get { let i = 3 * (y * width + x); return (pixels[i], pixels[i + 1], pixels[i + 2]) }
        set {
            guard x >= 0, y >= 0, x < width, y < height else { return }
            let i = 3 * (y * width + x)
            (pixels[i], pixels[i + 1], pixels[i + 2]) = newValue
        }
    }

    /// Copies `other` with its top-left corner at (x, y).
    public mutating func paste(_ other: RGBImage, x: Int, y: Int) {
        for j in 0 ..< other.height { for i in 0 ..< other.width { self[x + i, y + j] = other[i, j] } }
    }

    /// The PNG file's bytes.
    public func png() throws -> [UInt8] {
        func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
            let body = Array(type.utf8) + data
            let crc = body.withUnsafeBufferPointer { czlib_crc32(0, $0.baseAddress, $0.count) }
            return be32(UInt32(data.count)) + body + be32(crc)
        }
        func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
        var raw = [UInt8]()
        raw.reserveCapacity(height * (1 + 3 * width))
        for y in 0 ..< height {
            raw.append(0)  // filter: none
            raw += pixels[(3 * y * width) ..< (3 * (y + 1) * width)]
        }
        var compressed = [UInt8]()
        let z = try GzipWriter(level: 6, path: "PNG", zlib: true)
        try raw.withUnsafeBytes { try z.write($0, finish: true) { compressed += Array($0) } }
        let header = be32(UInt32(width)) + be32(UInt32(height)) + [8, 2, 0, 0, 0]  // 8-bit RGB, no interlace
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", header) + chunk("IDAT", compressed) + chunk("IEND", [])
    }

    /// Writes the picture atomically.
    public func write(to path: String) throws { try AtomicFile.write(try png(), to: path) }
}
