import Foundation
import Testing

@testable import FineShard
@testable import FineShardExecution
@testable import FineShardPlanning
@testable import FineShardVerification

/// Teeth of the MoE forward check (issue 13, item 6): output folders whose manifest hashes all match
/// — written from a deliberately wrong plan, or altered with the hashes rewritten — so that only the
/// numbers can tell. Each makes `forward-check` fail naming the rank and the tensor.
@Suite("forward-check MoE teeth")
struct ForwardCheckMoETeethTests {
    static let fixture = ForwardCheckMoETests.fixture
    static let fp8 = Environment.root + "/fixtures/tiny-deepseek-v3-fp8"
    let base = ForwardCheckTests()
    let mutation = VerifyMutationTests()

    /// Shards `source` with `parallel`, every rule passed through `mutate` first: the executor writes
    /// what the wrong plan says and a manifest whose hashes match it.
    func shardMutated(_ source: String, _ out: String, _ parallel: ParallelConfig, _ mutate: (inout TensorRule) -> Void) throws {
        let checkpoint = try Checkpoint.open(source)
        let plan = try ShardPlan.make(checkpoint, parallel: parallel)
        let rules = plan.rules.map { rule -> TensorRule in
            var r = rule
            mutate(&r)
            return r
        }
        #expect(rules != plan.rules, "the mutation changed no rule")
        let wrong = ShardPlan(
            parallel: plan.parallel, topology: plan.topology, model: plan.model, sources: plan.sources, rules: rules, unknown: plan.unknown,
            warnings: plan.warnings, notes: plan.notes)
        var options = ShardOptions(output: out)
        options.sync = false
        _ = try ShardExecutor(checkpoint: checkpoint, plan: wrong, options: options).run()
    }

    /// The experts of `layer` that the clean layout's tokens pick (`--seed 0`), so a tooth hits one in use.
    func usedExperts(_ source: String, _ arguments: [String], layer: Int) throws -> [Int] {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        try base.shard(source, dir.file("clean"), arguments)
        let (status, report, stderr) = try base.forwardCheck(dir.file("clean"), source: source)
        #expect(status == 0, "\(stderr)")
        let routing = try #require(report).ranks.flatMap { $0.routing ?? [] }
        return Set(routing.filter { $0.layer == layer }.flatMap(\.experts)).sorted()
    }

    /// forward-check exits 1 and names `rank` and `tensor` (a layout error found before any number).
    func expectLayoutError(
        _ out: String, source: String, rank: Int, tensor: String, sourceLocation: SourceLocation = #_sourceLocation
    )
        throws
    {
        let (status, text) = try base.forwardCheckText(out, source: source)
        #expect(status == 1, "\(text)", sourceLocation: sourceLocation)
        #expect(text.contains("rank \(rank), tensor '\(tensor)'"), "\(text)", sourceLocation: sourceLocation)
    }

    /// forward-check exits 1 and its first differences name exactly `ranks`, each with `tensor`
    /// (`{rank}` in it is the rank's own expert or name), in text and JSON.
    @discardableResult
    func expectFirstDifference(
        _ out: String, source: String, ranks: Set<Int>, tensor: (Int) -> String, _ arguments: [String] = [],
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> ForwardCheckReport {
        let (status, report, stderr) = try base.forwardCheck(out, source: source, arguments)
        #expect(status == 1, "\(stderr)", sourceLocation: sourceLocation)
        let r = try #require(report, sourceLocation: sourceLocation)
        #expect(!r.ok && !r.firstDifferences.isEmpty, sourceLocation: sourceLocation)
        #expect(Set(r.firstDifferences.map(\.rank)) == ranks, "\(r.firstDifferences.map(\.description))", sourceLocation: sourceLocation)
        for d in r.firstDifferences {
            #expect(d.tensors.contains(tensor(d.rank)), "\(d.description)", sourceLocation: sourceLocation)
        }
        let (_, text) = try base.forwardCheckText(out, source: source, arguments)
        for rank in ranks {
            #expect(
                text.contains("FIRST DIFFERENCE: rank \(rank), layer") && text.contains("'\(tensor(rank))'"), "\(text)",
                sourceLocation: sourceLocation)
        }
        return r
    }

    func verifySourcePasses(_ out: String, source: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let result = try run(fineshardBinary, ["verify", out, "--source", source, "--quiet"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)", sourceLocation: sourceLocation)
    }

    static let ep4 = ParallelConfig(dp: 4, expertParallel: true)

    @Test("an expert on the wrong EP rank fails naming the rank vLLM's expert map gives it and the tensor")
    func expertOnWrongRank() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        // DP 4 + EP over 8 experts: rank r owns experts 2r and 2r + 1.
        let expert = try #require(try usedExperts(Self.fixture, ["--dp", "4", "--enable-expert-parallel"], layer: 1).first)
        let owner = expert / 2
        let moved = "model.layers.1.mlp.experts.\(expert)."
        try shardMutated(Self.fixture, dir.file("out"), Self.ep4) { rule in
            if rule.source.name.hasPrefix(moved) { rule.placement = .owned(rank: (owner + 1) % 4) }
        }
        // Every byte is where the manifest says: reassembly cannot tell.
        try verifySourcePasses(dir.file("out"), source: Self.fixture)
        try expectLayoutError(dir.file("out"), source: Self.fixture, rank: owner, tensor: moved + "gate_proj.weight")
    }

    @Test("two experts' down_proj swapped fail naming both experts' ranks and down_proj tensors")
    func downProjSwapped() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let used = try usedExperts(Self.fixture, ["--dp", "4", "--enable-expert-parallel"], layer: 2)
        // One used expert of the first owner and one of the last, on different ranks.
        let (a, b) = (try #require(used.first), try #require(used.last))
        #expect(a / 2 != b / 2)
        let (na, nb) = ["model.layers.2.mlp.experts.\(a).down_proj.weight", "model.layers.2.mlp.experts.\(b).down_proj.weight"].pair
        try shardMutated(Self.fixture, dir.file("out"), Self.ep4) { rule in
            if rule.source.name == na { rule.source.name = nb } else if rule.source.name == nb { rule.source.name = na }
        }
        try verifySourcePasses(dir.file("out"), source: Self.fixture)
        try expectFirstDifference(dir.file("out"), source: Self.fixture, ranks: [a / 2, b / 2]) { $0 == a / 2 ? na : nb }
    }

    @Test("e_score_correction_bias zeroed on one rank fails naming that rank's routing and the bias")
    func correctionBiasZeroed() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        try base.shard(Self.fixture, out, ["--dp", "2", "--enable-expert-parallel"])
        let bias = "model.layers.1.mlp.gate.e_score_correction_bias"
        try mutation.mutateTensor(out: out, file: base.file(1), tensor: bias) { [UInt8](repeating: 0, count: $0.count) }
        try mutation.expectHashCheckPasses(out)
        let r = try expectFirstDifference(out, source: Self.fixture, ranks: [1], tensor: { _ in bias })
        #expect(r.firstDifferences.allSatisfy { $0.module.hasPrefix("routing") && $0.layer == 1 })
        #expect((r.ranks[1].routingDifferences ?? 0) > 0 && r.ranks[0].routingDifferences == 0)
    }

    @Test("a shared expert split over the MLP group where it must be whole fails naming the rank and tensor")
    func sharedExpertSplit() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        // DP 4 (TP 1) with MLP TP 2: DeepSeek's shared experts are on the global TP group, whole here.
        let parallel = ParallelConfig(dp: 4, expertParallel: true, finegrained: FineGrainedConfig(mlp: 2))
        try shardMutated(Self.fixture, dir.file("out"), parallel) { rule in
            guard [.sharedGate, .sharedUp, .sharedDown].contains(rule.role.kind), rule.role.parameter == .weight else { return }
            rule.placement = .split(Split(dim: rule.role.kind == .sharedDown ? 1 : 0, group: .fineGrained(.mlp), scheme: .even))
        }
        try expectLayoutError(dir.file("out"), source: Self.fixture, rank: 0, tensor: "model.layers.1.mlp.shared_experts.gate_proj.weight")
    }

    @Test("kv_b_proj heads on the wrong TP rank fail the TP group naming kv_b_proj")
    func kvBHeadsSwapped() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        try base.shard(Self.fixture, out, ["--dp", "1", "--tp", "2", "--enable-expert-parallel"])
        let tensor = "model.layers.1.self_attn.kv_b_proj.weight"
        let (h0, h1) = (try base.tensorBytes(out, base.file(0), tensor), try base.tensorBytes(out, base.file(1), tensor))
        try mutation.mutateTensor(out: out, file: base.file(0), tensor: tensor) { _ in h1 }
        try mutation.mutateTensor(out: out, file: base.file(1), tensor: tensor) { _ in h0 }
        try mutation.expectHashCheckPasses(out)
        let r = try expectFirstDifference(out, source: Self.fixture, ranks: [0, 1], tensor: { _ in tensor })
        #expect(r.firstDifferences.allSatisfy { $0.layer == 1 && $0.module == "key/value projection" })
    }

    @Test("FP8 scale blocks shifted by one block fail naming the rank and the weight_scale_inv")
    func fp8ScaleBlocksShifted() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        try base.shard(Self.fp8, out, ["--dp", "1", "--tp", "2", "--enable-expert-parallel"])
        // Rank 1's kv_b_proj is [64, 32] in 16 × 16 blocks: scales [4, 2] float32, 8 bytes a block row.
        let scale = "model.layers.2.self_attn.kv_b_proj.weight_scale_inv"
        try mutation.mutateTensor(out: out, file: base.file(1), tensor: scale) { b in Array(b[8...] + b[..<8]) }
        try mutation.expectHashCheckPasses(out)
        try expectFirstDifference(out, source: Self.fp8, ranks: [1], tensor: { _ in scale })
    }

    @Test("MLP TP applied to a MoE layer's experts fails naming the rank and the expert tensor")
    func mlpTPOnExperts() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        // Without EP the experts are split over all DP × TP = 4 ranks; MLP TP 2 would cut them in halves.
        let parallel = ParallelConfig(dp: 4, finegrained: FineGrainedConfig(mlp: 2))
        try shardMutated(Self.fixture, dir.file("out"), parallel) { rule in
            guard [.expertGate, .expertUp, .expertDown].contains(rule.role.kind), case .split(var split) = rule.placement else { return }
            split.group = .fineGrained(.mlp)
            rule.placement = .split(split)
        }
        try verifySourcePasses(dir.file("out"), source: Self.fixture)
        let used = try #require(try usedExperts(Self.fixture, ["--dp", "4"], layer: 1).first)
        try expectLayoutError(dir.file("out"), source: Self.fixture, rank: 0, tensor: "model.layers.1.mlp.experts.\(used).gate_proj.weight")
    }
}

extension Array {
    /// The two elements of a two-element array.
    fileprivate var pair: (Element, Element) { (self[0], self[1]) }
}
