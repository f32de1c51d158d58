import Foundation
import Synchronization

/// Progress on stderr: a bar redrawn in place on a terminal, a plain line every few seconds
/// otherwise, nothing when quiet.
final class ProgressDisplay: Sendable {
    private let quiet: Bool
    private let terminal = isatty(STDERR_FILENO) == 1
    private let start = Date()
    private let last: Mutex<Date>

    init(quiet: Bool) {
        self.quiet = quiet
        last = Mutex(terminal ? .distantPast : start)
    }

    func update(done: Int, total: Int) {
        guard !quiet, total > 0 else { return }
        let now = Date()
        let interval = terminal ? 0.1 : 5
        let due: Bool = last.withLock {
            guard now.timeIntervalSince($0) >= interval || done == total else { return false }
            $0 = now
            return true
        }
        guard due else { return }
        let elapsed = now.timeIntervalSince(start)
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let eta = rate > 0 ? Double(total - done) / rate : 0
        let fraction = Double(done) / Double(total)
        let text = "\(TextReport.bytes(done)) / \(TextReport.bytes(total)), \(TextReport.bytes(Int(rate)))/s, ETA \(Int(eta)) s"
        if terminal {
            let width = 30
            let filled = Int(fraction * Double(width))
            let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
            FileHandle.standardError.write(Data("\r[\(bar)] \(Int(fraction * 100))% \(text)\u{1B}[K".utf8))
        } else {
            FileHandle.standardError.write(Data("progress: \(Int(fraction * 100))% \(text)\n".utf8))
        }
    }

    func finish() {
        if !quiet && terminal { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
