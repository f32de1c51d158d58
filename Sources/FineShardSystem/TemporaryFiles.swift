import Dispatch
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The temporary files fineshard has open, so that SIGTERM and SIGINT can remove them before
/// the process exits (docs/SPEC.md §7): a cancelled run leaves finished files and nothing half-written.
public final class TemporaryFiles: Sendable {
    public static let shared = TemporaryFiles()
    private let paths = Mutex<Set<String>>([])

    public func register(_ path: String) { _ = paths.withLock { $0.insert(path) } }
    public func unregister(_ path: String) { _ = paths.withLock { $0.remove(path) } }

    /// Removes every registered temporary file.
    public func removeAll() {
        let all = paths.withLock { p in
            defer { p.removeAll() }
            return p
        }
        for path in all { unlink(path) }
    }

    nonisolated(unsafe) private static var sources: [any DispatchSourceSignal] = []

    /// Installs SIGINT and SIGTERM handlers that remove the temporary files and exit with
    /// 128 + the signal number (130, 143).
    public static func removeOnSignals() {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: DispatchQueue(label: "fineshard.signal"))
            source.setEventHandler {
                shared.removeAll()
                _exit(128 + sig)
            }
            source.resume()
            sources.append(source)
        }
    }
}
