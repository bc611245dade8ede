import Foundation

/// What `unet info` reports about an image (the JSON keys are the property names).
public struct ImageSummary: Codable, Sendable {
    public var file: String
    public var version: Int
    public var shape: [Int]
    public var datatype: String
    public var spacing: [Double]
    /// Voxel to world (mm), 4x4, rows.
    public var affine: [[Double]]
    public var orientation: String
    /// Range of the values after scaling (NaN voxels ignored; null when all are NaN).
    public var min: Double?
    public var max: Double?

    /// Reads the file and summarises it.
    public init(path: String) throws {
        let image = try NiftiImage.read(path)
        let h = image.header
        file = path
        version = h.version
        shape = h.shape
        datatype = h.datatype.description
        spacing = h.spacing
        affine = image.affine.rows
        orientation = image.affine.orientation
        var lo = Double.infinity, hi = -Double.infinity
        let slope = h.hasScaling ? h.sclSlope : 1, inter = h.hasScaling ? h.sclInter : 0
        func scan<T>(_ values: [T], _ convert: (T) -> Double) {
            var a = Double.infinity, b = -Double.infinity
            for v in values {
                let d = convert(v)
                if d < a { a = d }
                if d > b { b = d }
            }
            lo = a; hi = b
        }
        switch image.voxels {
        case let .uint8(v): scan(v) { Double($0) }
        case let .int8(v): scan(v) { Double($0) }
        case let .int16(v): scan(v) { Double($0) }
        case let .uint16(v): scan(v) { Double($0) }
        case let .int32(v): scan(v) { Double($0) }
        case let .uint32(v): scan(v) { Double($0) }
        case let .int64(v): scan(v) { Double($0) }
        case let .float32(v): scan(v) { Double($0) }
        case let .float64(v): scan(v) { $0 }
        }
        if lo <= hi {
            // Scaling is monotonic; a negative slope swaps the ends.
            let (x, y) = (lo * slope + inter, hi * slope + inter)
            min = Swift.min(x, y)
            max = Swift.max(x, y)
        }
    }
}

extension VoxelArray {
    /// The same values re-ordered from C order (last axis fastest) to Fortran order (first axis fastest)
    /// for an array of `shape`, or back when `shape` is given reversed.
    public func reversingAxes(shape: [Int]) -> VoxelArray {
        func reorder<T>(_ v: [T]) -> [T] {
            let n = shape.count
            guard n > 1 else { return v }
            // Source strides in C order; destination walks with the first axis fastest.
            var strides = [Int](repeating: 1, count: n)
            for i in stride(from: n - 2, through: 0, by: -1) { strides[i] = strides[i + 1] * shape[i + 1] }
            var out = [T]()
            out.reserveCapacity(v.count)
            var index = [Int](repeating: 0, count: n)
            var offset = 0
            for _ in 0 ..< v.count {
                out.append(v[offset])
                var axis = 0
                while axis < n {
                    index[axis] += 1
                    offset += strides[axis]
                    if index[axis] < shape[axis] { break }
                    offset -= strides[axis] * shape[axis]
                    index[axis] = 0
                    axis += 1
                }
            }
            return out
        }
        switch self {
        case let .uint8(v): return .uint8(reorder(v))
        case let .int8(v): return .int8(reorder(v))
        case let .int16(v): return .int16(reorder(v))
        case let .uint16(v): return .uint16(reorder(v))
        case let .int32(v): return .int32(reorder(v))
        case let .uint32(v): return .uint32(reorder(v))
        case let .int64(v): return .int64(reorder(v))
        case let .float32(v): return .float32(reorder(v))
        case let .float64(v): return .float64(reorder(v))
        }
    }
}

/// Conversions between NIfTI and NumPy files.
///
/// Array layout: a NIfTI image of shape (X, Y, Z[, C]) becomes a `.npy` array of the same shape in Fortran
/// order (x fastest, the order of the file), so `numpy.load` gives the array nibabel's `get_fdata()` gives,
/// indexed [x, y, z(, c)]. Values are float32 after scl_slope/scl_inter. In the other direction any
/// `.npy` (C or Fortran order) is read with its indices taken as NIfTI indices, its dtype kept.
public enum Conversion {
    public static func isNifti(_ path: String) -> Bool { path.hasSuffix(".nii") || path.hasSuffix(".nii.gz") }

    /// Converts `input` to `output` by their extensions (.nii, .nii.gz, .npy). `like` gives a NIfTI file
    /// whose geometry an output NIfTI copies; its spatial shape must match. An existing output is replaced
    /// (atomically) only with `overwrite`.
    public static func convert(input: String, output: String, like: String? = nil, overwrite: Bool = false) throws {
        guard input != output else { throw ImagingError.invalidArgument("input and output are the same file: \(input)") }
        if !overwrite && FileManager.default.fileExists(atPath: output) {
            throw ImagingError.invalidArgument("\(output) exists and is not replaced unless asked to")
        }
        switch (isNifti(input), isNifti(output), output.hasSuffix(".npy")) {
        case (true, false, true):
            let image = try NiftiImage.read(input)
            try Npy.write(NpyArray(shape: image.shape, values: .float32(image.floatValues()), fortranOrder: true), to: output)
        case (false, true, false) where input.hasSuffix(".npy"):
            let array = try Npy.read(input)
            guard (1 ... 5).contains(array.shape.count), array.shape.allSatisfy({ $0 >= 1 }) else {
                throw ImagingError.invalidArgument("\(input): shape \(array.shape) cannot be a NIfTI image (1 to 5 axes, none empty)")
            }
            let values = array.fortranOrder ? array.values : array.values.reversingAxes(shape: array.shape)
            let reference = try like.map { try NiftiImage.readHeader($0) }
            if let reference, let like {
                let spatial = Array(array.shape.prefix(3)), refSpatial = Array(reference.shape.prefix(3))
                guard spatial == refSpatial else {
                    throw ImagingError.invalidArgument("\(input) has spatial shape \(spatial), the reference \(like) has \(refSpatial)")
                }
            }
            try NiftiImage(shape: array.shape, voxels: values, like: reference).write(to: output)
        case (true, true, false):
            var image = try NiftiImage.read(input)
            if let like {
                let reference = try NiftiImage.readHeader(like)
                guard Array(image.shape.prefix(3)) == Array(reference.shape.prefix(3)) else {
                    throw ImagingError.invalidArgument("\(input) has shape \(image.shape), the reference \(like) has \(reference.shape)")
                }
                image.header.copyGeometry(from: reference)
            }
            try image.write(to: output)
        default:
            throw ImagingError.invalidArgument("cannot convert \(input) to \(output): use .nii, .nii.gz or .npy, one NIfTI and one NumPy file (or two NIfTI files)")
        }
    }
}
