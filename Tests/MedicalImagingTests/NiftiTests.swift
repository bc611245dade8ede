import Foundation
import Testing
@testable import MedicalImaging
import CZlib

private struct Expected: Decodable {
    let file: String
    let shape: [Int]
    let datatype: String
    let affine: [[Double]]
    let orientation: String
    let spacing: [Double]
    let qform_code: Int
    let sform_code: Int
    let big_endian: Bool
}

private func expectedCases() throws -> [String: Expected] {
    let data = try Data(contentsOf: URL(fileURLWithPath: fixtures + "/expected.json"))
    return try JSONDecoder().decode([String: Expected].self, from: data)
}

@Suite struct NiftiFixtureTests {
    /// Files written by nibabel read to the same values, shapes, affines and orientations.
    @Test func readsNibabelFiles() throws {
        let cases = try expectedCases()
        #expect(cases.count == 10)
        for (name, expected) in cases.sorted(by: { $0.key < $1.key }) {
            let image = try NiftiImage.read(fixtures + "/" + expected.file)
            let h = image.header
            #expect(image.shape == expected.shape, "\(name)")
            #expect(h.datatype.description == expected.datatype, "\(name)")
            #expect(h.byteOrder == (expected.big_endian ? .big : .little), "\(name)")
            #expect(h.qformCode == expected.qform_code && h.sformCode == expected.sform_code, "\(name)")
            #expect(image.affine.orientation == expected.orientation, "\(name)")
            for i in 0 ..< 4 {
                for j in 0 ..< 4 {
                    #expect(abs(image.affine.rows[i][j] - expected.affine[i][j]) <= 1e-5, "\(name) affine[\(i)][\(j)]")
                }
            }
            for (a, b) in zip(h.spacing, expected.spacing) { #expect(abs(a - b) <= 1e-6, "\(name) spacing") }
            let truth = try Npy.read(fixtures + "/\(name).expected.npy")
            guard case let .float64(values) = truth.values else { Issue.record("\(name): expected float64"); continue }
            let slope = h.hasScaling ? h.sclSlope : 1, inter = h.hasScaling ? h.sclInter : 0
            let exact = image.voxels.doubles().map { $0 * slope + inter }
            #expect(exact == values, "\(name): values differ")
            let floats = image.floatValues()
            #expect(zip(floats, values).allSatisfy { abs(Double($0) - $1) <= 1e-6 * max(1, abs($1)) }, "\(name): float values")
        }
    }

    @Test func readsNumpyOrders() throws {
        let c = try Npy.read(fixtures + "/c_order_int16_be.npy")
        #expect(c.shape == [3, 4] && !c.fortranOrder)
        #expect(c.values == .int16((0 ..< 12).map { Int16($0 - 5) }))
        let f = try Npy.read(fixtures + "/fortran_float32.npy")
        #expect(f.shape == [2, 3, 4] && f.fortranOrder)
        // Fortran order: element (i, j, k) = (i*12 + j*4 + k) / 8 lies at i + 2j + 6k.
        guard case let .float32(v) = f.values else { Issue.record("float32 expected"); return }
        #expect(v[1 + 2 * 2 + 6 * 3] == Float(12 + 8 + 3) / 8)
    }
}

@Suite struct NiftiRoundTripTests {
    private static func sample(_ type: NiftiDatatype, count: Int) -> VoxelArray {
        var g = SeededGenerator(seed: UInt64(type.rawValue))
        switch type {
        case .uint8: return .uint8((0 ..< count).map { _ in UInt8.random(in: 0 ... .max, using: &g) })
        case .int8: return .int8((0 ..< count).map { _ in Int8.random(in: .min ... .max, using: &g) })
        case .int16: return .int16((0 ..< count).map { _ in Int16.random(in: .min ... .max, using: &g) })
        case .uint16: return .uint16((0 ..< count).map { _ in UInt16.random(in: 0 ... .max, using: &g) })
        case .int32: return .int32((0 ..< count).map { _ in Int32.random(in: .min ... .max, using: &g) })
        case .uint32: return .uint32((0 ..< count).map { _ in UInt32.random(in: 0 ... .max, using: &g) })
        case .int64: return .int64((0 ..< count).map { _ in Int64.random(in: .min ... .max, using: &g) })
        case .float32: return .float32((0 ..< count).map { _ in Float.random(in: -1e6 ... 1e6, using: &g) })
        case .float64: return .float64((0 ..< count).map { _ in Double.random(in: -1e12 ... 1e12, using: &g) })
        }
    }

    @Test(arguments: NiftiDatatype.allCases)
    func everyDatatypeRoundTrips(type: NiftiDatatype) throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let shape = [5, 4, 3, 2]
        let reference = try NiftiImage.read(fixtures + "/int16_be_scaled_qform.nii.gz").header
        for (version, suffix) in [(1, ".nii"), (1, ".nii.gz"), (2, ".nii"), (2, ".nii.gz")] {
            var image = try NiftiImage(shape: shape, voxels: Self.sample(type, count: 120), like: reference)
            image.header.version = version
            image.header.sclSlope = 2
            image.header.sclInter = -3
            image.header.description = "round trip"
            let path = folder + "/image\(version)\(suffix)"
            try image.write(to: path)
            let back = try NiftiImage.read(path)
            #expect(back.header.version == version)
            #expect(back.voxels == image.voxels, "\(type) v\(version)\(suffix)")
            #expect(back.shape == shape)
            #expect(back.header.sclSlope == 2 && back.header.sclInter == -3)
            #expect(back.header.description == "round trip")
            #expect(back.header.qformCode == reference.qformCode && back.header.sformCode == reference.sformCode)
            for i in 0 ..< 4 {
                for j in 0 ..< 4 { #expect(abs(back.affine.rows[i][j] - reference.affine.rows[i][j]) < 1e-6) }
            }
        }
    }

    /// setAffine stores a qform whose matrix equals the affine (rotations, reflections, anisotropic spacing).
    @Test func affineToQformAndBack() throws {
        let c = cos(0.4), s = sin(0.4)
        let affines: [Affine] = [
            .identity,
            Affine(rows: [[-1, 0, 0, 90], [0, -1, 0, 126], [0, 0, 1, -72], [0, 0, 0, 1]]),
            Affine(rows: [[c * 1.5, -s * 2, 0, 3], [s * 1.5, c * 2, 0, -4], [0, 0, -3, 5], [0, 0, 0, 1]]),
            Affine(rows: [[0, 0, 2, 1], [1, 0, 0, 2], [0, -1, 0, 3], [0, 0, 0, 1]]),
        ]
        for affine in affines {
            var h = NiftiHeader()
            h.shape = [4, 4, 4]
            h.setAffine(affine)
            let q = h.qformAffine
            for i in 0 ..< 3 { for j in 0 ..< 4 { #expect(abs(q.rows[i][j] - affine.rows[i][j]) < 1e-9, "\(affine)") } }
        }
        #expect(Affine(rows: [[-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]).orientation == "LPS")
        #expect(Affine(rows: [[0, 0, 2, 1], [1, 0, 0, 2], [0, -1, 0, 3], [0, 0, 0, 1]]).orientation == "AIR")
    }

    @Test func npyRoundTrip() throws {
        let folder = try temporaryFolder()
        defer { removeTemporary(folder) }
        let array = try NpyArray(shape: [2, 3, 4], floats: (0 ..< 24).map { Float($0) * 0.25 })
        try Npy.write(array, to: folder + "/a.npy")
        #expect(try Npy.read(folder + "/a.npy") == array)
        let labels = try NpyArray(shape: [1, 5], values: .uint8([0, 1, 2, 3, 0]))
        try Npy.write(labels, to: folder + "/y.npy")
        #expect(try Npy.read(folder + "/y.npy") == labels)
        // The data starts on a 64-byte boundary, as numpy writes it.
        #expect(try readBytes(folder + "/a.npy").count == 128 + 24 * 4)
    }
}

@Suite struct PNGTests {
    /// The encoder writes a valid PNG: signature, IHDR with the size, chunk CRCs that check, IEND last.
    @Test func writesValidChunks() throws {
        var image = RGBImage(width: 7, height: 5, fill: (10, 20, 30))
        image[3, 2] = (255, 0, 0)
        #expect(image[3, 2] == (255, 0, 0) && image[0, 0] == (10, 20, 30))
        let bytes = try image.png()
        #expect(Array(bytes[0 ..< 8]) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        var offset = 8
        var types: [String] = []
        while offset < bytes.count {
            let length = Int(bytes[offset]) << 24 | Int(bytes[offset + 1]) << 16 | Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
            let body = Array(bytes[offset + 4 ..< offset + 8 + length])
            let crc = bytes[offset + 8 + length ..< offset + 12 + length].reduce(0) { $0 << 8 | UInt32($1) }
            #expect(crc == body.withUnsafeBufferPointer { czlib_crc32(0, $0.baseAddress, $0.count) })
            types.append(String(decoding: body[0 ..< 4], as: UTF8.self))
            if types.last == "IHDR" { #expect(Array(body[4 ..< 12]) == [0, 0, 0, 7, 0, 0, 0, 5]) }
            offset += 12 + length
        }
        #expect(types == ["IHDR", "IDAT", "IEND"])
    }
}
