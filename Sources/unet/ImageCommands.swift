import ArgumentParser
import Foundation
import MedicalImaging

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a NIfTI image's shape, datatype, spacing, affine, orientation and value range."
    )

    @Argument(help: "A .nii or .nii.gz file.") var file: String
    @Flag(help: "Print one JSON object (keys: shape, datatype, spacing, affine, orientation, min, max, file, version).")
    var json = false

    func run() throws {
        let s = try ImageSummary(path: file)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(s), as: UTF8.self))
            return
        }
        func number(_ v: Double?) -> String { v.map { String(format: "%g", $0) } ?? "n/a" }
        print("file         \(s.file)")
        print("format       NIfTI-\(s.version)")
        print("shape        \(s.shape.map(String.init).joined(separator: " x "))")
        print("datatype     \(s.datatype)")
        print("spacing      \(s.spacing.map { String(format: "%g", $0) }.joined(separator: " x ")) mm")
        print("orientation  \(s.orientation)")
        print("range        \(number(s.min)) ... \(number(s.max))")
        print("affine")
        for row in s.affine { print("  " + row.map { String(format: "%10.4f", $0) }.joined(separator: " ")) }
    }
}

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert NIfTI <-> NumPy .npy (or NIfTI <-> NIfTI).",
        discussion: """
        NIfTI -> .npy writes float32 values after scaling, shape (X, Y, Z[, C]) in Fortran order: numpy.load \
        gives the same array as nibabel's get_fdata(). .npy -> NIfTI takes the array's indices as NIfTI indices \
        (either memory order), keeps its dtype, and copies the geometry of --like.
        """
    )

    @Argument(help: "Input file (.nii, .nii.gz or .npy).") var input: String
    @Argument(help: .hidden) var positionalOutput: String?
    @Option(name: .shortAndLong, help: "Output file (.nii, .nii.gz or .npy).") var output: String?
    @Option(help: "A NIfTI file whose geometry (affine, spacing, codes) the NIfTI output copies.") var like: String?
    @Flag(help: "Replace an existing output.") var overwrite = false

    func validate() throws {
        let output = try OutputOption.required(output, legacy: positionalOutput)
        if !overwrite { try refuseExisting(output) }
    }

    func run() throws {
        let output = try OutputOption.required(output, legacy: positionalOutput)
        try Conversion.convert(input: input, output: output, like: like, overwrite: overwrite)
        print("wrote \(output)")
    }
}
