/// Errors of the segmentation pipeline; each names the file or option at fault.
public enum SegmentationError: Error, CustomStringConvertible {
    case invalidArgument(String)
    case invalidFile(String, String)

    public var description: String {
        switch self {
        case let .invalidArgument(message): return message
        case let .invalidFile(path, reason): return "\(path): \(reason)"
        }
    }
}
