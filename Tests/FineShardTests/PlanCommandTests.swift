import Foundation
import Testing

@testable import FineShard

/// `fineshard plan`, run as the built binary, on checkpoints whose numbers are worked out here
/// from the shapes.
@Suite struct PlanCommandTests {
    static let seedConfig = finegrained(embedding: 8, lmHead: 8, oProj: 8, mlp: 8)
    static let gib = Double(1 << 30)

    func plan(_ arguments: [String]) throws -> [String: Any] {
        let r = try run(fineshardBinary, ["plan"] + arguments + ["--json"])
        #expect(r.status == 0, "\(r.stderr)")
        return try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
    }

    func components(_ report: [String: Any]) -> [String: [String: Any]] {
        Dictionary(uniqueKeysWithValues: (report["components"] as! [[String: Any]]).map { ($0["component"] as! String, $0) })
    }

    /// The seed document's DeepSeek-R1 W8A8 decode deployment (DP 32, EP, every fine-grained size
    /// 8): its memory column, which is in GiB although the seed writes "GB".
    @Test func theDeepSeekR1HeaderOnlyCheckpointReproducesTheSeedMemoryTable() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let made = try run("/usr/bin/env", ["python3", Environment.root + "/scripts/make_deepseek_r1_headers.py", dir.path])
        #expect(made.status == 0, "\(made.stderr)")
        let report = try plan([dir.path, "--dp", "32", "--enable-expert-parallel", "--additional-config", Self.seedConfig])
        let c = components(report)
        let saving = { (name: String) in Double(c[name]!["saving"] as! Int) / Self.gib }
        #expect(abs(saving("o_proj") - 5.8) < 0.1, "o_proj \(saving("o_proj"))")
        #expect(abs(saving("lm_head") - 1.51) < 0.01, "lm_head \(saving("lm_head"))")
        #expect(abs(saving("embedding") - 1.51) < 0.01, "embedding \(saving("embedding"))")
        #expect(saving("mlp") >= 0.9 && saving("mlp") <= 1.0, "mlp \(saving("mlp"))")
        // Expert parallel: 256 experts over 32 ranks, so every rank holds 8 per MoE layer and the
        // same number of bytes.
        let perRank = report["bytes_per_rank"] as! [Int]
        #expect(perRank.count == 32 && Set(perRank).count == 1)
        #expect((report["model"] as! [String: Any])["n_routed_experts"] as? Int == 256)
    }

    @Test func theFixturesTableFollowsFromItsShapes() throws {
        let report = try plan([Models.fixture, "--dp", "4", "--additional-config", finegrained(embedding: 4, lmHead: 2, oProj: 4, mlp: 4)])
        let c = components(report)
        // Vocab 1000 padded to 1024 rows of 64 bf16: 131072 bytes whole.
        #expect(c["embedding"]!["bytes_per_rank_without"] as? Int == 131_072)
        #expect(c["embedding"]!["bytes_per_rank_with"] as? Int == 32_768)
        #expect(c["lm_head"]!["bytes_per_rank_with"] as? Int == 65_536)
        // o_proj: 2 layers of [64, 64] bf16, cut 4 ways along its input.
        #expect(c["o_proj"]!["bytes_per_rank_without"] as? Int == 16_384)
        #expect(c["o_proj"]!["bytes_per_rank_with"] as? Int == 4_096)
        // MLP: 2 layers × 3 × [128, 64] bf16.
        #expect(c["mlp"]!["bytes_per_rank_without"] as? Int == 98_304)
        #expect(c["mlp"]!["saving"] as? Int == 73_728)
        #expect(c["o_proj"]!["collective"] as? String == "all-to-all, reduce-scatter")
        let text = try run(
            fineshardBinary,
            ["plan", Models.fixture, "--dp", "4", "--additional-config", finegrained(embedding: 4, lmHead: 2, oProj: 4, mlp: 4)])
        #expect(text.stdout.contains("embedding  4      all-gather ids, reduce-scatter"), "\(text.stdout)")
    }

    @Test(.enabled(if: Environment.minilm != nil, "needs FINESHARD_MINILM"))
    func miniLMsTableFollowsFromItsShapes() throws {
        let report = try plan([Environment.minilm!, "--dp", "4", "--additional-config", finegrained(embedding: 2, oProj: 2, mlp: 4)])
        let c = components(report)
        // BERT word embeddings: 30522 rows padded to 30528, hidden 384, F32.
        #expect(c["embedding"]!["bytes_per_rank_without"] as? Int == 30_528 * 384 * 4)
        #expect(c["embedding"]!["bytes_per_rank_with"] as? Int == 30_528 * 384 * 4 / 2)
        // An encoder has no lm_head.
        #expect(c["lm_head"]!["bytes_per_rank_without"] as? Int == 0)
        // attention.output.dense: 6 layers of [384, 384] F32 weights cut in 2, biases whole.
        #expect(c["o_proj"]!["bytes_per_rank_with"] as? Int == 6 * (384 * 192 * 4 + 384 * 4))
        // intermediate.dense [1536, 384] + bias [1536] cut 4 ways; output.dense [384, 1536] cut, bias whole.
        let mlp = 6 * (1536 * 384 * 4 / 4 + 1536 * 4 / 4 + 384 * 1536 * 4 / 4 + 384 * 4)
        #expect(c["mlp"]!["bytes_per_rank_with"] as? Int == mlp)
        #expect((report["unknown_tensors"] as! [String]).isEmpty)
    }

    @Test func illegalSizesAreRefusedWithExitTwoNamingTheOptionAndLegalValues() throws {
        let r = try run(fineshardBinary, ["plan", Models.fixture, "--dp", "6", "--additional-config", finegrained(embedding: 4)])
        #expect(r.status == 2)
        #expect(r.stderr.contains("embedding_tensor_parallel_size = 4 must divide --dp 6"), "\(r.stderr)")
        #expect(r.stderr.contains("nearest legal: 3, 6"), "\(r.stderr)")
        let heads = try run(fineshardBinary, ["plan", Models.fixture, "--dp", "1", "--tp", "3"])
        #expect(heads.status == 2)
        #expect(heads.stderr.contains("num_attention_heads = 4 is not divisible by --tp 3"), "\(heads.stderr)")
        let json = try run(fineshardBinary, ["plan", Models.fixture, "--dp", "2", "--additional-config", "{not json"])
        #expect(json.status == 2)
        #expect(json.stderr.contains("--additional-config"))
    }

    @Test func unknownAdditionalConfigKeysAreIgnoredWithANote() throws {
        let r = try run(
            fineshardBinary,
            ["plan", Models.fixture, "--dp", "2", "--additional-config", #"{"ascend_scheduler_config": {"enabled": true}}"#])
        #expect(r.status == 0)
        #expect(r.stdout.contains("note: --additional-config: key 'ascend_scheduler_config'"), "\(r.stdout)")
    }
}
