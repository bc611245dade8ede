import Foundation
import Testing
@testable import MedicalImaging

/// Broken files give a typed error naming the file; they never crash, hang or allocate unboundedly.
@Suite struct CorruptionTests {
    private func expectError(_ path: String, _ check: (ImagingError) -> Bool, _ comment: Comment? = nil) {
        do {
            _ = try NiftiImage.read(path)
            Issue.record("read succeeded: \(comment?.description ?? path)")
        } catch let error as ImagingError {
            #expect(check(error), "unexpected error \(error)")
            #expect(error.description.contains(path), "message does not name the file: \(error)")
        } catch {
            Issue.record("untyped error \(error)")
        }
    }

    @Test func specificDefectsGiveSpecificErrors() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let valid = try readBytes(fixtures + "/uint8_sform.nii")
        let path = folder + "/broken.nii"

        try writeBytes(Array(valid.prefix(valid.count - 10)), path)
        expectError(path, { if case .truncated = $0 { return true } else { return false } }, "truncated data")

        try writeBytes(Array(valid.prefix(200)), path)
        expectError(path, { if case .truncated = $0 { return true } else { return false } }, "truncated header")

        var bytes = valid
        bytes[70] = 99  // datatype
        try writeBytes(bytes, path)
        expectError(path, { if case let .invalidField(_, field, _) = $0 { return field == "datatype" } else { return false } })

        bytes = valid
        bytes[42] = 0; bytes[43] = 0  // dim[1] = 0
        try writeBytes(bytes, path)
        expectError(path, { if case let .invalidField(_, field, _) = $0 { return field == "dim[1]" } else { return false } })

        bytes = valid
        bytes[42] = 0xFF; bytes[43] = 0x7F; bytes[44] = 0xFF; bytes[45] = 0x7F; bytes[46] = 0xFF; bytes[47] = 0x7F
        try writeBytes(bytes, path)  // 32767^3 voxels announced in a 562-byte file: refused before allocating
        expectError(path, { if case .truncated = $0 { return true } else { return false } })

        bytes = valid
        withUnsafeBytes(of: Float(1e9).bitPattern.littleEndian) { for i in 0 ..< 4 { bytes[108 + i] = $0[i] } }
        try writeBytes(bytes, path)  // vox_offset far past the end
        expectError(path, { if case .truncated = $0 { return true } else { return false } })

        try writeBytes([UInt8](repeating: 0, count: 400), path)
        expectError(path, { if case .notRecognized = $0 { return true } else { return false } })

        try writeBytes([], path)
        expectError(path, { if case .notRecognized = $0 { return true } else { return false } })

        // gzip: damaged deflate data and a stream cut short.
        var gz = try readBytes(fixtures + "/float32_4d_both.nii.gz")
        let gzPath = folder + "/broken.nii.gz"
        try writeBytes(Array(gz.prefix(gz.count / 2)), gzPath)
        expectError(gzPath, {
            if case .corruptCompression = $0 { return true }
            if case .truncated = $0 { return true }
            return false
        })
        for i in 20 ..< 40 { gz[i] ^= 0x5A }
        try writeBytes(gz, gzPath)
        expectError(gzPath, { if case .corruptCompression = $0 { return true } else { return false } })

        expectError(folder + "/missing.nii", { if case .io = $0 { return true } else { return false } })
        expectError(folder, { if case .io = $0 { return true } else { return false } })
    }

    /// Concatenated gzip members (as bgzip and `cat a.gz b.gz` make) read as one stream, through the
    /// growing-buffer path (the trailer does not vouch for the whole length).
    @Test func multiMemberGzipReads() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let original = try NiftiImage.read(fixtures + "/float32_4d_both.nii.gz")
        try original.write(to: folder + "/plain.nii")
        let bytes = try readBytes(folder + "/plain.nii")
        var joined: [UInt8] = []
        for part in [bytes[0 ..< 500], bytes[500 ..< 700], bytes[700...]] {
            let writer = try GzipWriter(level: 6, path: "test")
            try Array(part).withUnsafeBytes { try writer.write($0, finish: true) { joined += Array($0) } }
        }
        try writeBytes(joined, folder + "/members.nii.gz")
        let back = try NiftiImage.read(folder + "/members.nii.gz")
        #expect(back.voxels == original.voxels && back.header.shape == original.header.shape)
    }

    /// >= 5,000 mutated variants of valid files (header bytes, truncation, gzip bytes): each reads or
    /// throws an ImagingError; none crashes or takes long.
    @Test func mutationsNeverCrash() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        var generator = SeededGenerator(seed: 2026)
        // Sources: every nibabel fixture, decompressed (for header mutations) and compressed (for gzip ones).
        let names = try FileManager.default.contentsOfDirectory(atPath: fixtures).filter { $0.hasSuffix(".nii") || $0.hasSuffix(".nii.gz") }.sorted()
        var plain: [[UInt8]] = []
        var compressed: [[UInt8]] = []
        for name in names {
            let image = try NiftiImage.read(fixtures + "/" + name)
            let p = folder + "/source.nii"
            try image.write(to: p)
            plain.append(try readBytes(p))
            if name.hasSuffix(".gz") { compressed.append(try readBytes(fixtures + "/" + name)) }
        }
        #expect(plain.count == 10 && compressed.count >= 5)
        var reads = 0, errors = 0
        let start = Date()
        let path = folder + "/mutant.nii"
        let gzPath = folder + "/mutant.nii.gz"
        for trial in 0 ..< 5400 {
            var target = path
            var bytes: [UInt8]
            switch trial % 3 {
            case 0:  // 1-4 header bytes replaced by random values, or by interesting ones
                bytes = plain[trial / 3 % plain.count]
                let headerSize = bytes[0] == 0x1C ? 540 : 348
                for _ in 0 ..< Int.random(in: 1 ... 4, using: &generator) {
                    let at = Int.random(in: 0 ..< headerSize, using: &generator)
                    bytes[at] = [0x00, 0xFF, 0x7F, 0x80, UInt8.random(in: 0 ... 255, using: &generator)].randomElement(using: &generator)!
                }
            case 1:  // truncation of a plain or compressed file
                let source = Bool.random(using: &generator) ? plain[trial % plain.count] : compressed[trial % compressed.count]
                bytes = Array(source.prefix(Int.random(in: 0 ..< source.count, using: &generator)))
                if source.first == 0x1F { target = gzPath }
            default:  // gzip bytes flipped
                bytes = compressed[trial / 3 % compressed.count]
                target = gzPath
                for _ in 0 ..< Int.random(in: 1 ... 3, using: &generator) {
                    bytes[Int.random(in: 0 ..< bytes.count, using: &generator)] ^= UInt8.random(in: 1 ... 255, using: &generator)
                }
            }
            try writeBytes(bytes, target)
            do {
                let image = try NiftiImage.read(target)
                #expect(image.voxels.count == image.header.voxelCount)
                reads += 1
            } catch is ImagingError {
                errors += 1
            } catch {
                Issue.record("untyped error \(error) at trial \(trial)")
            }
        }
        #expect(reads + errors == 5400)
        #expect(errors > 2000 && reads > 500, "reads \(reads), errors \(errors): the mutations should exercise both paths")
        #expect(Date().timeIntervalSince(start) < 120, "mutation reads are unexpectedly slow")
    }
}
