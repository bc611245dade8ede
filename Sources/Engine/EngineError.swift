import CDNNL

/// Errors of the tensor engine. Each names the operation and what was wrong.
public enum EngineError: Error, CustomStringConvertible, Equatable {
    case shapeMismatch(op: String, expected: String, got: String)
    case layoutMismatch(op: String, expected: Layout, got: Layout)
    case invalidArgument(op: String, message: String)
    case allocationFailed(bytes: Int)
    /// oneDNN refused or failed; `message` is its explanation.
    case backend(op: String, message: String)
    /// This CPU lacks an instruction set the request needs (e.g. bf16 without AVX512_BF16).
    case unsupportedByCPU(feature: String, message: String)

    public var description: String {
        switch self {
        case let .shapeMismatch(op, expected, got): "\(op): expected \(expected), got \(got)"
        case let .layoutMismatch(op, expected, got): "\(op): expected \(expected.rawValue) layout, got \(got.rawValue)"
        case let .invalidArgument(op, message): "\(op): \(message)"
        case let .allocationFailed(bytes): "could not allocate \(bytes) bytes"
        case let .backend(op, message): "\(op): oneDNN failed: \(message)"
        case let .unsupportedByCPU(_, message): message
        }
    }
}

/// Turns a CDNNL status into a thrown `EngineError.backend`.
@inline(__always)
func check(_ status: Int32, _ op: @autoclosure () -> String) throws {
    if status != 0 { throw EngineError.backend(op: op(), message: String(cString: cdnnl_last_error())) }
}
