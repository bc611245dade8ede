/// Everything that can go wrong reading or writing medical images and datasets.
/// Every case names the file, so a message can be shown to the user as it is.
public enum ImagingError: Error, CustomStringConvertible, Equatable {
    /// The file could not be opened, read or written (OS error text in `reason`).
    case io(file: String, reason: String)
    /// The bytes are not a file of the expected kind (`reason` says what was found).
    case notRecognized(file: String, reason: String)
    /// A header field holds a value that is invalid or unsupported.
    case invalidField(file: String, field: String, reason: String)
    /// The file ends before the data its header announces.
    case truncated(file: String, expectedBytes: Int, availableBytes: Int)
    /// The gzip stream is damaged.
    case corruptCompression(file: String, reason: String)
    /// A dataset folder is inconsistent; one entry per problem found.
    case invalidDataset(folder: String, problems: [String])
    /// Arguments that do not fit together (shapes, types, options).
    case invalidArgument(String)

    public var description: String {
        switch self {
        case let .io(file, reason): return "\(file): \(reason)"
        case let .notRecognized(file, reason): return "\(file): not a recognised file: \(reason)"
        case let .invalidField(file, field, reason): return "\(file): header field \(field): \(reason)"
        case let .truncated(file, expected, available):
            return "\(file): truncated: header announces \(expected) bytes of data, the file holds \(available)"
        case let .corruptCompression(file, reason): return "\(file): corrupt gzip data: \(reason)"
        case let .invalidDataset(folder, problems):
            return "dataset \(folder) has \(problems.count) problem(s):\n" + problems.map { "  - \($0)" }.joined(separator: "\n")
        case let .invalidArgument(message): return message
        }
    }
}
