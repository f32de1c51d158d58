import Foundation
import Testing

@testable import FineShard
@testable import FineShardModel

/// `--layout vllm` for MoE models: the names and per-rank shapes of vLLM 0.32's own classes, as
/// scripts/vllm/model_params.py read them from the installed vLLM (TP 1 / 2, with and without EP), and
/// the pieces that stack routed experts into `w13_weight` / `w2_weight`.
@Suite struct VLLMMoELayoutTests {
    /// Every output name and shape of `rank`.
    func shapes(_ plan: ShardPlan, rank: Int) -> [String: [Int]] {
        Dictionary(uniqueKeysWithValues: plan.rank(rank).tensors.map { ($0.name, $0.shape) })
    }

    /// The source rows/columns piece of `source` in stacked tensor `t`: (slot, region, at).
    func piece(_ t: PlannedTensor, _ source: String) -> Piece? { t.pieces.first { $0.source == source } }

    @Test(arguments: [(1, false), (2, false), (2, true)])
    func qwen3MoEExpertsStackIntoW13AndW2WithVLLMsRouterName(tp: Int, ep: Bool) throws {
        let shape = MoEShape(kind: .qwen3, heads: 4, kvHeads: 2, mlpOnly: [0])
        let plan = try makePlan(shape.tensors, shape.config, ParallelConfig(dp: 1, tp: tp, expertParallel: ep, layout: .vllm))
        let (e, i, h) = (shape.experts, shape.moeIntermediate, shape.hidden)
        let local = ep ? e / tp : e
        let width = ep ? i : i / tp
        for r in 0..<tp {
            let s = shapes(plan, rank: r)
            let p = "model.layers.1.mlp."
            #expect(s[p + "experts.routed_experts.w13_weight"] == [local, 2 * width, h])
            #expect(s[p + "experts.routed_experts.w2_weight"] == [local, h, width])
            #expect(s[p + "experts.gate.weight"] == [e, h])
            #expect(s[p + "gate.weight"] == nil && s[p + "experts.0.gate_proj.weight"] == nil)
            #expect(s["model.layers.0.mlp.gate_up_proj.weight"] == [2 * shape.intermediate / tp, h])
            #expect(s["model.layers.1.self_attn.qkv_proj.weight"] == [(4 + 2 * 2) * shape.headDim / tp, h])
            #expect(s["model.layers.1.self_attn.attn._k_scale"] == [])
            // Slot k of rank r is expert r·local + k (EP, vLLM's linear map) or expert k cut r of tp.
            let w13 = try #require(plan.rank(r).tensors.first { $0.name == p + "experts.routed_experts.w13_weight" })
            let w2 = try #require(plan.rank(r).tensors.first { $0.name == p + "experts.routed_experts.w2_weight" })
            #expect(w13.pieces.count == 2 * local && w2.pieces.count == local)
            for k in 0..<local {
                let expert = ep ? r * local + k : k
                let rows = ep ? 0..<i : r * width..<(r + 1) * width
                let gate = try #require(piece(w13, p + "experts.\(expert).gate_proj.weight"))
                let up = try #require(piece(w13, p + "experts.\(expert).up_proj.weight"))
                let down = try #require(piece(w2, p + "experts.\(expert).down_proj.weight"))
                #expect(gate.region == Region([rows, 0..<h]) && gate.at == [k, 0, 0])
                #expect(up.region == Region([rows, 0..<h]) && up.at == [k, width, 0])
                #expect(down.region == Region([0..<h, rows]) && down.at == [k, 0, 0])
                #expect(up.box == Region([k..<k + 1, width..<2 * width, 0..<h]))
            }
        }
    }

    @Test func qwen2MoESharedExpertIsOneFusedMLPInsideFusedMoEAndItsRouterKeepsItsName() throws {
        let shape = MoEShape(kind: .qwen2, heads: 4, kvHeads: 2, mlpOnly: [0])
        // DP 2 with MLP TP 2: vllm-ascend cuts Qwen2-MoE's shared expert over the MLP group.
        let plan = try makePlan(
            shape.tensors, shape.config, ParallelConfig(dp: 2, tp: 1, finegrained: FineGrainedConfig(mlp: 2), layout: .vllm))
        let (s, h) = (shape.sharedIntermediate, shape.hidden)
        for r in 0..<2 {
            let names = shapes(plan, rank: r)
            let p = "model.layers.2.mlp."
            #expect(names[p + "experts._shared_experts._layer.gate_up_proj.weight"] == [2 * s / 2, h])
            #expect(names[p + "experts._shared_experts._layer.down_proj.weight"] == [h, s / 2])
            #expect(names[p + "experts._shared_experts._layer.expert_gate.weight"] == [1, h])
            #expect(names[p + "gate.weight"] == [shape.experts, h])
            #expect(names[p + "experts.routed_experts.w13_weight"] == [shape.experts, 2 * shape.moeIntermediate / 2, h])
            #expect(names["model.layers.2.self_attn.qkv_proj.bias"] == [(4 + 2 * 2) * shape.headDim])
        }
    }

    @Test func mixtralExpertsStackUnderBlockSparseMoEAndItsRouterKeepsItsName() throws {
        let shape = MoEShape(kind: .mixtral, heads: 4, kvHeads: 2, intermediate: 8)
        let plan = try makePlan(shape.tensors, shape.config, ParallelConfig(dp: 2, tp: 1, expertParallel: true, layout: .vllm))
        let names = shapes(plan, rank: 1)
        let p = "model.layers.0.block_sparse_moe."
        #expect(names[p + "experts.routed_experts.w13_weight"] == [2, 16, shape.hidden])
        #expect(names[p + "experts.routed_experts.w2_weight"] == [2, shape.hidden, 8])
        #expect(names[p + "gate.weight"] == [4, shape.hidden])
        let w2 = try #require(plan.rank(1).tensors.first { $0.name == p + "experts.routed_experts.w2_weight" })
        #expect(w2.pieces.map(\.source) == [p + "experts.2.w2.weight", p + "experts.3.w2.weight"])
    }

    @Test(arguments: [false, true])
    func deepSeekMLAFusesQAAndKVAAndMovesItsProjectionsUnderMLAAttention(ep: Bool) throws {
        let shape = DeepSeekShape()
        let sources = shape.tensors.filter { !$0.name.hasPrefix("model.layers.2.") }
        var config = shape.config
        config.numNextnPredictLayers = 0
        let plan = try makePlan(sources, config, ParallelConfig(dp: 1, tp: 2, expertParallel: ep, layout: .vllm))
        let h = shape.hidden
        for r in 0..<2 {
            let names = shapes(plan, rank: r)
            let a = "model.layers.1.self_attn."
            #expect(names[a + "fused_qkv_a_proj.weight"] == [shape.qLoraRank + shape.kvLoraRank + shape.rope, h])
            #expect(names[a + "q_a_proj.weight"] == nil && names[a + "kv_a_proj_with_mqa.weight"] == nil)
            #expect(names[a + "mla_attn.q_a_layernorm.weight"] == [shape.qLoraRank])
            #expect(names[a + "mla_attn.q_b_proj.weight"] == [shape.heads / 2 * (shape.nope + shape.rope), shape.qLoraRank])
            #expect(names[a + "kv_b_proj.weight"] == [shape.heads / 2 * (shape.nope + shape.vHeadDim), shape.kvLoraRank])
            #expect(names[a + "kv_a_layernorm.weight"] == [shape.kvLoraRank])
            #expect(names[a + "mla_attn.o_proj.weight"] == [h, shape.heads / 2 * shape.vHeadDim])
            for scale in ["_k_scale", "_v_scale", "_q_scale", "_prob_scale"] {
                #expect(names[a + "mla_attn.mla_attn." + scale] == [])
            }
            let m = "model.layers.1.mlp."
            #expect(names[m + "experts.gate.weight"] == [shape.experts, h])
            #expect(names[m + "experts.gate.e_score_correction_bias"] == [shape.experts])
            #expect(names[m + "experts._shared_experts._layer.gate_up_proj.weight"] == [2 * shape.moeIntermediate / 2, h])
            #expect(names[m + "experts._shared_experts._layer.down_proj.weight"] == [h, shape.moeIntermediate / 2])
            let local = ep ? shape.experts / 2 : shape.experts
            let width = ep ? shape.moeIntermediate : shape.moeIntermediate / 2
            #expect(names[m + "experts.routed_experts.w13_weight"] == [local, 2 * width, h])
            #expect(names[m + "experts.routed_experts.w2_weight"] == [local, h, width])
            #expect(names["model.layers.0.mlp.gate_up_proj.weight"] == [2 * shape.intermediate / 2, h])
        }
        let fused = try #require(plan.rank(0).tensors.first { $0.name == "model.layers.1.self_attn.fused_qkv_a_proj.weight" })
        #expect(
            fused.pieces.map(\.source) == [
                "model.layers.1.self_attn.q_a_proj.weight", "model.layers.1.self_attn.kv_a_proj_with_mqa.weight",
            ])
        #expect(fused.pieces.map(\.at) == [[0, 0], [shape.qLoraRank, 0]])
    }

    @Test func w8a8ExpertScalesAndOffsetsStackLikeTheirWeights() throws {
        let shape = MoEShape(kind: .qwen3, heads: 4, kvHeads: 2, mlpOnly: [0], w8a8: true)
        // vllm-ascend's W8A8 dynamic MoE method has no per-tensor activation parameters.
        let sources = shape.tensors.filter { !$0.name.hasSuffix(".input_scale") }
        let plan = try makePlan(sources, shape.config, ParallelConfig(dp: 1, tp: 2, layout: .vllm))
        let names = shapes(plan, rank: 1)
        let p = "model.layers.1.mlp.experts.routed_experts."
        let (e, i, h) = (shape.experts, shape.moeIntermediate, shape.hidden)
        #expect(names[p + "w13_weight"] == [e, i, h])
        #expect(names[p + "w13_weight_scale"] == [e, i, 1])
        #expect(names[p + "w13_weight_offset"] == [e, i, 1])
        #expect(names[p + "w2_weight_scale"] == [e, h, 1])
        #expect(names[p + "w2_weight_offset"] == [e, h, 1])
        let scale = try #require(plan.rank(1).tensors.first { $0.name == p + "w13_weight_scale" })
        let up = try #require(piece(scale, "model.layers.1.mlp.experts.3.up_proj.weight_scale"))
        #expect(up.region == Region([i / 2..<i, 0..<1]) && up.at == [3, i / 2, 0])
    }

    @Test func aRoutedExpertsPerTensorParameterIsBadInputInTheVLLMLayout() throws {
        let shape = MoEShape(kind: .qwen3, heads: 4, kvHeads: 2, w8a8: true)
        let error = try #require(throws: PlanError.self) {
            try makePlan(shape.tensors, shape.config, ParallelConfig(dp: 1, tp: 2, layout: .vllm))
        }
        #expect(error.description.contains("input_scale") && error.description.contains("--layout hf"), "\(error)")
    }

    /// DeepSeekShape with FP8 block scales on every 2-D weight of layer 1 (blocks of `block`).
    func fp8DeepSeek(block: Int, qLoraRank: Int) -> ([TensorInfo], ModelConfig) {
        var shape = DeepSeekShape()
        shape.qLoraRank = qLoraRank
        var config = shape.config
        config.numNextnPredictLayers = 0
        config.quantizationConfig = .init(quantMethod: "fp8", weightBlockSize: [block, block])
        var out: [TensorInfo] = []
        for t in shape.tensors where !t.name.hasPrefix("model.layers.2.") {
            let quantized = t.name.hasPrefix("model.layers.1.") && t.shape.count == 2 && !t.name.contains("mlp.gate.")
            out.append(quantized ? source(t.name, t.shape, .f8e4m3) : t)
            if quantized { out.append(source(t.name + "_scale_inv", t.shape.map { ($0 + block - 1) / block }, .f32)) }
        }
        return (out, config)
    }

    @Test func fp8BlockScalesOfExpertsStackInBlockUnits() throws {
        let (sources, config) = fp8DeepSeek(block: 4, qLoraRank: 8)
        let plan = try makePlan(sources, config, ParallelConfig(dp: 1, tp: 2, layout: .vllm))
        let names = shapes(plan, rank: 1)
        let m = "model.layers.1.mlp.experts."
        // moe_intermediate 8 over TP 2 = 4 rows per rank = one block; hidden 16 = 4 blocks.
        #expect(names[m + "routed_experts.w13_weight_scale_inv"] == [8, 2, 4])
        #expect(names[m + "routed_experts.w2_weight_scale_inv"] == [8, 4, 1])
        #expect(names[m + "_shared_experts._layer.gate_up_proj.weight_scale_inv"] == [2, 4])
        // q_a (8 rows = 2 blocks) then kv_a (8 + 2 rows = 3 blocks).
        #expect(names["model.layers.1.self_attn.fused_qkv_a_proj.weight_scale_inv"] == [5, 4])
    }

    @Test func fusingFP8BlockScalesOfAPartThatEndsInsideABlockIsBadInput() throws {
        let (sources, config) = fp8DeepSeek(block: 4, qLoraRank: 6)
        let error = try #require(throws: PlanError.self) {
            try makePlan(sources, config, ParallelConfig(dp: 1, tp: 1, layout: .vllm))
        }
        #expect(error.description.contains("q_a_proj") && error.description.contains("fused_qkv_a_proj"), "\(error)")
    }

    @Test func theVLLMLayoutIsRefusedForAFamilyVLLMsNamesAreNotKnownFor() throws {
        let (tensors, config) = gpt2Model()
        let error = try #require(throws: PlanError.self) { try makePlan(tensors, config, ParallelConfig(dp: 1, tp: 1, layout: .vllm)) }
        #expect(error.description.contains("--layout hf"), "\(error)")
    }

    /// The committed tiny DeepSeek-V3 (bf16) sharded with stacked experts: `verify --source` rebuilds
    /// every source tensor from the stacked pieces, and `merge` gives every source tensor back byte for byte.
    @Test(arguments: [
        ["--dp", "1", "--tp", "2"], ["--dp", "1", "--tp", "2", "--enable-expert-parallel"], ["--dp", "2", "--enable-expert-parallel"],
    ])
    func stackedExpertsVerifyAgainstTheSourceAndMergeBackByteForByte(arguments: [String]) throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let fixture = Environment.root + "/fixtures/tiny-deepseek-v3"
        let out = dir.file("out")
        let shard = try run(fineshardBinary, ["shard", fixture, "-o", out, "--layout", "vllm"] + arguments)
        #expect(shard.status == 0, "\(shard.stderr)")
        let verify = try run(fineshardBinary, ["verify", out, "--source", fixture])
        #expect(verify.status == 0, "\(verify.stdout) \(verify.stderr)")
        let merged = dir.file("merged")
        let merge = try run(fineshardBinary, ["merge", out, "-o", merged])
        #expect(merge.status == 0, "\(merge.stderr)")
        let original = try Checkpoint.open(fixture)
        let back = try Checkpoint.open(merged)
        #expect(back.tensors.map(\.name).sorted() == original.tensors.map(\.name).sorted())
        for t in original.tensors { #expect(try readAll(back, t.name) == readAll(original, t.name), "\(t.name)") }
    }
}
