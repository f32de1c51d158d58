import FineShardSystem

/// The safetensors header rules of docs/SPEC.md §3, one case per rule, so tests and callers can tell them
/// apart without parsing messages.
public enum HeaderRule: String, Sendable, CaseIterable {
    case fileTooSmall, headerTooLarge, headerPastEnd, notUTF8, notJSON, notObject, tooManyTensors
    case duplicateName, missingField, unknownField, unknownDType, badShape, shapeOverflow
    case badOffsets, offsetsReversed, sizeMismatch, outsideDataArea, overlap, hole, trailingBytes
    case badMetadata
}

/// Everything that can be wrong with a checkpoint on disk, or with reading it.
public enum CheckpointError: FineShardError, Equatable {
    /// A file that should be there is not, or cannot be opened.
    case unreadable(file: String, reason: String)
    /// The path is not a checkpoint fineshard knows (no safetensors, no HDF5).
    case notACheckpoint(path: String, reason: String)
    /// A safetensors header broke a rule; `message` names the tensor and the numbers involved.
    case invalidHeader(file: String, rule: HeaderRule, message: String)
    /// `model.safetensors.index.json` (or the set of files) is inconsistent.
    case invalidIndex(file: String, message: String)
    /// An HDF5 file could not be read or is not usable; `stack` is libhdf5's own diagnosis.
    case hdf5(file: String, message: String, stack: String)
    /// A chunk of an HDF5 dataset that does not decode: a zstd frame whose checksum fails, or
    /// that is not a frame, or decodes to the wrong size. `chunk` is its index in the dataset's
    /// chunk grid (row-major), `offset` the element coordinates of its first element.
    case damagedChunk(file: String, dataset: String, chunk: Int, offset: [Int], reason: String)
    /// A tensor was asked for that the checkpoint lacks, or a region outside its shape.
    case noSuchTensor(name: String)
    /// A source file changed between planning and reading (size or contents).
    case sourceChanged(file: String, message: String)
    /// A read or write failed while running (exit 3).
    case io(file: String, operation: String, reason: String)

    public var exitCode: Int32 {
        switch self {
        case .io, .sourceChanged: 3
        default: 2
        }
    }

    public var description: String {
        switch self {
        case .unreadable(let file, let reason): "\(file): \(reason)"
        case .notACheckpoint(let path, let reason): "\(path): not a checkpoint: \(reason)"
        case .invalidHeader(let file, let rule, let message): "\(file): invalid safetensors header (\(rule.rawValue)): \(message)"
        case .invalidIndex(let file, let message): "\(file): invalid index: \(message)"
        case .hdf5(let file, let message, let stack):
            stack.isEmpty ? "\(file): \(message)" : "\(file): \(message) (HDF5: \(stack))"
        case .damagedChunk(let file, let dataset, let chunk, let offset, let reason):
            "\(file): dataset '/\(dataset)', chunk \(chunk) at offset \(offset) is damaged: \(reason)"
        case .noSuchTensor(let name): "no tensor named '\(name)' in the checkpoint"
        case .sourceChanged(let file, let message): "\(file): source changed while running: \(message)"
        case .io(let file, let operation, let reason): "\(file): \(operation) failed: \(reason)"
        }
    }
}
