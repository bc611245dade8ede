import Engine
import Foundation
@testable import MedicalImaging
@testable import Segmentation

func temporaryFolder(_ name: String = #function) throws -> String {
    let safe = name.filter { $0.isLetter || $0.isNumber }
    let path = NSTemporaryDirectory() + "swiftunet-\(safe)-\(UInt32.random(in: 0 ... .max))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func removeTemporary(_ path: String) { try? FileManager.default.removeItem(atPath: path) }

/// A small 4-channel case in NIfTI order (X, Y, Z): a positive box of brain at `box` (x, y, z ranges)
/// with varied values, zeros elsewhere, and a label cube of classes 1-3 inside it.
struct TinyCase {
    var shape = [20, 18, 10]
    var box = [3 ..< 17, 4 ..< 15, 2 ..< 9]
    var channels: [[Float]] = []
    var label: [UInt8] = []

    init(seed: UInt64) {
        var g = SplitMix64(mixing: seed)
        let n = shape.reduce(1, *)
        for c in 0 ..< 4 {
            var v = [Float](repeating: 0, count: n)
            for z in box[2] { for y in box[1] { for x in box[0] {
                v[(z * shape[1] + y) * shape[0] + x] = Float(g.uniform(10, 100)) * Float(c + 1)
            } } }
            channels.append(v)
        }
        label = [UInt8](repeating: 0, count: n)
        for z in 4 ..< 7 { for y in 6 ..< 12 { for x in 5 ..< 14 {
            label[(z * shape[1] + y) * shape[0] + x] = UInt8(1 + (x + y + z) % 3)
        } } }
    }

    /// Writes the case in the Decathlon layout (one 4D image) under `folder` as `id`.
    func writeDecathlon(_ folder: String, ids: [String], labels: [String: String] = ["0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"],
                        store: (UInt8) -> UInt8 = { $0 }) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: folder + "/imagesTr", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: folder + "/labelsTr", withIntermediateDirectories: true)
        for id in ids {
            try NiftiImage(shape: shape + [4], voxels: .float32(channels.flatMap { $0 })).write(to: folder + "/imagesTr/\(id).nii.gz")
            try NiftiImage(shape: shape, voxels: .uint8(label.map(store))).write(to: folder + "/labelsTr/\(id).nii.gz")
        }
        let json: [String: Any] = [
            "name": "tiny", "tensorImageSize": "4D",
            "modality": ["0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"], "labels": labels,
            "numTraining": ids.count,
            "training": ids.map { ["image": "./imagesTr/\($0).nii.gz", "label": "./labelsTr/\($0).nii.gz"] } + [["image": "./imagesTr/._\(ids[0]).nii.gz"]],
            "test": [String](),
        ]
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: folder + "/dataset.json"))
    }

    /// Writes the case in the nnU-Net v2 layout (one file per channel).
    func writeNNUNet(_ folder: String, ids: [String]) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: folder + "/imagesTr", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: folder + "/labelsTr", withIntermediateDirectories: true)
        for id in ids {
            for c in 0 ..< 4 {
                try NiftiImage(shape: shape, voxels: .float32(channels[c])).write(to: folder + String(format: "/imagesTr/%@_%04d.nii.gz", id, c))
            }
            try NiftiImage(shape: shape, voxels: .uint8(label)).write(to: folder + "/labelsTr/\(id).nii.gz")
        }
        try Data("junk".utf8).write(to: URL(fileURLWithPath: folder + "/imagesTr/._\(ids[0])_0000.nii.gz"))  // macOS resource fork
        let json: [String: Any] = [
            "channel_names": ["0": "FLAIR", "1": "T1w", "2": "T1gd", "3": "T2w"],
            "labels": ["background": 0, "edema": 1, "non-enhancing tumor": 2, "enhancing tumour": 3, "whole tumour": [1, 2, 3]],
            "numTraining": ids.count, "file_ending": ".nii.gz",
        ]
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: folder + "/dataset.json"))
    }
}
