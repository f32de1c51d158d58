import Foundation
import Testing

@testable import FineShard
@testable import FineShardExecution
@testable import FineShardPlanning
@testable import FineShardVerification

/// `forward-check` on MoE models (issue 13): the dense pass against transformers itself (the oracle
/// `scripts/interop/moe_oracle.py`, run with the vLLM venv's torch + transformers), every rank of the
/// sharded pass against the dense one — experts on their EP ranks with simulated dispatch and
/// combine, or split over DP × TP — and the routing report (every choice's margin, near-ties).
@Suite("forward-check MoE")
struct ForwardCheckMoETests {
    static let fixture = Environment.root + "/fixtures/tiny-deepseek-v3"
    static let fixtures = ["tiny-deepseek-v3", "tiny-deepseek-v3-w8a8", "tiny-deepseek-v3-fp8"]
    let base = ForwardCheckTests()

    // MARK: - The transformers oracle

    /// The vLLM venv's interpreter (torch 2.13 CPU + transformers 5.19), which `scripts/setup.sh`
    /// exports. Unset is a failure, not a skip: the oracle is what these tests are for.
    static func oraclePython() throws -> String {
        guard let python = ProcessInfo.processInfo.environment["FINESHARD_ORACLE_PYTHON"], !python.isEmpty else {
            throw TestFailure(
                "FINESHARD_ORACLE_PYTHON is not set: run `source scripts/setup.sh`, which exports the Python of the venv with torch and transformers (the oracle of the MoE forward check)"
            )
        }
        return python
    }

    /// Runs `moe_oracle.py` with the oracle's Python; returns its JSON output.
    static func oracle(_ arguments: [String]) throws -> [String: Any] {
        let result = try run(try oraclePython(), [Environment.root + "/scripts/interop/moe_oracle.py"] + arguments)
        guard result.status == 0 else { throw TestFailure("moe_oracle.py \(arguments.first ?? "") failed: \(result.stderr)") }
        return try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
    }

    /// transformers' logits of every sequence of `tokens` (`;` between sequences), flattened per sequence.
    static func oracleLogits(_ source: String, tokens: String) throws -> [[Double]] {
        let logits = try #require(try oracle(["logits", source, "--tokens", tokens])["logits"] as? [[[Double]]])
        return logits.map { $0.flatMap { $0 } }
    }

    /// Shards `source`, runs forward-check with `--include-dense` and checks both numbers of the issue:
    /// the dense logits equal transformers' to ≤ 1e-4 relative and every rank equals the dense pass to
    /// ≤ 1e-5. Returns the two largest relative errors.
    @discardableResult
    func expectMatchesOracle(
        _ source: String, _ arguments: [String], tokens: String, reference: [[Double]]? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> (dense: Double, sharded: Float) {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        try base.shard(source, dir.file("out"), arguments)
        let (status, report, stderr) = try base.forwardCheck(dir.file("out"), source: source, ["--tokens", tokens, "--include-dense"])
        #expect(status == 0, "\(stderr) \(report?.failures ?? [])", sourceLocation: sourceLocation)
        let r = try #require(report, sourceLocation: sourceLocation)
        let dense = try #require(r.dense, sourceLocation: sourceLocation)
        let reference = try reference ?? Self.oracleLogits(source, tokens: tokens)
        #expect(dense.count == reference.count, sourceLocation: sourceLocation)
        var worst = 0.0
        for (mine, theirs) in zip(dense, reference) {
            #expect(mine.values.count == theirs.count, sourceLocation: sourceLocation)
            let scale = theirs.map(abs).max() ?? 1
            let error = zip(mine.values, theirs).map { abs(Double($0) - $1) }.max() ?? .infinity
            worst = max(worst, error / scale)
        }
        #expect(worst <= 1e-4, "dense vs transformers: relative \(worst)", sourceLocation: sourceLocation)
        let sharded = r.ranks.map(\.maxRelError).max() ?? .infinity
        #expect(sharded <= 1e-5, "sharded vs dense: relative \(sharded)", sourceLocation: sourceLocation)
        #expect(r.routingDifferences == 0 && r.firstDifferences.isEmpty, "\(r.failures)", sourceLocation: sourceLocation)
        return (worst, sharded)
    }

    static let everySize2 = ForwardCheckTests.everyComponent(2)

    // MARK: - Dense against transformers

    @Test(
        "each MoE family's dense logits equal transformers' and every rank equals the dense pass",
        arguments: ["deepseek_v3", "deepseek_v2", "qwen3_moe", "qwen2_moe", "mixtral"])
    func familyMatchesTransformers(_ family: String) throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        _ = try Self.oracle(["write", family, dir.file(family), "--seed", "3"])
        let tokens = "1,2,3,4,5,6,7,8;199,0,64,17"
        let reference = try Self.oracleLogits(dir.file(family), tokens: tokens)
        try expectMatchesOracle(
            dir.file(family), ["--dp", "2", "--tp", "2", "--enable-expert-parallel"], tokens: tokens, reference: reference)
        try expectMatchesOracle(
            dir.file(family), ["--dp", "2", "--additional-config", Self.everySize2], tokens: tokens, reference: reference)
    }

    @Test("DeepSeek-V3 with rope_interleave false (rotate_half on the rotary part) equals transformers")
    func deepseekV3WithoutInterleave() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let source = dir.file("v3")
        _ = try Self.oracle(["write", "deepseek_v3", source, "--seed", "5"])
        let path = source + "/config.json"
        var config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
        #expect(config["rope_interleave"] as? Bool == true)
        config["rope_interleave"] = false
        try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys]).write(to: URL(fileURLWithPath: path))
        try expectMatchesOracle(source, ["--dp", "1", "--tp", "2", "--enable-expert-parallel"], tokens: "3,1,4,1,5,9,2,6")
    }

    @Test(
        "the DeepSeek-V3 fixtures (bf16, W8A8, FP8 blocks) equal transformers with DP 4 + EP and every fine-grained size 2",
        arguments: fixtures)
    func fixtureMatchesTransformers(_ name: String) throws {
        try expectMatchesOracle(
            Environment.root + "/fixtures/" + name, ["--dp", "4", "--enable-expert-parallel", "--additional-config", Self.everySize2],
            tokens: "1,2,3,4,5,6,7,8;199,0,64,17;5,9,33;77,78,79,80,81")
    }

    // MARK: - Sharded against dense

    static let configurations: [(String, [String])] = [
        ("DP 4 + EP, every fine-grained size 2", ["--dp", "4", "--enable-expert-parallel", "--additional-config", everySize2]),
        (
            "DP 4 + EP, every fine-grained size 4",
            ["--dp", "4", "--enable-expert-parallel", "--additional-config", ForwardCheckTests.everyComponent(4)]
        ),
        ("DP 2 × TP 2 + EP (MLA heads on TP)", ["--dp", "2", "--tp", "2", "--enable-expert-parallel"]),
        ("DP 8 + EP (one expert per rank)", ["--dp", "8", "--enable-expert-parallel"]),
        (
            "DP 2 × TP 2 + EP with enable_shared_expert_dp (shared experts whole)",
            ["--dp", "2", "--tp", "2", "--enable-expert-parallel", "--additional-config", #"{"enable_shared_expert_dp": true}"#]
        ),
        ("DP 4 without EP (experts split over 4 ranks), every size 2", ["--dp", "4", "--additional-config", everySize2]),
        ("TP 4 without EP", ["--dp", "1", "--tp", "4"]),
        ("hdf5, DP 4 + EP", ["--dp", "4", "--enable-expert-parallel", "--format", "hdf5"]),
        ("DP 2 × TP 2 without EP, fine-grained MLP 2", ["--dp", "2", "--tp", "2", "--additional-config", finegrained(mlp: 2)]),
    ]

    @Test("every rank of the DeepSeek-V3 fixtures equals the dense pass", arguments: fixtures, configurations)
    func shardedMatchesDense(_ fixture: String, _ configuration: (String, [String])) throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let source = Environment.root + "/fixtures/" + fixture
        try base.shard(source, dir.file("out"), configuration.1)
        let (status, report, stderr) = try base.forwardCheck(dir.file("out"), source: source, ["--seed", "7", "--tokens-per-rank", "6"])
        #expect(status == 0, "\(configuration.0): \(stderr) \(report?.failures ?? [])")
        let r = try #require(report)
        #expect(r.ok && r.ranks.count == r.dp * r.tp && r.firstDifferences.isEmpty)
        // Layers 1 and 2 are MoE layers (first_k_dense_replace 1): one choice per token, layer and rank.
        #expect(r.routingChoices == 2 * 6 * r.ranks.count && r.routingDifferences == 0)
        for rank in r.ranks {
            #expect(rank.passed && rank.maxRelError <= 1e-5 && rank.top1Agreement == rank.positions, "\(configuration.0)")
            #expect(rank.routing?.count == 12 && rank.routing?.allSatisfy { $0.margin >= 0 && $0.experts.count == 2 } == true)
        }
    }

    // MARK: - Routing

    /// DeepSeek-V3's router on handmade logits: 8 experts in 4 groups, 2 groups kept, 2 experts.
    static let v3 = ForwardChecker.Architecture.MoE(
        experts: 8, topK: 2, intermediate: 4, scoring: .sigmoid, selection: .groupTopTwoSum, groups: 4, topKGroups: 2,
        normalize: true, normEpsilon: 1e-20, scale: 2.5, correctionBias: true, sparseLayers: [0], style: .deepseek)

    @Test("DeepSeek-V3 routing picks groups by their two best biased scores and weighs with the unbiased ones")
    func deepseekV3Routing() throws {
        // sigmoid(logit); group sums of biased scores: g0 = e0 + e1, g1 = e2 + e3, …
        let logits: [Float] = [2, -2, 1, 1, 0, 0, 3, -1]
        let bias: [Float] = [0, 0, 0, 0, 0.6, 0.6, 0, 0]
        let choice = Self.v3.route(logits, bias: bias)
        let s = logits.map(Kernels.sigmoid)
        // Group 2 (experts 4, 5: 0.5 + 0.6 each) and group 1 (0.73 + 0.73) are kept, not group 3 (0.95 + 0.27)
        // although expert 6 has the best score of all.
        #expect(choice.experts == [4, 5])
        let total = s[4] + s[5] + 1e-20
        #expect(zip(choice.weights, [s[4] / total * 2.5, s[5] / total * 2.5]).allSatisfy { abs($0 - $1) < 1e-6 })
        // The margin is the smallest gap at a cut: between the 2nd and 3rd group sums here.
        let groupSums = [s[0] + s[1], s[2] + s[3], s[4] + s[5] + 1.2, s[6] + s[7]].sorted(by: >)
        let expertGap = (s[4] + 0.6) - (s[2])
        #expect(abs(choice.margin - min(groupSums[1] - groupSums[2], expertGap)) < 1e-6)
        // Without the bias groups 1 and 3 win; expert 2 beats its equal, expert 3, by index (torch.topk).
        #expect(Self.v3.route(logits, bias: nil).experts == [6, 2])
    }

    @Test("a differing choice is a tie below the tolerance and a difference above it")
    func nearTies() throws {
        let scores: [Float] = [0.9, 0.5, 0.49999, 0.1, 0.1, 0.1, 0.1, 0.1]
        let dense = Self.v3.choice([0, 1], scores: scores, margin: 1e-5)
        let flipped = Self.v3.choice([0, 2], scores: scores, margin: 2e-5)
        let (tie, outcome) = ForwardChecker.Architecture.MoE.settle(flipped, dense: dense, tolerance: 1e-4, Self.v3)
        #expect(outcome == .tie && tie.experts == [0, 1] && tie.weights == dense.weights)
        let (kept, differs) = ForwardChecker.Architecture.MoE.settle(flipped, dense: dense, tolerance: 1e-6, Self.v3)
        #expect(differs == .differs && kept == flipped)
        #expect(ForwardChecker.Architecture.MoE.settle(dense, dense: dense, tolerance: 1, Self.v3).1 == .same)
    }

    @Test("routing differences within the tolerance are reported as ties and the pass goes on with the dense choice")
    func tiesAreReportedNotFailed() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        try base.shard(Self.fixture, out, ["--dp", "2", "--enable-expert-parallel"])
        // Rank 1 routes without e_score_correction_bias: some choices flip. A tolerance above every
        // flipped margin makes each flip a near-tie.
        try base.alter(out, base.file(1), "model.layers.1.mlp.gate.e_score_correction_bias") { [UInt8](repeating: 0, count: $0.count) }
        let (status, report, stderr) = try base.forwardCheck(out, source: Self.fixture, ["--seed", "2", "--tolerance", "0.5"])
        #expect(status == 0, "\(stderr)")
        let r = try #require(report)
        let rank1 = try #require(r.ranks.first { $0.rank == 1 })
        #expect((rank1.routingTies ?? 0) > 0 && r.routingTies == rank1.routingTies && r.routingDifferences == 0)
        #expect(rank1.routing?.filter { $0.outcome == .tie }.allSatisfy { $0.denseExperts != nil && $0.margin < 0.5 } == true)
        // With the dense choice taken the logits still agree to float rounding.
        #expect(rank1.maxRelError < 1e-5)
        let (_, text) = try base.forwardCheckText(out, source: Self.fixture, ["--seed", "2", "--tolerance", "0.5"])
        #expect(text.contains("\(rank1.routingTies!) ties") && text.contains("near-ties"), "\(text)")
    }

    // MARK: - Not supported

    @Test(
        "a router transformers does not compute is refused with exit 2 naming the field",
        arguments: [("topk_method", "noaux_tc", true), ("scoring_func", "softmax", false)])
    func unsupportedRouter(_ field: String, _ value: String, _ deepseekV2: Bool) throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let source = dir.file("model")
        try FileManager.default.copyItem(atPath: Self.fixture, toPath: source)
        let path = source + "/config.json"
        var config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
        config[field] = value
        if deepseekV2 { (config["model_type"], config["architectures"]) = ("deepseek_v2", ["DeepseekV2ForCausalLM"]) }
        try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys]).write(to: URL(fileURLWithPath: path))
        try base.shard(source, dir.file("out"), ["--dp", "2", "--enable-expert-parallel"])
        let (status, text) = try base.forwardCheckText(dir.file("out"), source: source)
        #expect(status == 2, "\(text)")
        #expect(text.contains(field) && text.contains("'\(value)'"), "\(text)")
    }
}
