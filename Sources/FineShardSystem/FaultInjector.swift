import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The test-only fault hook of docs/SPEC.md §7. `FINESHARD_FAULT=stage:count:action` makes the process fail
/// at a deterministic point: at the `count`-th event of `stage` it either kills itself with SIGKILL
/// (`kill`), sends itself SIGTERM as a scheduler's cancel would (`term`) or SIGINT as a user's
/// Ctrl-C would (`int`), or fails that I/O call
/// with ENOSPC (`enospc`). Ignored unless the variable is set.
///
/// Stages: `write` (a pwrite call), `piece` (a plan piece written by the executor), `file`
/// (an output file completed, before its rename).
public final class FaultInjector: Sendable {
    public enum Stage: String, Sendable { case write, piece, file }
    package enum Action: String { case kill, term, int, enospc }

    public static let shared = FaultInjector(spec: getenv("FINESHARD_FAULT").map { String(cString: $0) })

    private let stage: Stage?
    private let count: Int
    private let action: Action
    private let seen = Atomic<Int>(0)

    package init(spec: String?) {
        let parts = spec?.split(separator: ":").map(String.init) ?? []
        if parts.count == 3, let stage = Stage(rawValue: parts[0]), let count = Int(parts[1]),
            let action = Action(rawValue: parts[2])
        {
            (self.stage, self.count, self.action) = (stage, count, action)
        } else {
            (self.stage, self.count, self.action) = (nil, 0, .kill)
        }
    }

    /// Counts one event of `stage`; fails or dies if it is the one the hook names.
    public func check(_ stage: Stage, path: String) throws {
        guard stage == self.stage else { return }
        let n = seen.add(1, ordering: .relaxed).newValue
        guard n == count else { return }
        switch action {
        case .kill: kill(getpid(), SIGKILL)
        case .term, .int:
            kill(getpid(), action == .term ? SIGTERM : SIGINT)
            // The signal handler removes temporary files and exits; wait for it here.
            while true { sleep(1) }
        case .enospc:
            throw SystemError.io(file: path, operation: "write", reason: String(cString: strerror(ENOSPC)))
        }
    }
}
