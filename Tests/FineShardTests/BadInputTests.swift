import Foundation
import Testing

@testable import FineShard

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// One case of the broken-input corpus `fixtures/bad/` (made by `scripts/make_bad_fixtures.py`):
/// a file or folder, and a substring its error message must contain.
struct BadCase: Sendable, CustomTestStringConvertible {
    let name: String
    let expected: String
    var path: String { BadCase.folder + "/" + name }
    var testDescription: String { name }

    static let folder = Environment.root + "/fixtures/bad"

    /// Every case of `fixtures/bad/EXPECTED.json`, in name order.
    static let all: [BadCase] = {
        guard let data = FileManager.default.contents(atPath: folder + "/EXPECTED.json"),
            let map = try? JSONSerialization.jsonObject(with: data) as? [String: String]
        else { return [] }
        return map.keys.sorted().map { BadCase(name: $0, expected: map[$0]!) }
    }()

    /// The names an error about this case may use: the case itself and, for a folder, every
    /// file and folder inside it (an index error names `model.safetensors.index.json`, a shard
    /// error the shard).
    var fileNames: [String] {
        var names = [name]
        if let inside = FileManager.default.enumerator(atPath: path) {
            for case let relative as String in inside { names.append((relative as NSString).lastPathComponent) }
        }
        return names
    }
}

/// Hostile and broken inputs (issue 7, parts 1 and 2): every case must give exit code 2 and a
/// message that names the file and the defect, without a crash or a hang.
@Suite struct BadInputTests {
    @Test("The corpus holds at least 30 cases, and every case in EXPECTED.json exists")
    func corpusIsComplete() throws {
        #expect(BadCase.all.count >= 30)
        for c in BadCase.all {
            #expect(FileManager.default.fileExists(atPath: c.path), "\(c.name) is listed but missing")
        }
    }

    @Test("A broken input exits with code 2 and a message naming its file and its defect", arguments: BadCase.all)
    func brokenInputIsRefused(_ c: BadCase) throws {
        let result = try run(fineshardBinary, ["inspect", c.path])
        // A crash ends the process by a signal (SIGSEGV, SIGILL, SIGTRAP, SIGABRT), never with 2.
        #expect(result.status == 2, "exit \(result.status); stderr: \(result.stderr)")
        #expect(!result.stderr.contains("Fatal error") && !result.stderr.contains("Stack dump"), "\(result.stderr)")
        #expect(result.stderr.hasPrefix("error: "), "\(result.stderr)")
        #expect(result.stderr.contains(c.expected), "expected '\(c.expected)' in: \(result.stderr)")
        #expect(c.fileNames.contains { result.stderr.contains($0) }, "no file of the case named in: \(result.stderr)")
        #expect(result.stdout.isEmpty, "a refused input printed a report: \(result.stdout)")
    }

    @Test(
        "A zstd chunk of garbage, or one that decodes to the wrong size, opens, then fails its read naming the chunk and zstd's diagnosis",
        arguments: [
            "h5_zstd_garbage_chunk.h5", "h5_zstd_chunk_too_small.h5", "h5_zstd_chunk_too_large.h5",
            "h5_zstd_chunk_declares_1tib.h5",
        ])
    func brokenZstdChunkFailsTheRead(_ name: String) throws {
        let path = BadCase.folder + "/" + name
        try #require(FileManager.default.fileExists(atPath: path))
        // Only the chunk is broken, so the headers are fine and inspect succeeds.
        let inspect = try run(fineshardBinary, ["inspect", path])
        #expect(inspect.status == 0, "\(inspect.stderr)")
        let checkpoint = try Checkpoint.open(path)
        do {
            _ = try readAll(checkpoint, "w")
            Issue.record("reading \(name) succeeded: a corrupt chunk was accepted as data")
        } catch let error as CheckpointError {
            guard case .damagedChunk(let file, let dataset, let chunk, _, let reason) = error else {
                Issue.record("expected a damaged chunk, got \(error)")
                return
            }
            #expect(file == name && dataset == "w" && chunk == 0)
            #expect(reason.hasPrefix("zstd"), "no zstd diagnosis in: \(error)")
            #expect(error.exitCode == 2)
        }
    }

    @Test("A FIFO in place of a checkpoint file is refused without blocking on it")
    func fifoIsRefusedWithoutHanging() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let fifo = dir.file("model.safetensors")
        try #require(mkfifo(fifo, 0o600) == 0)
        for target in [fifo, dir.path] {
            let result = try runWithDeadline(fineshardBinary, ["inspect", target], seconds: 10)
            #expect(!result.timedOut, "inspect \(target) blocked on the FIFO (killed after 10 s)")
            #expect(result.timedOut || result.status == 2, "exit \(result.status); stderr: \(result.stderr)")
        }
    }
}

/// Like ``run(_:_:environment:)``, but kills the process (SIGKILL) if it has not finished after
/// `seconds`, so that a hang fails the test instead of stalling the suite.
func runWithDeadline(
    _ executable: String, _ arguments: [String], seconds: Double
) throws
    -> (status: Int32, stderr: String, timedOut: Bool)
{
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let err = Pipe()
    process.standardOutput = FileHandle.nullDevice
    process.standardError = err
    let done = DispatchSemaphore(value: 0)
    process.terminationHandler = { _ in done.signal() }
    try process.run()
    var timedOut = false
    if done.wait(timeout: .now() + seconds) == .timedOut {
        timedOut = true
        kill(process.processIdentifier, SIGKILL)
        done.wait()
    }
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    return (process.terminationStatus, String(decoding: errData, as: UTF8.self), timedOut)
}
