import FileSupport
import Foundation

/// How a dataset folder is organised.
public enum DatasetLayout: String, Codable, Sendable {
    /// Medical Segmentation Decathlon: one 4D image per case (X, Y, Z, channels), `training` list in dataset.json.
    case decathlon
    /// nnU-Net v2: one 3D file per channel (`CASE_0000.nii.gz` ...), `channel_names` and `file_ending` in dataset.json.
    case nnUNet = "nnunet"
}

/// Label values as stored in a dataset's files, and their mapping to the training classes 0...3
/// (Decathlon Task01: 0 background, 1 edema, 2 non-enhancing tumour, 3 enhancing tumour).
public enum LabelConvention: String, Codable, Sendable {
    /// Stored values are the training classes.
    case decathlon
    /// BraTS challenge values: 1 necrosis / non-enhancing core, 2 edema, 4 enhancing (3 also read as
    /// enhancing, as BraTS 2023+ stores it). Mapped in as 2 -> 1, 1 -> 2, 4 (or 3) -> 3, and back out as
    /// 1 -> 2, 2 -> 1, 3 -> 4.
    case brats

    /// Training class of a stored label value, or nil when the value is not part of the convention.
    public func trainingClass(of stored: Int) -> UInt8? {
        switch self {
        case .decathlon: return (0 ... 3).contains(stored) ? UInt8(stored) : nil
        case .brats:
            switch stored {
            case 0: return 0
            case 2: return 1
            case 1: return 2
            case 3, 4: return 3
            default: return nil
            }
        }
    }

    /// Stored label value of a training class.
    public func storedValue(of trainingClass: UInt8) -> UInt8 {
        switch self {
        case .decathlon: return trainingClass
        case .brats: return [0, 2, 1, 4][Int(min(trainingClass, 3))]
        }
    }

    /// The mapping stated for users.
    public var mapping: String {
        switch self {
        case .decathlon: return "labels used as stored (0 background, 1 edema, 2 non-enhancing tumour, 3 enhancing tumour)"
        case .brats: return "BraTS labels mapped 0->0, 2 (edema)->1, 1 (necrosis/non-enhancing)->2, 4 (enhancing)->3 for training, and back on output"
        }
    }
}

/// One case: its image file(s) and label file.
public struct DatasetCase: Sendable, Equatable {
    public var id: String
    /// Decathlon: one 4D file. nnU-Net: one 3D file per channel, in channel order.
    public var imageFiles: [String]
    public var labelFile: String?
}

/// A dataset folder in the Decathlon or nnU-Net v2 layout, detected from its dataset.json.
public struct Dataset: Sendable {
    public var root: String
    public var layout: DatasetLayout
    public var name: String
    public var channelNames: [String]
    /// Declared label values and their names, as stored in the files.
    public var labels: [Int: String]
    public var convention: LabelConvention
    public var training: [DatasetCase]
    public var test: [DatasetCase]

    /// Opens `root`, detecting the layout. Problems with dataset.json or missing files are collected
    /// and thrown together as `ImagingError.invalidDataset`.
    public static func open(_ root: String) throws -> Dataset {
        let jsonPath = root + "/dataset.json"
        guard FileManager.default.fileExists(atPath: jsonPath) else {
            throw ImagingError.invalidDataset(folder: root, problems: ["no dataset.json (expected the Decathlon or nnU-Net v2 layout)"])
        }
        let object: Any
        let text: Data
        do {
            text = try SmallFile.read(jsonPath, limit: 64 << 20)  // 64 MB describe millions of cases
        } catch {
            throw ImagingError.invalidDataset(folder: root, problems: ["dataset.json cannot be read: \(error)"])
        }
        do {
            object = try JSONSerialization.jsonObject(with: text)
        } catch {
            throw ImagingError.invalidDataset(folder: root, problems: ["dataset.json is not valid JSON: \(error.localizedDescription)"])
        }
        guard let json = object as? [String: Any] else {
            throw ImagingError.invalidDataset(folder: root, problems: ["dataset.json is not a JSON object"])
        }
        var problems: [String] = []
        let dataset: Dataset
        if json["channel_names"] != nil {
            dataset = parseNNUNet(root: root, json: json, problems: &problems)
        } else if json["modality"] != nil || json["training"] != nil {
            dataset = parseDecathlon(root: root, json: json, problems: &problems)
        } else {
            throw ImagingError.invalidDataset(folder: root, problems: [
                "dataset.json has neither 'channel_names' (nnU-Net v2) nor 'modality'/'training' (Decathlon)",
            ])
        }
        let fm = FileManager.default
        for c in dataset.training + dataset.test {
            for f in c.imageFiles + (c.labelFile.map { [$0] } ?? []) where !fm.fileExists(atPath: f) {
                problems.append("case \(c.id): missing file \(f)")
            }
        }
        if dataset.training.isEmpty { problems.append("no training cases") }
        if !problems.isEmpty { throw ImagingError.invalidDataset(folder: root, problems: problems) }
        return dataset
    }

    private static func conventionFor(_ labels: [Int: String]) -> LabelConvention {
        labels.keys.contains(4) && !labels.keys.contains(3) ? .brats : .decathlon
    }

    private static func parseDecathlon(root: String, json: [String: Any], problems: inout [String]) -> Dataset {
        let name = json["name"] as? String ?? URL(fileURLWithPath: root).lastPathComponent
        var channels: [String] = []
        if let modality = json["modality"] as? [String: Any] {
            let keys = modality.keys.compactMap(Int.init).sorted()
            if keys != Array(0 ..< keys.count) || keys.count != modality.count {
                problems.append("dataset.json 'modality' keys must be \"0\", \"1\", ...; found \(modality.keys.sorted())")
            }
            channels = keys.map { "\(modality[String($0)] ?? "")" }
        } else {
            problems.append("dataset.json has no 'modality'")
        }
        var labels: [Int: String] = [:]
        if let l = json["labels"] as? [String: Any] {
            for (k, v) in l {
                if let value = Int(k) { labels[value] = "\(v)" } else { problems.append("dataset.json label key \"\(k)\" is not an integer") }
            }
        } else {
            problems.append("dataset.json has no 'labels'")
        }
        func resolve(_ relative: String) -> String {
            root + "/" + (relative.hasPrefix("./") ? String(relative.dropFirst(2)) : relative)
        }
        func caseID(_ path: String) -> String {
            var n = URL(fileURLWithPath: path).lastPathComponent
            for ext in [".nii.gz", ".nii"] where n.hasSuffix(ext) { n.removeLast(ext.count) }
            return n
        }
        var training: [DatasetCase] = []
        if let list = json["training"] as? [Any] {
            for (i, entry) in list.enumerated() {
                guard let e = entry as? [String: Any], let image = e["image"] as? String else {
                    problems.append("dataset.json training entry \(i) has no 'image'")
                    continue
                }
                if caseID(image).hasPrefix("._") { continue }
                training.append(DatasetCase(id: caseID(image), imageFiles: [resolve(image)], labelFile: (e["label"] as? String).map(resolve)))
            }
        } else {
            problems.append("dataset.json has no 'training' list")
        }
        // A count that disagrees with the list means a dataset.json edited by hand or cut short: say so rather
        // than guess which one is right.
        if let n = json["numTraining"] as? Int, json["training"] is [Any], n != training.count {
            problems.append("dataset.json says numTraining \(n), its training list has \(training.count) cases")
        }
        var test: [DatasetCase] = []
        for entry in json["test"] as? [Any] ?? [] {
            let image = (entry as? String) ?? ((entry as? [String: Any])?["image"] as? String)
            guard let image, !caseID(image).hasPrefix("._") else { continue }
            test.append(DatasetCase(id: caseID(image), imageFiles: [resolve(image)], labelFile: nil))
        }
        return Dataset(root: root, layout: .decathlon, name: name, channelNames: channels, labels: labels,
                       convention: conventionFor(labels), training: training, test: test)
    }

    private static func parseNNUNet(root: String, json: [String: Any], problems: inout [String]) -> Dataset {
        let name = json["name"] as? String ?? URL(fileURLWithPath: root).lastPathComponent
        var channels: [String] = []
        if let c = json["channel_names"] as? [String: Any] {
            let keys = c.keys.compactMap(Int.init).sorted()
            if keys != Array(0 ..< keys.count) || keys.count != c.count {
                problems.append("dataset.json 'channel_names' keys must be \"0\", \"1\", ...; found \(c.keys.sorted())")
            }
            channels = keys.map { "\(c[String($0)] ?? "")" }
        }
        var labels: [Int: String] = [:]
        if let l = json["labels"] as? [String: Any] {
            for (labelName, v) in l {
                // Region entries (lists, e.g. "whole tumor": [1, 2, 3]) name unions of stored values, not values.
                if let value = v as? Int { labels[value] = labelName } else if !(v is [Any]) {
                    problems.append("dataset.json label \"\(labelName)\" has value \(v), expected an integer")
                }
            }
        } else {
            problems.append("dataset.json has no 'labels'")
        }
        let ending = json["file_ending"] as? String ?? ".nii.gz"
        if ending != ".nii.gz" && ending != ".nii" { problems.append("file_ending \(ending) is not supported (.nii.gz or .nii)") }
        func cases(_ imagesFolder: String, _ labelsFolder: String?) -> [DatasetCase] {
            let images = root + "/" + imagesFolder
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: images) else { return [] }
            var ids = Set<String>()
            for n in names where n.hasSuffix(ending) && !n.hasPrefix("._") {
                let stem = n.dropLast(ending.count)
                guard stem.count > 5, stem.dropLast(4).last == "_", Int(stem.suffix(4)) != nil else {
                    problems.append("\(imagesFolder)/\(n) does not end in _XXXX\(ending) (channel number)")
                    continue
                }
                ids.insert(String(stem.dropLast(5)))
            }
            return ids.sorted().map { id in
                DatasetCase(id: id,
                            imageFiles: (0 ..< channels.count).map { String(format: "%@/%@_%04d%@", images, id, $0, ending) },
                            labelFile: labelsFolder.map { root + "/\($0)/\(id)\(ending)" })
            }
        }
        let training = cases("imagesTr", "labelsTr")
        if let n = json["numTraining"] as? Int, n != training.count {
            problems.append("dataset.json says numTraining \(n), imagesTr holds \(training.count) cases")
        }
        return Dataset(root: root, layout: .nnUNet, name: name, channelNames: channels, labels: labels,
                       convention: conventionFor(labels), training: training, test: cases("imagesTs", nil))
    }
}

/// A case's image channels and label read into memory, in NIfTI index order (x fastest).
public struct LoadedCase: Sendable {
    public var id: String
    /// Spatial shape (X, Y, Z).
    public var shape: [Int]
    /// One array per channel, X*Y*Z values each, after scaling.
    public var channels: [[Float]]
    /// Training classes 0...3 (stored labels mapped through the dataset's convention), or nil for test cases.
    public var label: [UInt8]?
    /// Header of the first image file: the geometry outputs copy.
    public var header: NiftiHeader

    public init(id: String, shape: [Int], channels: [[Float]], label: [UInt8]?, header: NiftiHeader) {
        self.id = id
        self.shape = shape
        self.channels = channels
        self.label = label
        self.header = header
    }
}

extension Dataset {
    /// Reads and validates one case: channel count, shapes and affines agree, label values are declared.
    /// Every problem found is reported at once.
    public func load(_ c: DatasetCase) throws -> LoadedCase {
        var problems: [String] = []
        var channels: [[Float]] = []
        var shape: [Int] = []
        var header = NiftiHeader()
        func sameGrid(_ a: NiftiHeader, _ b: NiftiHeader) -> Bool {
            Array(a.shape.prefix(3)) == Array(b.shape.prefix(3))
                && zip(a.affine.rows.joined(), b.affine.rows.joined()).allSatisfy { abs($0 - $1) <= 1e-3 * max(1, abs($0)) }
        }
        switch layout {
        case .decathlon:
            let file = c.imageFiles[0]
            let image = try NiftiImage.read(file)
            header = image.header
            shape = Array(image.shape.prefix(3))
            let count = image.shape.count == 4 ? image.shape[3] : (image.shape.count == 3 ? 1 : -1)
            if image.shape.count < 3 || image.shape.count > 4 {
                problems.append("\(file): shape \(image.shape), expected X x Y x Z x \(channelNames.count)")
            } else if count != channelNames.count {
                problems.append("\(file): \(count) channels, dataset.json declares \(channelNames.count) (\(channelNames.joined(separator: ", ")))")
            } else {
                let all = image.floatValues()
                let n = shape.reduce(1, *)
                channels = (0 ..< count).map { Array(all[$0 * n ..< ($0 + 1) * n]) }
            }
        case .nnUNet:
            for (i, file) in c.imageFiles.enumerated() {
                let image = try NiftiImage.read(file)
                if i == 0 {
                    header = image.header
                    shape = Array(image.shape.prefix(3))
                }
                if image.shape.count != 3 && !(image.shape.count == 4 && image.shape[3] == 1) {
                    problems.append("\(file): shape \(image.shape), expected one 3D channel")
                } else if !sameGrid(image.header, header) {
                    problems.append("\(file): shape \(image.shape) / affine differ from channel 0 (\(header.shape))")
                } else {
                    channels.append(image.floatValues())
                }
            }
        }
        var label: [UInt8]?
        if let file = c.labelFile {
            let image = try NiftiImage.read(file)
            if Array(image.shape.prefix(3)) != shape || image.shape.dropFirst(3).contains(where: { $0 != 1 }) {
                problems.append("label \(file) has shape \(image.shape), image has \(shape)")
            } else if !sameGrid(image.header, header) {
                problems.append("label \(file): affine differs from the image's (the label would not overlay)")
            } else {
                var mapped = [UInt8](repeating: 0, count: image.header.voxelCount)
                var undeclared = Set<Int>()
                let values = image.floatValues()
                for i in 0 ..< values.count {
                    let v = values[i]
                    if v == 0 { continue }
                    let stored = Int(exactly: v.rounded()) ?? -1
                    if v != v.rounded() || !labels.keys.contains(stored) {
                        undeclared.insert(stored)
                    } else if let t = convention.trainingClass(of: stored) {
                        mapped[i] = t
                    } else {
                        undeclared.insert(stored)
                    }
                }
                if !undeclared.isEmpty {
                    problems.append("label \(file) holds values \(undeclared.sorted()) not declared in dataset.json (declared: \(labels.keys.sorted()))")
                }
                label = mapped
            }
        }
        if !problems.isEmpty { throw ImagingError.invalidDataset(folder: root, problems: problems) }
        return LoadedCase(id: c.id, shape: shape, channels: channels, label: label, header: header)
    }
}
