/// The state-dict names of vLLM's own model classes (`--layout vllm`), for every family the layout
/// covers: where a Hugging Face tensor lands, its place in a fused tensor, and the expert slot of a
/// stacked one.
///
/// Target: **vLLM 0.32.0**. The names are the keys `ShardedStateLoader._filter_subtensors(model.state_dict())`
/// keeps — what `load_format="sharded_state"` requires and the `fineshard` load format copies into. Where a
/// module is reachable under two names (vLLM 0.32 registers the router, the shared experts and MLA's
/// projections both where the model builds them and inside `FusedMoE` / `MultiHeadLatentAttentionWrapper`),
/// `_filter_subtensors` keeps the lexically smaller key: `mlp.experts.gate` over `mlp.gate`,
/// `mlp.experts._shared_experts._layer.*` over `mlp.shared_experts.*`, `self_attn.mla_attn.o_proj` over
/// `self_attn.o_proj`. Checked against the installed vLLM's classes by `scripts/vllm/model_params.py`
/// (names and per-rank shapes at TP 1 and 2, with and without expert parallelism).
///
/// - Dense Llama family (`llama.py`, `qwen2.py`, `qwen3.py`): `qkv_proj = [q; k; v]`,
///   `gate_up_proj = [gate; up]` (`stacked_params_mapping`).
/// - Routed experts (`FusedMoE`, `layers/fused_moe/layer.py`): one stacked parameter per layer,
///   `experts.routed_experts.w13_weight` `[local experts, 2 × intermediate, hidden]` (gate then up) and
///   `w2_weight` `[local experts, hidden, intermediate]`; quantization parameters stack the same way
///   (`w13_weight_scale_inv` of FP8 block quantization, vLLM `Fp8MoEMethod`; `w13_weight_scale` /
///   `w13_weight_offset` `[E, 2I, 1]` of vllm-ascend's W8A8 dynamic MoE method).
/// - Routers: Qwen3-MoE and DeepSeek `mlp.experts.gate`; Qwen2-MoE `mlp.gate`; Mixtral
///   `block_sparse_moe.gate`.
/// - Shared experts (Qwen2-MoE `shared_expert`, DeepSeek `shared_experts`):
///   `mlp.experts._shared_experts._layer.{gate_up_proj,down_proj}`; Qwen2-MoE's `shared_expert_gate` is
///   `mlp.experts._shared_experts._layer.expert_gate`.
/// - DeepSeek MLA (`deepseek_v2.py`): `fused_qkv_a_proj = [q_a_proj; kv_a_proj_with_mqa]` with q-LoRA;
///   `q_proj`, `q_b_proj`, `q_a_layernorm` and `o_proj` under `self_attn.mla_attn.`; `kv_a_proj_with_mqa`
///   (without q-LoRA), `kv_a_layernorm` and `kv_b_proj` where Hugging Face has them; the attention
///   scales under `self_attn.mla_attn.mla_attn.`.
public enum VLLMNaming {
    /// Where a source tensor lands in vLLM's state dict: the output name, its index among the parts
    /// fused along dimension 0, and for a stacked expert tensor the expert's slot (its index).
    public struct Target: Sendable, Hashable {
        public var name: String
        public var fusion: Int
        public var expert: Int?
    }

    /// The vLLM target of tensor `name` with `role` in a model with `facts`; `qLora` says whether a
    /// DeepSeek model has `q_a_proj` (then fused with `kv_a_proj_with_mqa`). Names no rule renames keep
    /// their name.
    public static func target(of name: String, role: TensorRole, facts: ModelFacts, qLora: Bool) -> Target {
        let family = facts.family
        let same = Target(name: name, fusion: 0, expert: nil)
        guard let (prefix, module, suffix) = split(name) else { return same }
        func at(_ newModule: String, _ fusion: Int = 0) -> Target {
            Target(name: prefix + newModule + "." + suffix, fusion: fusion, expert: nil)
        }
        let mixtral = module.hasPrefix("block_sparse_moe.")
        let moe = mixtral ? "block_sparse_moe" : "mlp"
        switch role.kind {
        case .q where module == "self_attn.q_proj": return at("self_attn.qkv_proj", 0)
        case .k where module == "self_attn.k_proj": return at("self_attn.qkv_proj", 1)
        case .v where module == "self_attn.v_proj": return at("self_attn.qkv_proj", 2)
        case .gate where module == "mlp.gate_proj": return at("mlp.gate_up_proj", 0)
        case .up where module == "mlp.up_proj": return at("mlp.gate_up_proj", 1)
        case .expertGate, .expertUp, .expertDown:
            guard let expert = role.expert else { return same }
            let stacked = role.kind == .expertDown ? "w2_" : "w13_"
            return Target(
                name: prefix + moe + ".experts.routed_experts." + stacked + suffix, fusion: role.kind == .expertUp ? 1 : 0,
                expert: expert)
        case .router where family == .deepseek || role.parameter == .bias:
            return at("mlp.experts.gate")
        case .router:
            // Qwen3-MoE hands its router to FusedMoE (`mlp.experts.gate`); Qwen2-MoE and Mixtral do not.
            let arch = facts.architecture.lowercased()
            return arch.hasPrefix("qwen3moe") || arch == "qwen3_moe" ? at("mlp.experts.gate") : same
        case .sharedGate: return at("mlp.experts._shared_experts._layer.gate_up_proj", 0)
        case .sharedUp: return at("mlp.experts._shared_experts._layer.gate_up_proj", 1)
        case .sharedDown: return at("mlp.experts._shared_experts._layer.down_proj")
        case .sharedExpertGate: return at("mlp.experts._shared_experts._layer.expert_gate")
        case .mlaReplicated where module == "self_attn.q_a_proj": return at("self_attn.fused_qkv_a_proj", 0)
        case .mlaReplicated where module == "self_attn.kv_a_proj_with_mqa" && qLora: return at("self_attn.fused_qkv_a_proj", 1)
        case .mlaReplicated where module == "self_attn.q_a_layernorm": return at("self_attn.mla_attn.q_a_layernorm")
        case .mlaHeads where module == "self_attn.q_proj" || module == "self_attn.q_b_proj":
            return at("self_attn.mla_attn." + module.dropFirst("self_attn.".count))
        case .oProj where family == .deepseek: return at("self_attn.mla_attn.o_proj")
        default: return same
        }
    }

    /// The prefix of a layer's four attention scales (`_k_scale`, `_v_scale`, `_q_scale`, `_prob_scale`)
    /// when `name` is the tensor that marks an attention layer (`self_attn.q_proj.weight`; for
    /// DeepSeek MLA, `self_attn.kv_b_proj.weight`), else nil.
    public static func attentionScalePrefix(of name: String, family: ModelFamily) -> String? {
        let marker = family == .deepseek ? ".self_attn.kv_b_proj.weight" : ".self_attn.q_proj.weight"
        guard name.hasSuffix(marker) else { return nil }
        let layer = name.dropLast(marker.count)
        return layer + (family == .deepseek ? ".self_attn.mla_attn.mla_attn." : ".self_attn.attn.")
    }

    /// `model.layers.L.` + module + `.` + parameter suffix, split; nil outside a decoder layer.
    static func split(_ name: String) -> (String, String, String)? {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 5, parts[0] == "model", parts[1] == "layers", Int(parts[2]) != nil else { return nil }
        var module = parts[3..<(parts.count - 1)].joined(separator: ".")
        // A routed expert `mlp.experts.E.gate_proj`: the module of the stacked tensor is the MoE block.
        if parts.count >= 7, parts[4] == "experts", Int(parts[5]) != nil { module = String(parts[3]) + ".experts" }
        return (parts[0...2].joined(separator: ".") + ".", module, String(parts[parts.count - 1]))
    }
}
