import Crypto
import Foundation
import Testing

@testable import FineShard
@testable import FineShardVerification

/// `forward-check` (issue 6): the dense pass against an independent numpy reference
/// (`scripts/interop/forward_ref.py`), the sharded pass against the dense one for the layouts the
/// `shard` tests use, and teeth — shards whose bytes are all present but whose function is wrong
/// must fail, naming the rank and the size of the error.
@Suite("forward-check")
struct ForwardCheckTests {
    static let fixture = Environment.root + "/fixtures/tiny-llama"
    static let hasPython = Environment.python != nil
    static let hasMiniLM = Environment.python != nil && Environment.minilm != nil

    // MARK: - Helpers

    func shard(_ source: String, _ out: String, _ arguments: [String]) throws {
        let result = try run(fineshardBinary, ["shard", source, "-o", out, "--quiet"] + arguments)
        guard result.status == 0 else { throw TestFailure("shard \(arguments) failed (\(result.status)): \(result.stderr)") }
    }

    /// Runs `forward-check --json`; returns the exit status, the report and stderr.
    func forwardCheck(_ out: String, source: String, _ arguments: [String] = []) throws -> (Int32, ForwardCheckReport?, String) {
        let result = try run(fineshardBinary, ["forward-check", out, "--source", source, "--json"] + arguments)
        return (result.status, try? JSONDecoder().decode(ForwardCheckReport.self, from: Data(result.stdout.utf8)), result.stderr)
    }

    /// Runs `forward-check` (text); returns the exit status and stdout + stderr.
    func forwardCheckText(_ out: String, source: String, _ arguments: [String] = []) throws -> (Int32, String) {
        let result = try run(fineshardBinary, ["forward-check", out, "--source", source] + arguments)
        return (result.status, result.stdout + result.stderr)
    }

    /// The data area of tensor `tensor` in the safetensors file `path`: (absolute offset, byte count).
    func location(_ path: String, _ tensor: String) throws -> (start: Int, count: Int) {
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        let length = try #require(try handle.read(upToCount: 8)).withUnsafeBytes {
            Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)))
        }
        let headerBytes = try #require(try handle.read(upToCount: length))
        let header = try #require(try JSONSerialization.jsonObject(with: headerBytes) as? [String: Any])
        let entry = try #require(header[tensor] as? [String: Any], "no tensor \(tensor) in \(path)")
        let offsets = try #require(entry["data_offsets"] as? [Int])
        return (8 + length + offsets[0], offsets[1] - offsets[0])
    }

    func tensorBytes(_ out: String, _ file: String, _ tensor: String) throws -> [UInt8] {
        let path = (out as NSString).appendingPathComponent(file)
        let (start, count) = try location(path, tensor)
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(start))
        return Array(try handle.read(upToCount: count) ?? Data())
    }

    /// Overwrites tensor `tensor` of `OUT/file` in place with `transform` of its bytes (same size), and
    /// records the file's and the tensor's new SHA-256 in the manifest, so that only the numbers can
    /// catch the change (forward-check checks every tensor it reads against its hash first).
    func alter(_ out: String, _ file: String, _ tensor: String, _ transform: ([UInt8]) throws -> [UInt8]) throws {
        defer { try? recordHashes(out, file, tensor) }
        let path = (out as NSString).appendingPathComponent(file)
        let (start, _) = try location(path, tensor)
        let old = try tensorBytes(out, file, tensor)
        let new = try transform(old)
        guard new.count == old.count, new != old else { throw TestFailure("a mutation must keep the size and change something") }
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        try handle.seek(toOffset: UInt64(start))
        try handle.write(contentsOf: new)
        try handle.close()
    }

    func file(_ rank: Int) -> String { "model-rank-\(rank)-part-0.safetensors" }

    /// Patches `OUT/manifest.json`'s record of `file`: its size, SHA-256 and `tensor`'s SHA-256, as they are now.
    func recordHashes(_ out: String, _ file: String, _ tensor: String) throws {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: (out as NSString).appendingPathComponent(file)))
        let tensorHash = SHA256.hash(data: try tensorBytes(out, file, tensor)).hexString
        let url = URL(fileURLWithPath: (out as NSString).appendingPathComponent("manifest.json"))
        var manifest = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        var ranks = try #require(manifest["ranks"] as? [[String: Any]])
        for i in ranks.indices {
            var files = try #require(ranks[i]["files"] as? [[String: Any]])
            for j in files.indices where files[j]["name"] as? String == file {
                var hashes = files[j]["tensor_sha256"] as? [String: String] ?? [:]
                hashes[tensor] = tensorHash
                (files[j]["tensor_sha256"], files[j]["sha256"], files[j]["bytes"]) = (
                    hashes, SHA256.hash(data: bytes).hexString, bytes.count
                )
            }
            ranks[i]["files"] = files
        }
        manifest["ranks"] = ranks
        try JSONSerialization.data(withJSONObject: manifest, options: [.sortedKeys]).write(to: url)
    }

    /// Expects exit 1 with a MISMATCH line for exactly `ranks`, each giving the relative error (≥ 1e-3).
    func expectCaught(
        _ out: String, source: String, ranks: Set<Int>, _ arguments: [String] = [], sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let (status, text) = try forwardCheckText(out, source: source, arguments)
        #expect(status == 1, "\(text)", sourceLocation: sourceLocation)
        let (_, report, _) = try forwardCheck(out, source: source, arguments)
        let r = try #require(report, sourceLocation: sourceLocation)
        #expect(Set(r.ranks.filter { !$0.passed }.map(\.rank)) == ranks, "\(r.failures)", sourceLocation: sourceLocation)
        for rank in ranks {
            let line = text.split(separator: "\n").first { $0.hasPrefix("MISMATCH: rank \(rank) (") }
            #expect(line?.contains("max relative error ") == true, "\(text)", sourceLocation: sourceLocation)
            let result = try #require(r.ranks.first { $0.rank == rank }, sourceLocation: sourceLocation)
            #expect(result.maxRelError > 1e-3, sourceLocation: sourceLocation)
            #expect(line?.contains(ForwardChecker.scientific(result.maxRelError)) == true, "\(text)", sourceLocation: sourceLocation)
        }
    }

    /// A small BERT encoder (sentence-transformers layout) with seeded float32 weights.
    func makeBERT(_ dir: String, layers: Int = 2) throws -> String {
        var (tensors, config) = bertModel(hidden: 32, heads: 4, vocab: 100, intermediate: 64)
        config.numHiddenLayers = layers
        let layer0 = tensors.filter { $0.name.hasPrefix("encoder.layer.0.") }
        for l in 1..<max(layers, 1) {
            tensors += layer0.map { t in
                var u = t
                u.name = t.name.replacingOccurrences(of: "encoder.layer.0.", with: "encoder.layer.\(l).")
                return u
            }
        }
        var g = SeededGenerator(seed: 7)
        let contents = tensors.map { t -> (TensorSpec, [UInt8]) in
            let spec = TensorSpec(name: t.name, dtype: t.dtype, shape: t.shape)
            if t.dtype == .i64 { return (spec, (0..<Int64(t.elementCount)).flatMap { withUnsafeBytes(of: $0.littleEndian, Array.init) }) }
            let values: [Float] = (0..<t.elementCount).map { _ in
                t.name.hasSuffix("LayerNorm.weight") ? 1 + Float.random(in: -0.1...0.1, using: &g) : Float.random(in: -0.2...0.2, using: &g)
            }
            return (spec, values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) })
        }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try writeSafetensors((dir as NSString).appendingPathComponent("model.safetensors"), contents)
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        try encoder.encode(config).write(to: URL(fileURLWithPath: (dir as NSString).appendingPathComponent("config.json")))
        return dir
    }

    // MARK: - Dense against the numpy reference

    /// Dense outputs (every position) against forward_ref.py: relative error (max |Δ| / max |ref|) ≤ 1e-4.
    func expectMatchesReference(_ out: String, source: String, tokens: String) throws {
        let (status, report, stderr) = try forwardCheck(out, source: source, ["--tokens", tokens, "--include-dense"])
        #expect(status == 0, "\(stderr)")
        let dense = try #require(report?.dense)
        let reference = try runPython("forward_ref.py", [source, "--tokens", tokens])
        let batches = try #require(reference["batches"] as? [[String: Any]])
        #expect(batches.count == dense.count)
        #expect(reference["output"] as? String == report?.output.rawValue)
        for (mine, theirs) in zip(dense, batches) {
            let values = try #require(theirs["values"] as? [Double])
            #expect(mine.shape == theirs["shape"] as? [Int])
            #expect(mine.values.count == values.count)
            let scale = values.map(abs).max() ?? 1
            let error = zip(mine.values, values).map { abs(Double($0) - $1) }.max() ?? .infinity
            #expect(error / scale <= 1e-4, "dense vs numpy: max abs \(error), relative \(error / scale)")
            // The last position's top-5 in the report is the reference's.
            let last = Array(values.suffix(mine.shape[1]))
            let top = last.indices.sorted { last[$0] > last[$1] }.prefix(5)
            let rank = try #require(report?.ranks.first { $0.dpRank == mine.dpRank })
            #expect(rank.denseTop5.map(\.id) == Array(top))
        }
    }

    @Test("the fixture's dense logits match an independent numpy reference at every position", .enabled(if: hasPython))
    func fixtureMatchesNumpy() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        try shard(Self.fixture, dir.file("out"), ["--dp", "2", "--tp", "2"])
        try expectMatchesReference(dir.file("out"), source: Self.fixture, tokens: "1,2,3,4,5,6,7,8;999,0,500,17")
    }

    @Test("all-MiniLM-L6-v2's dense last hidden state matches an independent numpy reference", .enabled(if: hasMiniLM))
    func miniLMMatchesNumpy() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let minilm = Environment.minilm!
        try shard(minilm, dir.file("out"), ["--dp", "2", "--tp", "2"])
        // [CLS] hello world [SEP]; [CLS] the cat sat [SEP]
        try expectMatchesReference(dir.file("out"), source: minilm, tokens: "101,7592,2088,102;101,1996,4937,2938,102")
    }

    @Test("a synthetic BERT's dense last hidden state matches the numpy reference", .enabled(if: hasPython))
    func syntheticBERTMatchesNumpy() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let source = try makeBERT(dir.file("bert"))
        try shard(source, dir.file("out"), ["--dp", "1", "--tp", "2"])
        try expectMatchesReference(dir.file("out"), source: source, tokens: "3,14,15,92,65,35")
    }

    @Test("a tied Qwen2-style model (q/k/v biases) matches the numpy reference", .enabled(if: hasPython))
    func tiedBiasedMatchesNumpy() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        try makeLlama(in: dir.file("qwen"), tied: true, biases: true)
        try shard(dir.file("qwen"), dir.file("out"), ["--dp", "1", "--tp", "4"])
        try expectMatchesReference(dir.file("out"), source: dir.file("qwen"), tokens: "5,6,7,129,0")
    }

    // MARK: - Sharded against dense

    static func everyComponent(_ g: Int) -> String { finegrained(embedding: g, lmHead: g, oProj: g, mlp: g) }

    static let configurations: [(String, [String])] = [
        ("pure TP 4", ["--dp", "1", "--tp", "4"]),
        ("all-DP 4, every fine-grained size 1", ["--dp", "4", "--additional-config", everyComponent(1)]),
        ("all-DP 4, every fine-grained size 2", ["--dp", "4", "--additional-config", everyComponent(2)]),
        ("all-DP 4, every fine-grained size 4", ["--dp", "4", "--additional-config", everyComponent(4)]),
        ("all-DP 4, mixed sizes", ["--dp", "4", "--additional-config", finegrained(embedding: 2, lmHead: 4, oProj: 1, mlp: 2)]),
        ("mixed DP 2 × TP 2", ["--dp", "2", "--tp", "2"]),
        (
            "DP 2 × TP 2 with fine-grained embedding, lm_head and MLP",
            ["--dp", "2", "--tp", "2", "--additional-config", finegrained(embedding: 2, lmHead: 2, mlp: 2)]
        ),
        ("vllm layout, DP 2 × TP 4 (kv heads replicated)", ["--dp", "2", "--tp", "4", "--layout", "vllm"]),
        ("vllm layout, all-DP 4 with fine-grained MLP 4", ["--dp", "4", "--layout", "vllm", "--additional-config", finegrained(mlp: 4)]),
        ("hdf5, TP 4", ["--dp", "1", "--tp", "4", "--format", "hdf5"]),
        ("hdf5, all-DP 4 with every size 2", ["--dp", "4", "--format", "hdf5", "--additional-config", everyComponent(2)]),
    ]

    @Test("every rank's logits match the dense ones", arguments: configurations)
    func shardedMatchesDense(_ name: String, _ arguments: [String]) throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        try shard(Self.fixture, dir.file("out"), arguments)
        let (status, report, stderr) = try forwardCheck(dir.file("out"), source: Self.fixture, ["--seed", "3"])
        #expect(status == 0, "\(name): \(stderr) \(report?.failures ?? [])")
        let r = try #require(report)
        #expect(r.ok && r.output == .logits)
        #expect(r.ranks.count == r.dp * r.tp)
        for rank in r.ranks {
            #expect(rank.passed && rank.maxRelError < 1e-5 && rank.top1Agreement == rank.positions && rank.positions == 8)
            #expect(rank.denseTop5.map(\.id) == rank.shardedTop5.map(\.id))
        }
        // Every DP rank got its own batch.
        #expect(Set(r.ranks.map(\.tokens)).count == r.dp)
    }

    @Test("tied and biased models match in both layouts", arguments: ["hf", "vllm"])
    func tiedBiasedShardedMatchesDense(_ layout: String) throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        try makeLlama(in: dir.file("qwen"), tied: true, biases: true)
        try shard(
            dir.file("qwen"), dir.file("out"),
            ["--dp", "4", "--tp", "2", "--layout", layout, "--additional-config", finegrained(embedding: 2, lmHead: 2, mlp: 4)])
        let (status, report, stderr) = try forwardCheck(dir.file("out"), source: dir.file("qwen"))
        #expect(status == 0, "\(stderr) \(report?.failures ?? [])")
        #expect(report?.ranks.count == 8)
    }

    @Test(
        "a BERT encoder's hidden states match for TP, fine-grained DP and mixed layouts",
        arguments: [
            ["--dp", "1", "--tp", "4"], ["--dp", "4", "--additional-config", finegrained(embedding: 2, lmHead: 0, oProj: 4, mlp: 2)],
            ["--dp", "2", "--tp", "2", "--additional-config", finegrained(embedding: 2, mlp: 2)],
        ])
    func bertShardedMatchesDense(_ arguments: [String]) throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let source = try makeBERT(dir.file("bert"))
        try shard(source, dir.file("out"), arguments)
        let (status, report, stderr) = try forwardCheck(dir.file("out"), source: source)
        #expect(status == 0, "\(stderr) \(report?.failures ?? [])")
        #expect(report?.output == .lastHiddenState)
    }

    @Test("all-MiniLM-L6-v2 sharded over all-DP 4 with fine-grained groups matches dense", .enabled(if: hasMiniLM))
    func miniLMShardedMatchesDense() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let minilm = Environment.minilm!
        try shard(minilm, dir.file("out"), ["--dp", "4", "--additional-config", finegrained(embedding: 2, oProj: 2, mlp: 4)])
        let (status, report, stderr) = try forwardCheck(dir.file("out"), source: minilm, ["--tokens-per-rank", "3"])
        #expect(status == 0, "\(stderr) \(report?.failures ?? [])")
        #expect(report?.ranks.allSatisfy { $0.maxRelError < 1e-5 } == true)
    }

    // MARK: - Teeth

    @Test("a kv head given to the wrong rank fails every rank of its TP group")
    func kvHeadOnWrongRank() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        // DP 2 × TP 4 over 2 kv heads: tp ranks 0, 1 hold kv head 0; 2, 3 hold kv head 1.
        try shard(Self.fixture, out, ["--dp", "2", "--tp", "4"])
        let tensor = "model.layers.1.self_attn.k_proj.weight"
        let head0 = try tensorBytes(out, file(4), tensor)
        try alter(out, file(6), tensor) { _ in head0 }
        try expectCaught(out, source: Self.fixture, ranks: [4, 5, 6, 7])
    }

    @Test("the o_proj shards of two ranks swapped fail their o_proj group only")
    func oProjSwapped() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        // All-DP 4, o_proj group 2: groups {0, 1} and {2, 3}.
        try shard(Self.fixture, out, ["--dp", "4", "--additional-config", finegrained(oProj: 2)])
        let tensor = "model.layers.0.self_attn.o_proj.weight"
        let (a, b) = (try tensorBytes(out, file(2), tensor), try tensorBytes(out, file(3), tensor))
        try alter(out, file(2), tensor) { _ in b }
        try alter(out, file(3), tensor) { _ in a }
        try expectCaught(out, source: Self.fixture, ranks: [2, 3])
    }

    @Test("gate and up swapped in the fused gate_up_proj fail the TP group")
    func gateUpSwapped() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        try shard(Self.fixture, out, ["--dp", "2", "--tp", "2", "--layout", "vllm"])
        try alter(out, file(1), "model.layers.1.mlp.gate_up_proj.weight") { b in Array(b[(b.count / 2)...] + b[..<(b.count / 2)]) }
        try expectCaught(out, source: Self.fixture, ranks: [0, 1])
    }

    @Test("gate_proj and up_proj swapped on one rank of a fine-grained MLP group fail that group")
    func gateUpSwappedFineGrained() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        try shard(Self.fixture, out, ["--dp", "4", "--additional-config", finegrained(mlp: 2)])
        let gate = try tensorBytes(out, file(3), "model.layers.0.mlp.gate_proj.weight")
        let up = try tensorBytes(out, file(3), "model.layers.0.mlp.up_proj.weight")
        try alter(out, file(3), "model.layers.0.mlp.gate_proj.weight") { _ in up }
        try alter(out, file(3), "model.layers.0.mlp.up_proj.weight") { _ in gate }
        try expectCaught(out, source: Self.fixture, ranks: [2, 3])
    }

    @Test("an embedding range shifted by one row fails the ranks whose tokens it serves")
    func embeddingShifted() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        // All-DP 4, embedding group 2: ranks 1 and 3 hold rows [512, 1024) of the padded table.
        try shard(Self.fixture, out, ["--dp", "4", "--additional-config", finegrained(embedding: 2)])
        let row = 64 * 2
        try alter(out, file(3), "model.embed_tokens.weight") { b in Array(b.dropFirst(row)) + [UInt8](repeating: 0, count: row) }
        // Every batch has a token of rank 3's range, so its whole group {2, 3} reads a shifted row.
        try expectCaught(out, source: Self.fixture, ranks: [2, 3], ["--tokens", "1,600;2,700;3,800;4,900"])
    }

    @Test("a row-parallel bias split instead of kept whole (BERT output.dense.bias / G on every rank) fails every rank")
    func rowParallelBiasSplit() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let source = try makeBERT(dir.file("bert"))
        let out = dir.file("out")
        try shard(source, out, ["--dp", "4", "--additional-config", finegrained(mlp: 2)])
        for r in 0..<4 {
            try alter(out, file(r), "encoder.layer.1.output.dense.bias") { bytes in
                stride(from: 0, to: bytes.count, by: 4).flatMap { i -> [UInt8] in
                    let v =
                        Float(
                            bitPattern: UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2]) << 16 | UInt32(bytes[i + 3])
                                << 24) / 2
                    return withUnsafeBytes(of: v.bitPattern.littleEndian, Array.init)
                }
            }
        }
        try expectCaught(out, source: source, ranks: [0, 1, 2, 3])
    }

    // MARK: - Bad input

    @Test("a token id outside the vocabulary is bad input naming the id")
    func tokenOutsideVocabulary() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        try shard(Self.fixture, dir.file("out"), ["--dp", "2"])
        let (status, text) = try forwardCheckText(dir.file("out"), source: Self.fixture, ["--tokens", "1,1000"])
        #expect(status == 2)
        #expect(text.contains("token id 1000 (DP rank 0) is outside the vocabulary of 1000"))
        let (wrongCount, message) = try forwardCheckText(dir.file("out"), source: Self.fixture, ["--tokens", "1;2;3"])
        #expect(wrongCount == 2 && message.contains("--tokens gives 3 batches"))
    }

    @Test("GPT-2 is not supported yet: exit 2 naming it")
    func gpt2IsUnsupported() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let (tensors, config) = gpt2Model()
        let source = dir.file("gpt2")
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        try writeSafetensors(
            (source as NSString).appendingPathComponent("model.safetensors"),
            tensors.map { (TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape), [UInt8](repeating: 0, count: $0.byteCount)) })
        try JSONEncoder().encode(config).write(to: URL(fileURLWithPath: (source as NSString).appendingPathComponent("config.json")))
        try shard(source, dir.file("out"), ["--dp", "1"])
        let (status, text) = try forwardCheckText(dir.file("out"), source: source)
        #expect(status == 2)
        #expect(text.contains("forward-check does not support GPT2") && text.contains("not") && text.contains("yet"))
    }
}
