import Foundation
import Testing

@testable import FineShard

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
