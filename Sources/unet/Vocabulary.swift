import ArgumentParser
import Foundation
import MedicalImaging
import NeuralNet
import Segmentation

// The words every subcommand shares: typed option values (their values listed in --help), the output option,
// and how library errors become messages that name the flag to change.

/// `--preset`: the recipe's networks.
enum Preset: String, CaseIterable, ExpressibleByArgument {
    case composer2D = "composer-2d"
    case nvidia3D = "nvidia-3d"
    var config: UNetConfig { self == .composer2D ? .composer2D : .nvidia3D }
}

/// `--schedule`: the learning-rate schedules.
enum ScheduleName: String, CaseIterable, ExpressibleByArgument {
    case constant, cosine, poly
    /// Cosine: warm restarts every 50 epochs; poly: power 0.9 over the run's epochs.
    func schedule(epochs: Int) -> LearningRateSchedule {
        switch self {
        case .constant: return .constant
        case .cosine: return .cosineWarmRestarts(period: 50, multiplier: 1, minimum: 0)
        case .poly: return .polynomial(total: epochs, power: 0.9, end: 0)
        }
    }
}

/// `--labels` of `evaluate`: a convention, or read it from the files.
enum LabelsChoice: String, CaseIterable, ExpressibleByArgument {
    case auto, decathlon, brats
    var convention: LabelConvention? { LabelConvention(rawValue: rawValue) }
}

/// `--datatype` of `synth`.
enum PhantomDatatype: String, CaseIterable, ExpressibleByArgument {
    case float32, int16
    var nifti: NiftiDatatype { self == .float32 ? .float32 : .int16 }
}

extension Optimizer.Kind: ExpressibleByArgument {}

extension LabelConvention: ExpressibleByArgument {
    public static var allValueStrings: [String] { ["decathlon", "brats"] }
}

/// The output of a command: `-o/--output PATH`; `--out`, the old spelling of some commands, still works
/// (hidden from --help).
enum OutputOption {
    /// The path given, or nil; refuses both spellings with different values.
    static func resolve(_ output: String?, legacy: String?) throws -> String? {
        if let output, let legacy, output != legacy {
            throw ValidationError("-o/--output given twice (\(output), and \(legacy) as --out, its old spelling)")
        }
        return output ?? legacy
    }

    static func required(_ output: String?, legacy: String?) throws -> String {
        guard let path = try resolve(output, legacy: legacy) else { throw ValidationError("Missing expected argument '-o/--output <output>'") }
        return path
    }
}

/// Library errors in the command line's words: the library says what is wrong with the data; here the flag to
/// change is added.
func explained(_ error: Error) -> Error {
    switch error {
    case let SegmentationError.runExists(folder):
        return RuntimeError("\(folder) holds a training run already: pass --resume to continue it, or choose another -o/--output")
    case let SegmentationError.outputExists(path, what):
        return RuntimeError("\(path): \(what); pass --overwrite to replace it, or choose another -o/--output")
    case SegmentationError.missingPredictions:
        return RuntimeError("\(error); predict them, or pass --allow-missing to score the others (the summary then lists the missing)")
    default:
        return error
    }
}

/// A benchmark's `--json` output: one object on one line, keys sorted.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}
