/// An error of fineshard's library, with the process exit code docs/SPEC.md §2 gives it.
public protocol FineShardError: Error, CustomStringConvertible {
    /// 1: verification found a difference; 2: bad input or configuration; 3: I/O failure mid-run.
    var exitCode: Int32 { get }
}

/// What a system call on a file can report: the file, the operation and the C library's reason.
public enum SystemError: FineShardError, Equatable {
    /// A file that should be there is not, or cannot be opened for reading (bad input).
    case unreadable(file: String, reason: String)
    /// A file changed underneath a run: it is gone, shorter than expected or replaced.
    case sourceChanged(file: String, message: String)
    /// A read, write, rename or sync failed while running (exit 3).
    case io(file: String, operation: String, reason: String)

    public var exitCode: Int32 {
        switch self {
        case .unreadable: 2
        case .io, .sourceChanged: 3
        }
    }

    public var description: String {
        switch self {
        case .unreadable(let file, let reason): "\(file): \(reason)"
        case .sourceChanged(let file, let message): "\(file): source changed while running: \(message)"
        case .io(let file, let operation, let reason): "\(file): \(operation) failed: \(reason)"
        }
    }
}
