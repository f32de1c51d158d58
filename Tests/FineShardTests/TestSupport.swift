import Foundation
import Testing

@testable import FineShard

/// A fresh temporary folder for one test; remove it with `defer { dir.remove() }`.
struct TemporaryFolder {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "fineshard-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    func write(_ name: String, _ bytes: [UInt8]) throws {
        let full = file(name)
        try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(bytes).write(to: URL(fileURLWithPath: full))
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// A safetensors file from handwritten parts: the header JSON, then `dataSize` bytes of data.
func safetensorsBytes(header: String, dataSize: Int, declaredLength: UInt64? = nil) -> [UInt8] {
    let json = Array(header.utf8)
    var out = [UInt8]()
    withUnsafeBytes(of: (declaredLength ?? UInt64(json.count)).littleEndian) { out.append(contentsOf: $0) }
    out += json
    out += (0..<dataSize).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
    return out
}

/// A deterministic generator (SplitMix64) for fixtures built in code.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var g = SeededGenerator(seed: seed)
    return (0..<count).map { _ in UInt8.random(in: 0...255, using: &g) }
}

/// Writes a safetensors file with fineshard's writer; returns what it wrote per tensor.
@discardableResult
func writeSafetensors(_ path: String, _ tensors: [(TensorSpec, [UInt8])], metadata: [String: String]? = nil) throws -> WrittenFile {
    let writer = try SafetensorsWriter(path: path, tensors: tensors.map(\.0), metadata: metadata, bufferSize: 64)
    let data = Dictionary(uniqueKeysWithValues: tensors.map { ($0.0.name, $0.1) })
    for spec in writer.order {
        let bytes = data[spec.name]!
        // Append in uneven pieces to exercise the streaming path.
        var start = 0
        var step = 1
        while start < bytes.count {
            let end = min(bytes.count, start + step)
            try bytes[start..<end].withUnsafeBytes { try writer.append($0) }
            start = end
            step = step * 3 + 1
        }
    }
    return try writer.finish()
}

/// Reads a whole tensor through the checkpoint's reader.
func readAll(_ checkpoint: Checkpoint, _ name: String) throws -> [UInt8] {
    let t = try checkpoint.tensor(name)
    var out = [UInt8](repeating: 0, count: t.byteCount)
    try out.withUnsafeMutableBytes { try checkpoint.read(t, region: Region(whole: t.shape), into: $0) }
    return out
}

enum Environment {
    static let python = ProcessInfo.processInfo.environment["FINESHARD_PYTHON"]
    static let minilm = ProcessInfo.processInfo.environment["FINESHARD_MINILM"]
    /// The repository root (tests run from it under `swift test`).
    static let root: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()
}

/// Runs a program; returns its exit status, stdout and stderr.
@discardableResult
func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, stdout: String, stderr: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    env.merge(environment) { $1 }
    process.environment = env
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
}

/// Runs a script of `scripts/interop` with the venv's Python and decodes its JSON output.
func runPython(_ script: String, _ arguments: [String]) throws -> [String: Any] {
    let result = try run(Environment.python!, [Environment.root + "/scripts/interop/" + script] + arguments)
    guard result.status == 0 else { throw TestFailure("\(script) failed: \(result.stderr)") }
    return try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// The built `fineshard` executable, next to the test bundle.
let fineshardBinary: String = {
    var url = Bundle.main.bundleURL
    for candidate in [url.appendingPathComponent("fineshard"), url.deletingLastPathComponent().appendingPathComponent("fineshard")] {
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate.path }
    }
    url = URL(fileURLWithPath: Environment.root + "/.build/debug/fineshard")
    return url.path
}()
