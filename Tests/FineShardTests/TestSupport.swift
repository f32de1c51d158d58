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
func run(
    _ executable: String, _ arguments: [String], environment: [String: String] = [:]
) throws -> (status: Int32, stdout: String, stderr: String) {
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

/// A synthetic Llama-family checkpoint built in code: config.json plus one safetensors file of
/// seeded bf16 weights. `biases` adds Qwen2-style q/k/v biases; `tied` drops lm_head.
func makeLlama(
    in dir: String, heads: Int = 8, kvHeads: Int = 2, headDim: Int = 8, hidden: Int = 64, intermediate: Int = 96,
    vocab: Int = 130, layers: Int = 2, tied: Bool = false, biases: Bool = false, seed: UInt64 = 1
) throws {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    var specs: [TensorSpec] = [TensorSpec(name: "model.embed_tokens.weight", dtype: .bf16, shape: [vocab, hidden])]
    if !tied { specs.append(TensorSpec(name: "lm_head.weight", dtype: .bf16, shape: [vocab, hidden])) }
    specs.append(TensorSpec(name: "model.norm.weight", dtype: .bf16, shape: [hidden]))
    for l in 0..<layers {
        let p = "model.layers.\(l)."
        specs += [
            TensorSpec(name: p + "input_layernorm.weight", dtype: .bf16, shape: [hidden]),
            TensorSpec(name: p + "post_attention_layernorm.weight", dtype: .bf16, shape: [hidden]),
            TensorSpec(name: p + "self_attn.q_proj.weight", dtype: .bf16, shape: [heads * headDim, hidden]),
            TensorSpec(name: p + "self_attn.k_proj.weight", dtype: .bf16, shape: [kvHeads * headDim, hidden]),
            TensorSpec(name: p + "self_attn.v_proj.weight", dtype: .bf16, shape: [kvHeads * headDim, hidden]),
            TensorSpec(name: p + "self_attn.o_proj.weight", dtype: .bf16, shape: [hidden, heads * headDim]),
            TensorSpec(name: p + "mlp.gate_proj.weight", dtype: .bf16, shape: [intermediate, hidden]),
            TensorSpec(name: p + "mlp.up_proj.weight", dtype: .bf16, shape: [intermediate, hidden]),
            TensorSpec(name: p + "mlp.down_proj.weight", dtype: .bf16, shape: [hidden, intermediate]),
        ]
        if biases {
            specs += [
                TensorSpec(name: p + "self_attn.q_proj.bias", dtype: .bf16, shape: [heads * headDim]),
                TensorSpec(name: p + "self_attn.k_proj.bias", dtype: .bf16, shape: [kvHeads * headDim]),
                TensorSpec(name: p + "self_attn.v_proj.bias", dtype: .bf16, shape: [kvHeads * headDim]),
            ]
        }
    }
    // Small normal-ish bf16 values: the top half of floats near N(0, 0.05), norms near 1.
    var g = SeededGenerator(seed: seed)
    let tensors = specs.map { spec -> (TensorSpec, [UInt8]) in
        let count = spec.shape.reduce(1, *)
        var bytes = [UInt8]()
        bytes.reserveCapacity(count * 2)
        for _ in 0..<count {
            let value: Float =
                spec.name.hasSuffix("norm.weight") ? 1 + Float.random(in: -0.1...0.1, using: &g) : Float.random(in: -0.08...0.08, using: &g)
            let bits = UInt16(value.bitPattern >> 16)
            bytes.append(UInt8(bits & 0xFF))
            bytes.append(UInt8(bits >> 8))
        }
        return (spec, bytes)
    }
    try writeSafetensors((dir as NSString).appendingPathComponent("model.safetensors"), tensors, metadata: ["format": "pt"])
    let config: [String: Any] = [
        "architectures": [biases ? "Qwen2ForCausalLM" : "LlamaForCausalLM"], "model_type": biases ? "qwen2" : "llama",
        "hidden_size": hidden, "intermediate_size": intermediate, "num_attention_heads": heads, "num_key_value_heads": kvHeads,
        "head_dim": headDim, "num_hidden_layers": layers, "vocab_size": vocab, "tie_word_embeddings": tied,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_act": "silu", "max_position_embeddings": 64,
    ]
    try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys, .prettyPrinted])
        .write(to: URL(fileURLWithPath: (dir as NSString).appendingPathComponent("config.json")))
}

/// The fine-grained config JSON for `--additional-config`.
func finegrained(embedding: Int = 0, lmHead: Int = 0, oProj: Int = 0, mlp: Int = 0) -> String {
    #"{"finegrained_tp_config": {"embedding_tensor_parallel_size": \#(embedding), "lmhead_tensor_parallel_size": \#(lmHead), "oproj_tensor_parallel_size": \#(oProj), "mlp_tensor_parallel_size": \#(mlp)}}"#
}

/// Every regular file under `dir` with its contents, for byte-identity checks.
func folderContents(_ dir: String) throws -> [String: Data] {
    var out: [String: Data] = [:]
    let walker = FileManager.default.enumerator(atPath: dir)!
    while let item = walker.nextObject() as? String {
        var isDirectory: ObjCBool = false
        let full = (dir as NSString).appendingPathComponent(item)
        if FileManager.default.fileExists(atPath: full, isDirectory: &isDirectory), !isDirectory.boolValue {
            out[item] = try Data(contentsOf: URL(fileURLWithPath: full))
        }
    }
    return out
}
