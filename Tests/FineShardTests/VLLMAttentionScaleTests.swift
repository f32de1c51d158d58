import Foundation
import Testing

@testable import FineShard

/// vLLM's attention layers keep four 0-d float32 scales in their state dict (`attn._k_scale`, `_v_scale`,
/// `_q_scale`, `_prob_scale`), which `sharded_state` requires: `--layout vllm` writes them as fill pieces
/// (1.0) or from the checkpoint's own scales. scripts/vllm/test_engine.sh loads the result in vLLM.
@Suite struct VLLMAttentionScaleTests {
    static let scales = ["_k_scale", "_v_scale", "_q_scale", "_prob_scale"]

    /// A checkpoint of `makeLlama` plus extra F32 tensors.
    func llama(in dir: String, extra: [(TensorSpec, [UInt8])]) throws {
        try makeLlama(in: dir, layers: 2)
        let path = (dir as NSString).appendingPathComponent("model.safetensors")
        let source = try Checkpoint.open(path)
        var tensors = try source.tensors.map { (TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape), try readAll(source, $0.name)) }
        tensors += extra
        try writeSafetensors(path, tensors, metadata: ["format": "pt"])
    }

    func float32(_ v: Float) -> [UInt8] { withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }

    @Test func theVLLMLayoutGivesEveryAttentionLayerFourScalesOfOneAsFillPiecesOnEveryRank() throws {
        let model = LlamaShape(heads: 4, kvHeads: 2, headDim: 2, hidden: 8, intermediate: 8, vocab: 64, layers: 2)
        let plan = try makePlan(model.tensors, model.config, ParallelConfig(dp: 2, tp: 2, layout: .vllm))
        for r in 0..<4 {
            for l in 0..<2 {
                for s in Self.scales {
                    let t = try #require(plan.tensor("model.layers.\(l).self_attn.attn.\(s)", rank: r))
                    #expect(t.dtype == .f32 && t.shape == [])
                    #expect(t.pieces == [Piece(fill: 1, shape: [], at: [])])
                }
            }
        }
        #expect(plan.bytesPerRank() == (0..<4).map { plan.rank($0).byteCount })
        let hf = try makePlan(model.tensors, model.config, ParallelConfig(dp: 1, tp: 2))
        #expect(!hf.rank(0).tensors.contains { $0.name.contains("attn._") })
    }

    @Test func shardedScalesHoldOneAndVerifyMergeAndTheIndependentCheckerAcceptThem() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let source = dir.file("src")
        let out = dir.file("out")
        try makeLlama(in: source, layers: 2)
        let shard = try run(fineshardBinary, ["shard", source, "-o", out, "--dp", "1", "--tp", "2", "--layout", "vllm"])
        #expect(shard.status == 0, "\(shard.stderr)")
        for r in 0..<2 {
            let file = try Checkpoint.open(out + "/model-rank-\(r)-part-0.safetensors")
            for l in 0..<2 {
                for s in Self.scales {
                    let name = "model.layers.\(l).self_attn.attn.\(s)"
                    #expect(try file.tensor(name).shape == [])
                    #expect(try readAll(file, name) == float32(1))
                }
            }
        }
        let verify = try run(fineshardBinary, ["verify", out, "--source", source])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
        let merged = dir.file("merged")
        let merge = try run(fineshardBinary, ["merge", out, "-o", merged])
        #expect(merge.status == 0, "\(merge.stderr)")
        let dense = try Checkpoint.open(merged)
        let original = try Checkpoint.open(source)
        #expect(dense.tensors.map(\.name).sorted() == original.tensors.map(\.name).sorted())
        for t in original.tensors { #expect(try readAll(dense, t.name) == readAll(original, t.name)) }
        if Environment.python != nil {
            let check = try runPython("check_shards.py", [out, source])
            #expect(check["tensors"] as? Int == 2 * (3 + 2 * (6 + 4)))
        }
    }

    @Test func aScaleThatDiffersFromItsFillValueIsAVerificationDifference() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let source = dir.file("src")
        let out = dir.file("out")
        try makeLlama(in: source, layers: 1)
        #expect(try run(fineshardBinary, ["shard", source, "-o", out, "--dp", "1", "--tp", "1", "--layout", "vllm"]).status == 0)
        // The file stays as written (its hash still matches); the manifest now claims another value.
        let path = out + "/manifest.json"
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let changed = text.replacingOccurrences(of: #""fill" : 1,"#, with: #""fill" : 2,"#)
        #expect(changed != text)
        try changed.write(toFile: path, atomically: true, encoding: .utf8)
        let verify = try run(fineshardBinary, ["verify", out, "--source", source])
        #expect(verify.status == 1)
        #expect((verify.stdout + verify.stderr).contains("should hold the constant 2.0"))
    }

    @Test func aCheckpointsOwnFloat32ScalesBecomeVLLMsScalesAndTheOthersStayOne() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let source = dir.file("src")
        let out = dir.file("out")
        try llama(
            in: source,
            extra: [
                (TensorSpec(name: "model.layers.0.self_attn.k_scale", dtype: .f32, shape: []), float32(0.5)),
                (TensorSpec(name: "model.layers.0.self_attn.v_scale", dtype: .f32, shape: []), float32(0.25)),
                (TensorSpec(name: "model.layers.1.self_attn.k_proj.k_scale", dtype: .f32, shape: []), float32(2)),
            ])
        #expect(try run(fineshardBinary, ["shard", source, "-o", out, "--dp", "1", "--tp", "2", "--layout", "vllm"]).status == 0)
        let manifest = try Manifest.read(out + "/manifest.json")
        let expected: [String: (Piece, [UInt8])] = [
            "model.layers.0.self_attn.attn._k_scale": (piece("model.layers.0.self_attn.k_scale", [], at: []), float32(0.5)),
            "model.layers.0.self_attn.attn._v_scale": (piece("model.layers.0.self_attn.v_scale", [], at: []), float32(0.25)),
            "model.layers.0.self_attn.attn._q_scale": (Piece(fill: 1, shape: [], at: []), float32(1)),
            "model.layers.1.self_attn.attn._k_scale": (piece("model.layers.1.self_attn.k_proj.k_scale", [], at: []), float32(2)),
            "model.layers.1.self_attn.attn._v_scale": (Piece(fill: 1, shape: [], at: []), float32(1)),
        ]
        for rank in manifest.ranks {
            let names = rank.tensors.map(\.name)
            #expect(!names.contains { $0.hasSuffix(".self_attn.k_scale") || $0.hasSuffix(".k_proj.k_scale") })
            #expect(names.filter { $0.contains(".attn._") }.count == 8)
            let file = try Checkpoint.open(out + "/" + rank.files[0].name)
            for (name, (p, bytes)) in expected {
                #expect(rank.tensors.first { $0.name == name }?.pieces == [p])
                #expect(try readAll(file, name) == bytes)
            }
        }
        #expect(try run(fineshardBinary, ["verify", out, "--source", source]).status == 0)
        let merged = dir.file("merged")
        #expect(try run(fineshardBinary, ["merge", out, "-o", merged]).status == 0)
        #expect(try readAll(Checkpoint.open(merged), "model.layers.1.self_attn.k_proj.k_scale") == float32(2))
    }

    @Test func aScaleVLLMCannotTakeAsIsIsBadInputNamingIt() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let source = dir.file("src")
        try llama(in: source, extra: [(TensorSpec(name: "model.layers.0.self_attn.k_scale", dtype: .f32, shape: [1]), float32(0.5))])
        let result = try run(fineshardBinary, ["plan", source, "--dp", "1", "--tp", "1", "--layout", "vllm"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("'model.layers.0.self_attn.k_scale'") && result.stderr.contains("0-d float32"))
    }

    @Test func aFillPieceThatAlsoNamesASourceIsAMalformedManifest() throws {
        let good = #"{"at": [], "fill": 1.5, "ranges": []}"#
        #expect(try JSONDecoder().decode(Piece.self, from: Data(good.utf8)) == Piece(fill: 1.5, shape: [], at: []))
        for bad in [#"{"at": [], "fill": 1, "ranges": [], "source": "x"}"#, #"{"at": [1], "fill": 1, "ranges": [[1, 2]]}"#] {
            #expect(throws: DecodingError.self) { _ = try JSONDecoder().decode(Piece.self, from: Data(bad.utf8)) }
        }
        let old = #"{"at": [0], "ranges": [[0, 4]], "source": "w"}"#
        let piece = try JSONDecoder().decode(Piece.self, from: Data(old.utf8))
        #expect(piece.fill == nil && piece.source == "w")
    }
}
