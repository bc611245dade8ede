/// Errors of the segmentation pipeline; each names the file or option at fault.
public enum SegmentationError: Error, CustomStringConvertible {
    case invalidArgument(String)
    case invalidFile(String, String)
    /// A training run folder that already holds a run (its config.json).
    case runExists(String)
    /// A training run folder another process is training in (it holds the folder's lock).
    case runInUse(String)
    /// An output that is already there (path, what is there), and the caller did not ask to replace it.
    case outputExists(String, String)
    /// Ground-truth cases without a prediction in a folder (folder, the cases, how many truths there are).
    case missingPredictions(String, [String], Int)

    public var description: String {
        switch self {
        case let .invalidArgument(message): return message
        case let .invalidFile(path, reason): return "\(path): \(reason)"
        case let .runInUse(path): return "\(path) is in use: another process is training there (it holds \(path)/.lock); wait for it to end or stop it"
        case let .runExists(path): return "\(path) holds a training run already; resume it or train into another folder"
        case let .outputExists(path, what): return "\(path): \(what); it is not replaced unless asked to"
        case let .missingPredictions(folder, ids, total):
            return "\(folder): no prediction for \(ids.count) of \(total) ground-truth cases (\(ids.prefix(10).joined(separator: ", "))\(ids.count > 10 ? ", ..." : "")); a mean over the others alone would not be the dataset's score"
        }
    }
}
