import Foundation
import Testing

@testable import FineShard
@testable import FineShardModel
@testable import FineShardPlanning

/// A tiny Qwen2-MoE, Qwen3-MoE or Mixtral checkpoint with exactly the tensor names and config.json
/// keys that transformers 5.19 `save_pretrained` writes for a random `Qwen2MoeForCausalLM`,
/// `Qwen3MoeForCausalLM` and `MixtralForCausalLM` (one tensor per expert; Qwen3-MoE's and Mixtral's
/// expert count as `num_local_experts`, Qwen2-MoE's as `num_experts`).
struct MoEShape: CustomStringConvertible {
    enum Kind: String { case qwen2 = "Qwen2-MoE", qwen3 = "Qwen3-MoE", mixtral = "Mixtral" }

    var kind: Kind
    var hidden = 16
    var heads = 2
    var kvHeads = 1
    var headDim = 8
    var vocab = 64
    var layers = 3
    /// The dense MLP width (Mixtral: the expert width).
    var intermediate = 24
    var moeIntermediate = 8
    var sharedIntermediate = 12
    var experts = 4
    var perToken = 2
    var sparseStep = 1
    var mlpOnly: [Int] = []
    /// W8A8 per-channel (`weight_scale`, `weight_offset`) and per-tensor (`input_scale`) parameters on
    /// every expert and shared-expert projection.
    var w8a8 = false

    var description: String { "\(kind.rawValue), \(experts) experts, layers \(layers), sparse step \(sparseStep), mlp_only \(mlpOnly)" }

    var expertWidth: Int { kind == .mixtral ? intermediate : moeIntermediate }

    func isMoE(_ layer: Int) -> Bool { kind == .mixtral || (!mlpOnly.contains(layer) && (layer + 1) % sparseStep == 0) }

    var configJSON: String {
        let common = """
            "hidden_size": \(hidden), "intermediate_size": \(intermediate), "num_attention_heads": \(heads),
            "num_key_value_heads": \(kvHeads), "head_dim": \(headDim), "num_hidden_layers": \(layers), "vocab_size": \(vocab),
            "num_experts_per_tok": \(perToken), "tie_word_embeddings": false, "hidden_act": "silu",
            "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"}, "transformers_version": "5.19.0"
            """
        switch kind {
        case .qwen3:
            return """
                {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", \(common),
                 "num_local_experts": \(experts), "moe_intermediate_size": \(moeIntermediate), "decoder_sparse_step": \(sparseStep),
                 "mlp_only_layers": \(mlpOnly), "norm_topk_prob": false}
                """
        case .qwen2:
            return """
                {"architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe", \(common), "qkv_bias": true,
                 "num_experts": \(experts), "moe_intermediate_size": \(moeIntermediate), "decoder_sparse_step": \(sparseStep),
                 "shared_expert_intermediate_size": \(sharedIntermediate), "mlp_only_layers": \(mlpOnly), "norm_topk_prob": false}
                """
        case .mixtral:
            return """
                {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", \(common), "num_local_experts": \(experts)}
                """
        }
    }

    var config: ModelConfig { try! ModelConfig.decode(Data(configJSON.utf8)) }

    /// A projection's weight, plus its W8A8 parameters for expert and shared-expert projections.
    func linear(_ name: String, _ rows: Int, _ cols: Int, quantized: Bool = false) -> [TensorInfo] {
        guard w8a8, quantized else { return [source(name + ".weight", [rows, cols])] }
        return [
            source(name + ".weight", [rows, cols], .i8), source(name + ".weight_scale", [rows, 1], .f32),
            source(name + ".weight_offset", [rows, 1], .f32), source(name + ".input_scale", [1], .f32),
        ]
    }

    var tensors: [TensorInfo] {
        var out = [
            source("model.embed_tokens.weight", [vocab, hidden]), source("model.norm.weight", [hidden]),
            source("lm_head.weight", [vocab, hidden]),
        ]
        for l in 0..<layers {
            let p = "model.layers.\(l)."
            out += [source(p + "input_layernorm.weight", [hidden]), source(p + "post_attention_layernorm.weight", [hidden])]
            out += linear(p + "self_attn.q_proj", heads * headDim, hidden) + linear(p + "self_attn.k_proj", kvHeads * headDim, hidden)
            out += linear(p + "self_attn.v_proj", kvHeads * headDim, hidden) + linear(p + "self_attn.o_proj", hidden, heads * headDim)
            if kind == .qwen2 {
                out += [
                    source(p + "self_attn.q_proj.bias", [heads * headDim]), source(p + "self_attn.k_proj.bias", [kvHeads * headDim]),
                    source(p + "self_attn.v_proj.bias", [kvHeads * headDim]),
                ]
            }
            if kind == .qwen3 {
                out += [source(p + "self_attn.q_norm.weight", [headDim]), source(p + "self_attn.k_norm.weight", [headDim])]
            }
            guard isMoE(l) else {
                out += linear(p + "mlp.gate_proj", intermediate, hidden) + linear(p + "mlp.up_proj", intermediate, hidden)
                out += linear(p + "mlp.down_proj", hidden, intermediate)
                continue
            }
            let moe = kind == .mixtral ? p + "block_sparse_moe." : p + "mlp."
            out.append(source(moe + "gate.weight", [experts, hidden]))
            for e in 0..<experts {
                let (g, u, d) = kind == .mixtral ? ("w1", "w3", "w2") : ("gate_proj", "up_proj", "down_proj")
                out += linear(moe + "experts.\(e).\(g)", expertWidth, hidden, quantized: true)
                out += linear(moe + "experts.\(e).\(u)", expertWidth, hidden, quantized: true)
                out += linear(moe + "experts.\(e).\(d)", hidden, expertWidth, quantized: true)
            }
            if kind == .qwen2 {
                out += linear(moe + "shared_expert.gate_proj", sharedIntermediate, hidden, quantized: true)
                out += linear(moe + "shared_expert.up_proj", sharedIntermediate, hidden, quantized: true)
                out += linear(moe + "shared_expert.down_proj", hidden, sharedIntermediate, quantized: true)
                out.append(source(moe + "shared_expert_gate.weight", [1, hidden]))
            }
        }
        return out
    }

    func recognize() throws -> Model { try Model.recognize(tensors, config: config) }
}

@Suite struct MoERoleTests {
    @Test func qwen3MoENamesGiveRoutedExpertRouterAndDenseLayerRoles() throws {
        let shape = MoEShape(kind: .qwen3, sparseStep: 2, mlpOnly: [2])
        let model = try shape.recognize()
        #expect(model.unknown.isEmpty, "\(model.unknown)")
        #expect(model.facts.family == .llama)
        #expect(model.facts.architecture == "Qwen3MoeForCausalLM")
        #expect(model.roles["model.layers.1.mlp.experts.3.gate_proj.weight"] == TensorRole(.expertGate, layer: 1, expert: 3))
        #expect(model.roles["model.layers.1.mlp.experts.0.up_proj.weight"] == TensorRole(.expertUp, layer: 1, expert: 0))
        #expect(model.roles["model.layers.1.mlp.experts.2.down_proj.weight"] == TensorRole(.expertDown, layer: 1, expert: 2))
        #expect(model.roles["model.layers.1.mlp.gate.weight"] == TensorRole(.router, layer: 1))
        #expect(model.roles["model.layers.0.mlp.gate_proj.weight"] == TensorRole(.gate, layer: 0))
        #expect(model.roles["model.layers.2.mlp.down_proj.weight"] == TensorRole(.down, layer: 2))
        #expect(model.roles["model.layers.1.self_attn.q_norm.weight"] == TensorRole(.norm, layer: 1))
        let facts = model.facts
        #expect(facts.nRoutedExperts == 4)
        #expect(facts.numExpertsPerTok == 2)
        #expect(facts.moeIntermediateSize == 8)
        #expect(facts.intermediateSize == 24)
        #expect(facts.sharedExpertIntermediateSize == nil)
        #expect(facts.moeLayers == [1])
        #expect(facts.normTopkProb == false)
        #expect(facts.isMoELayer(1) && !facts.isMoELayer(0) && !facts.isMoELayer(2))
    }

    @Test func qwen2MoESharedExpertAndItsGateGetTheirOwnRoles() throws {
        let shape = MoEShape(kind: .qwen2, mlpOnly: [1])
        let model = try shape.recognize()
        #expect(model.unknown.isEmpty, "\(model.unknown)")
        #expect(model.roles["model.layers.0.mlp.shared_expert.gate_proj.weight"] == TensorRole(.sharedGate, layer: 0))
        #expect(model.roles["model.layers.0.mlp.shared_expert.up_proj.weight"] == TensorRole(.sharedUp, layer: 0))
        #expect(model.roles["model.layers.2.mlp.shared_expert.down_proj.weight"] == TensorRole(.sharedDown, layer: 2))
        #expect(model.roles["model.layers.2.mlp.shared_expert_gate.weight"] == TensorRole(.sharedExpertGate, layer: 2))
        #expect(model.roles["model.layers.0.mlp.experts.1.down_proj.weight"] == TensorRole(.expertDown, layer: 0, expert: 1))
        #expect(model.roles["model.layers.1.mlp.up_proj.weight"] == TensorRole(.up, layer: 1))
        #expect(model.roles["model.layers.0.self_attn.k_proj.bias"] == TensorRole(.k, .bias, layer: 0))
        #expect(model.facts.nRoutedExperts == 4)
        #expect(model.facts.sharedExpertIntermediateSize == 12)
        #expect(model.facts.moeLayers == [0, 2])
    }

    @Test func mixtralW1W3W2AreTheExpertsGateUpAndDown() throws {
        let model = try MoEShape(kind: .mixtral, intermediate: 8).recognize()
        #expect(model.unknown.isEmpty, "\(model.unknown)")
        let p = "model.layers.2.block_sparse_moe."
        #expect(model.roles[p + "experts.3.w1.weight"] == TensorRole(.expertGate, layer: 2, expert: 3))
        #expect(model.roles[p + "experts.3.w3.weight"] == TensorRole(.expertUp, layer: 2, expert: 3))
        #expect(model.roles[p + "experts.3.w2.weight"] == TensorRole(.expertDown, layer: 2, expert: 3))
        #expect(model.roles[p + "gate.weight"] == TensorRole(.router, layer: 2))
        #expect(model.facts.nRoutedExperts == 4)
        #expect(model.facts.moeIntermediateSize == 8)
        #expect(model.facts.moeLayers == [0, 1, 2])
        #expect(model.facts.normTopkProb == true)
        #expect(model.facts.numExpertsPerTok == 2)
    }

    @Test func expertTensorsInALayerTheConfigMakesDenseAreRejectedNamingTheLayer() throws {
        let written = MoEShape(kind: .qwen3)
        var config = written.config
        config.mlpOnlyLayers = [1]
        let error = try #require(throws: ModelError.self) { try Model.recognize(written.tensors, config: config) }
        #expect(error.description.contains("layer 1"), "\(error)")
        #expect(error.description.contains("mlp_only_layers"), "\(error)")
        #expect(error.exitCode == 2)
    }

    @Test func anExpertIndexBeyondTheConfiguredCountIsRejectedNamingTheTensor() throws {
        let shape = MoEShape(kind: .mixtral)
        var config = shape.config
        config.numLocalExperts = 3
        let error = try #require(throws: ModelError.self) { try Model.recognize(shape.tensors, config: config) }
        #expect(error.description.contains("experts.3.w"), "\(error)")
    }

    @Test func withoutConfigTheExpertsAndMoELayersComeFromTheNames() throws {
        let shape = MoEShape(kind: .qwen2, sparseStep: 2)
        let model = try Model.recognize(shape.tensors, config: nil)
        #expect(model.facts.family == .llama)
        #expect(model.facts.nRoutedExperts == 4)
        #expect(model.facts.moeLayers == [1])
        #expect(model.facts.moeIntermediateSize == 8)
        #expect(model.facts.sharedExpertIntermediateSize == 12)
    }

    @Test func theModelTypesAndArchitecturesAreRecognized() throws {
        for (type, arch) in [("qwen2_moe", "Qwen2MoeForCausalLM"), ("qwen3_moe", "Qwen3MoeForCausalLM"), ("mixtral", "MixtralForCausalLM")]
        {
            var byType = ModelConfig()
            byType.modelType = type
            var byArch = ModelConfig()
            byArch.architectures = [arch]
            #expect(try Model.detectFamily(config: byType, names: []) == .llama)
            #expect(try Model.detectFamily(config: byArch, names: []) == .llama)
        }
    }

    @Test func deepSeekFactsNameItsSharedExpertWidthAndMoELayers() throws {
        let shape = DeepSeekShape()
        let model = try Model.recognize(shape.tensors, config: shape.config)
        #expect(model.facts.moeLayers == [1, 2])
        #expect(model.facts.sharedExpertIntermediateSize == shape.moeIntermediate)
        #expect(model.facts.normTopkProb == true)
    }
}

/// vLLM's `determine_expert_map` with its `"linear"` strategy, transcribed from
/// `fused_moe/expert_map_manager.py` (vLLM 0.32): the experts EP rank `rank` holds. vllm-ascend's
/// default expert map (`eplb_utils.init_eplb_config` without EPLB) is this map.
func linearExpertMap(experts: Int, ep: Int, rank: Int) -> Range<Int> {
    let base = experts / ep
    let remainder = experts % ep
    let local = rank < remainder ? base + 1 : base
    let start = rank * base + min(rank, remainder)
    return start..<start + local
}

/// The layer and expert of an expert tensor name (`model.layers.L.<block>.experts.E.…`).
func layerAndExpert(_ name: String) -> (Int, Int)? {
    let parts = name.split(separator: ".")
    guard parts.count > 5, parts[4] == "experts", let l = Int(parts[2]), let e = Int(parts[5]) else { return nil }
    return (l, e)
}

@Suite struct MoEPlacementTests {
    @Test(arguments: [
        (MoEShape.Kind.qwen3, 8, 4, 2), (.qwen3, 16, 2, 2), (.mixtral, 8, 8, 1), (.qwen2, 4, 2, 2), (.qwen2, 60, 4, 3),
        (.mixtral, 8, 1, 4),
    ])
    func expertParallelPutsEachExpertWholeOnTheRankOfVLLMsLinearExpertMap(kind: MoEShape.Kind, experts: Int, dp: Int, tp: Int) throws {
        let shape = MoEShape(kind: kind, heads: 12, kvHeads: 12, headDim: 4, vocab: 192, layers: 2, experts: experts, w8a8: true)
        let tensors = shape.tensors
        let byName = Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, $0) })
        let plan = try makePlan(tensors, shape.config, ParallelConfig(dp: dp, tp: tp, expertParallel: true))
        let ep = dp * tp
        var owners: [String: [Int]] = [:]
        for r in 0..<ep {
            let mine = linearExpertMap(experts: experts, ep: ep, rank: r)
            var held = Set<[Int]>()
            for t in plan.rank(r).tensors {
                guard let (layer, expert) = layerAndExpert(t.name) else { continue }
                held.insert([layer, expert])
                owners[t.name, default: []].append(r)
                // Whole: the rank's tensor is the source tensor, every parameter (weight, scales).
                let source = try #require(byName[t.name])
                #expect(
                    t.shape == source.shape && t.pieces == [piece(t.name, source.shape.map { 0..<$0 }, at: source.shape.map { _ in 0 })])
            }
            let expected = Set((0..<2).filter(shape.isMoE).flatMap { l in mine.map { [l, $0] } })
            #expect(held == expected, "rank \(r) of \(ep): \(kind) \(experts) experts")
        }
        let expertTensors = tensors.filter { layerAndExpert($0.name) != nil }
        #expect(expertTensors.allSatisfy { owners[$0.name]?.count == 1 }, "every expert tensor on exactly one rank")
    }

    @Test(arguments: [
        (MoEShape.Kind.qwen3, 6, 2, 2, "num_experts"), (.mixtral, 8, 3, 1, "num_local_experts"), (.qwen2, 4, 8, 1, "num_experts"),
    ])
    func unevenExpertsOverTheEPRanksAreRefusedNamingBothNumbers(
        kind: MoEShape.Kind, experts: Int, dp: Int, tp: Int, field: String
    ) throws {
        let shape = MoEShape(kind: kind, heads: 4, kvHeads: 4, experts: experts)
        let error = try #require(throws: PlanError.self) {
            try makePlan(shape.tensors, shape.config, ParallelConfig(dp: dp, tp: tp, expertParallel: true))
        }
        #expect(error.exitCode == 2)
        #expect(mentions(error.description, number: experts) && mentions(error.description, number: dp * tp), "\(error)")
        #expect(error.description.contains(field), "\(error)")
        #expect(error.description.contains("not supported"), "\(error)")
    }

    @Test func withoutExpertParallelEveryExpertIsAnMLPSplitOverAllRanks() throws {
        let shape = MoEShape(kind: .qwen3, heads: 4, kvHeads: 4, layers: 1, w8a8: true)
        let plan = try makePlan(shape.tensors, shape.config, ParallelConfig(dp: 2, tp: 2))
        let (h, w) = (shape.hidden, shape.moeIntermediate)
        for r in 0..<4 {
            let rows = r * w / 4..<(r + 1) * w / 4
            for e in [0, 3] {
                let p = "model.layers.0.mlp.experts.\(e)."
                for proj in ["gate_proj", "up_proj"] {
                    #expect(
                        plan.tensor(p + proj + ".weight", rank: r)?.pieces == [piece(p + proj + ".weight", [rows, 0..<h], at: [0, 0])])
                    #expect(
                        plan.tensor(p + proj + ".weight_scale", rank: r)?.pieces == [
                            piece(p + proj + ".weight_scale", [rows, 0..<1], at: [0, 0])
                        ])
                    #expect(plan.tensor(p + proj + ".input_scale", rank: r)?.pieces == [piece(p + proj + ".input_scale", [0..<1], at: [0])])
                }
                #expect(
                    plan.tensor(p + "down_proj.weight", rank: r)?.pieces == [piece(p + "down_proj.weight", [0..<h, rows], at: [0, 0])])
                #expect(
                    plan.tensor(p + "down_proj.weight_offset", rank: r)?.pieces == [
                        piece(p + "down_proj.weight_offset", [0..<h, 0..<1], at: [0, 0])
                    ])
            }
            #expect(plan.tensor("model.layers.0.mlp.gate.weight", rank: r)?.shape == [shape.experts, h])
        }
    }

    @Test func anExpertWidthThatTheRanksDoNotDivideIsRefusedNamingIt() throws {
        let shape = MoEShape(kind: .mixtral, heads: 4, kvHeads: 4, intermediate: 8)
        let error = try #require(throws: PlanError.self) { try makePlan(shape.tensors, shape.config, ParallelConfig(dp: 3, tp: 1)) }
        #expect(error.description.contains("expert intermediate size") && error.description.contains("w1.weight"), "\(error)")
    }

    /// vllm-ascend `is_moe_layer` is false for every Qwen2-MoE layer (it reads DeepSeek's
    /// `first_k_dense_replace`), so `get_parallel_op` cuts both the dense layers' MLP and the MoE
    /// layers' `shared_expert` over the fine-grained MLP group; routers and `shared_expert_gate` stay whole.
    @Test(arguments: [(4, 1), (4, 2), (8, 2)])
    func qwen2MoESharedExpertAndDenseMLPFollowTheFineGrainedMLPGroup(dp: Int, tp: Int) throws {
        let shape = MoEShape(kind: .qwen2, heads: 4, kvHeads: 2, moeIntermediate: 16, mlpOnly: [1], w8a8: true)
        let parallel = ParallelConfig(dp: dp, tp: tp, finegrained: FineGrainedConfig(mlp: 2))
        let plan = try makePlan(shape.tensors, shape.config, parallel)
        let (h, s, i) = (shape.hidden, shape.sharedIntermediate, shape.intermediate)
        for r in 0..<dp * tp {
            let g = (r / tp) % 2
            let shared = "model.layers.0.mlp.shared_expert."
            #expect(
                plan.tensor(shared + "gate_proj.weight", rank: r)?.pieces == [
                    piece(shared + "gate_proj.weight", [g * s / 2..<(g + 1) * s / 2, 0..<h], at: [0, 0])
                ])
            #expect(
                plan.tensor(shared + "up_proj.weight_scale", rank: r)?.pieces == [
                    piece(shared + "up_proj.weight_scale", [g * s / 2..<(g + 1) * s / 2, 0..<1], at: [0, 0])
                ])
            #expect(
                plan.tensor(shared + "down_proj.weight", rank: r)?.pieces == [
                    piece(shared + "down_proj.weight", [0..<h, g * s / 2..<(g + 1) * s / 2], at: [0, 0])
                ])
            #expect(plan.tensor(shared + "down_proj.weight_scale", rank: r)?.shape == [h, 1])
            #expect(plan.tensor("model.layers.2.mlp.shared_expert_gate.weight", rank: r)?.shape == [1, h])
            #expect(plan.tensor("model.layers.2.mlp.gate.weight", rank: r)?.shape == [shape.experts, h])
            let dense = "model.layers.1.mlp."
            #expect(
                plan.tensor(dense + "up_proj.weight", rank: r)?.pieces == [
                    piece(dense + "up_proj.weight", [g * i / 2..<(g + 1) * i / 2, 0..<h], at: [0, 0])
                ])
            #expect(
                plan.tensor(dense + "down_proj.weight", rank: r)?.pieces == [
                    piece(dense + "down_proj.weight", [0..<h, g * i / 2..<(g + 1) * i / 2], at: [0, 0])
                ])
            // Routed experts are never MLP-TP'd: flattened over every rank.
            let w = shape.moeIntermediate
            let n = dp * tp
            if w % n == 0 {
                #expect(plan.tensor("model.layers.0.mlp.experts.1.gate_proj.weight", rank: r)?.shape == [w / n, h])
            }
        }
    }

    @Test func withoutAFineGrainedMLPSizeTheQwen2MoESharedExpertFollowsTheGlobalTP() throws {
        let shape = MoEShape(kind: .qwen2, heads: 4, kvHeads: 2, sharedIntermediate: 12)
        let plan = try makePlan(shape.tensors, shape.config, ParallelConfig(dp: 2, tp: 2))
        for r in 0..<4 {
            let t = r % 2
            let name = "model.layers.1.mlp.shared_expert.gate_proj.weight"
            #expect(plan.tensor(name, rank: r)?.pieces == [piece(name, [t * 6..<(t + 1) * 6, 0..<shape.hidden], at: [0, 0])])
        }
    }

    @Test func deepSeekSharedExpertsFollowTheGlobalTPEvenWithAFineGrainedMLPSize() throws {
        let ds = DeepSeekShape()
        let plan = try makePlan(ds.tensors, ds.config, ParallelConfig(dp: 4, tp: 2, finegrained: FineGrainedConfig(mlp: 4)))
        for r in 0..<8 {
            let t = r % 2
            let name = "model.layers.1.mlp.shared_experts.up_proj.weight"
            let w = ds.moeIntermediate
            #expect(plan.tensor(name, rank: r)?.pieces == [piece(name, [t * w / 2..<(t + 1) * w / 2, 0..<ds.hidden], at: [0, 0])])
        }
    }

    @Test(arguments: [MoEShape.Kind.qwen2, .qwen3])
    func sharedExpertDPWithEPAndTPKeepsSharedExpertsWholeOnEveryRank(kind: MoEShape.Kind) throws {
        let ds = DeepSeekShape()
        let shape = MoEShape(kind: .qwen2, heads: 4, kvHeads: 2)
        let cases: [([TensorInfo], ModelConfig, String)] =
            kind == .qwen2
            ? [(shape.tensors, shape.config, "model.layers.0.mlp.shared_expert.")]
            : [(ds.tensors, ds.config, "model.layers.1.mlp.shared_experts.")]
        let additional = try AdditionalConfig.parse(
            #"{"enable_shared_expert_dp": true, "finegrained_tp_config": {"mlp_tensor_parallel_size": 2}}"#)
        for (tensors, config, prefix) in cases {
            let parallel = ParallelConfig(
                dp: 2, tp: 2, expertParallel: true, finegrained: additional.finegrained,
                enableSharedExpertDP: additional.enableSharedExpertDP)
            let plan = try makePlan(tensors, config, parallel)
            #expect(plan.parallel.enableSharedExpertDP == true)
            let byName = Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, $0) })
            for r in 0..<4 {
                for proj in ["gate_proj", "up_proj", "down_proj"] {
                    #expect(plan.tensor(prefix + proj + ".weight", rank: r)?.shape == byName[prefix + proj + ".weight"]?.shape)
                }
            }
            // vllm-ascend keeps enable_shared_expert_dp only with EP and TP > 1.
            let off = try makePlan(tensors, config, ParallelConfig(dp: 4, tp: 1, expertParallel: true, enableSharedExpertDP: true))
            #expect(off.parallel.enableSharedExpertDP == nil)
            #expect(off.notes.contains { $0.contains("enable_shared_expert_dp") })
        }
    }

    @Test func theOnlyForMoEModelsWarningAppearsOnlyForModelsWithoutExperts() throws {
        let fine = FineGrainedConfig(embedding: 2, lmHead: 2, mlp: 2)
        let warning = "only for MoE models"
        for kind in [MoEShape.Kind.qwen2, .qwen3, .mixtral] {
            let shape = MoEShape(kind: kind, heads: 4, kvHeads: 2, vocab: 128)
            let plan = try makePlan(shape.tensors, shape.config, ParallelConfig(dp: 2, expertParallel: true, finegrained: fine))
            #expect(!plan.warnings.contains { $0.contains(warning) }, "\(kind): \(plan.warnings)")
        }
        let ds = DeepSeekShape()
        #expect(!(try makePlan(ds.tensors, ds.config, ParallelConfig(dp: 2, finegrained: fine))).warnings.contains { $0.contains(warning) })
        let dense = LlamaShape(heads: 4, kvHeads: 2, headDim: 4, hidden: 16, intermediate: 32, vocab: 128)
        let plan = try makePlan(dense.tensors, dense.config, ParallelConfig(dp: 2, finegrained: fine))
        #expect(plan.warnings.contains { $0.contains(warning) }, "\(plan.warnings)")
        #expect(try makePlan(dense.tensors, dense.config, ParallelConfig(dp: 2)).warnings.isEmpty)
    }

    @Test func anMLPSizeOnAModelWhoseEveryLayerIsMoEWarnsThatItShardsNothing() throws {
        let shape = MoEShape(kind: .mixtral, heads: 4, kvHeads: 2, intermediate: 8)
        let plan = try makePlan(shape.tensors, shape.config, ParallelConfig(dp: 2, finegrained: FineGrainedConfig(mlp: 2)))
        #expect(plan.warnings.contains { $0.contains("mlp_tensor_parallel_size = 2 has nothing to shard") }, "\(plan.warnings)")
        let qwen2 = MoEShape(kind: .qwen2, heads: 4, kvHeads: 2)
        let withShared = try makePlan(qwen2.tensors, qwen2.config, ParallelConfig(dp: 2, finegrained: FineGrainedConfig(mlp: 2)))
        #expect(!withShared.warnings.contains { $0.contains("nothing to shard") }, "the shared expert is MLP-TP'd")
    }

}

@Suite struct MoEAdditionalConfigTests {
    @Test(arguments: [
        (#"{"eplb_config": {"dynamic_eplb": true}}"#, "eplb_config.dynamic_eplb"),
        (#"{"eplb_config": {"expert_map_path": "/maps/r1.json"}}"#, "eplb_config.expert_map_path"),
        (#"{"eplb_config": {"expert_map_record_path": "/maps/out.json"}}"#, "eplb_config.expert_map_record_path"),
        (#"{"eplb_config": {"num_redundant_experts": 16}}"#, "eplb_config.num_redundant_experts"),
        (#"{"eplb_config": {"init_redundancy_expert": 16}}"#, "eplb_config.init_redundancy_expert"),
        (#"{"eplb_config": true}"#, "eplb_config"),
        (#"{"expert_map_path": "/maps/r1.json"}"#, "expert_map_path"),
        (#"{"init_redundancy_expert": 16}"#, "init_redundancy_expert"),
        (#"{"dynamic_eplb": true}"#, "dynamic_eplb"),
        (#"{"expert_map_record_path": "/maps/out.json"}"#, "expert_map_record_path"),
        (#"{"mix_placement": true}"#, "mix_placement"),
        (#"{"finegrained_tp_config": {"olora_tensor_parallel_size": 2}}"#, "olora_tensor_parallel_size"),
        (#"{"enable_shared_expert_dp": "yes"}"#, "enable_shared_expert_dp"),
    ])
    func aKeyThatWouldChangeTheExpertLayoutIsRefusedNamingIt(json: String, key: String) throws {
        let error = try #require(throws: PlanError.self) { try AdditionalConfig.parse(json) }
        #expect(error.exitCode == 2)
        #expect(error.description.contains(key), "\(error)")
    }

    @Test func eplbKeysAtTheirDefaultsAndLayoutNeutralKeysAreAccepted() throws {
        let json = """
            {"eplb_config": {"dynamic_eplb": false, "num_redundant_experts": 0, "expert_map_path": null,
                             "expert_heat_collection_interval": 600, "eplb_policy_type": 2},
             "dynamic_eplb": false, "mix_placement": false, "multistream_overlap_shared_expert": true,
             "enable_shared_expert_dp": true,
             "finegrained_tp_config": {"mlp_tensor_parallel_size": 4, "olora_tensor_parallel_size": 0}}
            """
        let config = try AdditionalConfig.parse(json)
        #expect(config.finegrained == FineGrainedConfig(mlp: 4))
        #expect(config.enableSharedExpertDP)
        #expect(config.notes.contains { $0.contains("multistream_overlap_shared_expert") })
        #expect(config.notes.contains { $0.contains("'dynamic_eplb'") })
    }
}

/// `fineshard plan` on a Qwen3-MoE checkpoint written in a temporary folder with transformers' names
/// and config.json: refusals are exit 2 naming the key or the numbers.
@Suite struct MoEPlanCommandTests {
    func writeCheckpoint(_ shape: MoEShape, in dir: TemporaryFolder) throws {
        let tensors = shape.tensors.map { t in
            (TensorSpec(name: t.name, dtype: t.dtype, shape: t.shape), [UInt8](repeating: 0, count: t.byteCount))
        }
        try writeSafetensors(dir.file("model.safetensors"), tensors, metadata: ["format": "pt"])
        try Data(shape.configJSON.utf8).write(to: URL(fileURLWithPath: dir.file("config.json")))
    }

    @Test func refusedMoEConfigurationsExitTwoNamingTheKeyOrTheNumbers() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let shape = MoEShape(kind: .qwen3, heads: 4, kvHeads: 2, vocab: 128, experts: 6, perToken: 2)
        try writeCheckpoint(shape, in: dir)
        let cases: [([String], [String])] = [
            (["--dp", "4", "--enable-expert-parallel"], ["6 routed experts", "num_experts", "4"]),
            (
                ["--dp", "2", "--additional-config", #"{"eplb_config": {"num_redundant_experts": 2}}"#],
                ["eplb_config.num_redundant_experts"]
            ),
            (
                ["--dp", "2", "--additional-config", #"{"eplb_config": {"expert_map_path": "/maps/x.json"}}"#],
                ["eplb_config.expert_map_path"]
            ),
            (["--dp", "2", "--additional-config", #"{"init_redundancy_expert": 2}"#], ["init_redundancy_expert"]),
        ]
        for (arguments, expected) in cases {
            let r = try run(fineshardBinary, ["plan", dir.path] + arguments)
            #expect(r.status == 2, "\(arguments): \(r.stderr)")
            for text in expected { #expect(r.stderr.contains(text), "\(arguments): \(r.stderr)") }
        }
    }

    @Test func anEPPlanWithEveryFineGrainedSizeRunsWithoutTheDenseModelWarning() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let shape = MoEShape(kind: .qwen3, heads: 4, kvHeads: 2, vocab: 128, sparseStep: 2)
        try writeCheckpoint(shape, in: dir)
        let config =
            #"{"finegrained_tp_config": {"embedding_tensor_parallel_size": 2, "lmhead_tensor_parallel_size": 2, "mlp_tensor_parallel_size": 2}, "enable_shared_expert_dp": true}"#
        let r = try run(
            fineshardBinary, ["plan", dir.path, "--dp", "4", "--enable-expert-parallel", "--additional-config", config, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let warnings = report["warnings"] as! [String]
        #expect(!warnings.contains { $0.contains("only for MoE models") }, "\(warnings)")
        let model = report["model"] as! [String: Any]
        #expect(model["moe_layers"] as? [Int] == [1])
        #expect(model["n_routed_experts"] as? Int == 4)
        #expect((report["notes"] as! [String]).contains { $0.contains("enable_shared_expert_dp has no effect") })
        // 4 experts over 4 ranks: one expert's 3 projections of [8, 16] bf16 on each rank.
        let perRank = report["bytes_per_rank"] as! [Int]
        #expect(Set(perRank).count == 1)
    }
}
