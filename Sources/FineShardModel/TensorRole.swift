/// What a tensor is in the model, which decides how it is sharded (docs/SPEC.md §4).
public struct TensorRole: Sendable, Hashable, Codable {
    /// The module the tensor belongs to.
    public enum Kind: String, Sendable, Codable, CaseIterable {
        case embedding, lmHead = "lm_head"
        case q, k, v, qkv
        case oProj = "o_proj"
        /// MLA projections cut by heads on global TP (`q_b_proj`, `kv_b_proj`).
        case mlaHeads = "mla_heads"
        /// MLA low-rank projections and their norms, replicated (`q_a_proj`, `kv_a_proj_with_mqa`, …).
        case mlaReplicated = "mla_replicated"
        /// A dense MLP (a dense layer's, or the only MLP of a dense model).
        case gate, up, down, gateUp = "gate_up"
        /// A routed expert's projections; the role's ``expert`` is its index. Qwen2-MoE / Qwen3-MoE /
        /// DeepSeek `mlp.experts.E.{gate,up,down}_proj`, Mixtral `block_sparse_moe.experts.E.{w1,w3,w2}`.
        case expertGate = "expert_gate", expertUp = "expert_up", expertDown = "expert_down"
        /// The shared expert(s) of a MoE layer: DeepSeek `mlp.shared_experts.*`, Qwen2-MoE `mlp.shared_expert.*`.
        case sharedGate = "shared_gate", sharedUp = "shared_up", sharedDown = "shared_down"
        /// Qwen2-MoE `mlp.shared_expert_gate` (`[1, hidden]`): the sigmoid gate on the shared expert's output.
        case sharedExpertGate = "shared_expert_gate"
        /// The router of a MoE layer: `mlp.gate.weight` (Mixtral `block_sparse_moe.gate.weight`); DeepSeek-V3's
        /// `mlp.gate.e_score_correction_bias` is its `.bias` parameter.
        case router
        case norm
        /// Position embeddings and token-type tables: replicated.
        case positionEmbedding = "position_embedding"
        /// Non-trainable buffers (`position_ids`, `rotary_emb.inv_freq`, GPT-2 attention masks).
        case buffer
        /// Known and replicated (BERT pooler, DeepSeek MTP `eh_proj`).
        case replicated
        case other
    }

    /// Which parameter of the module the tensor is.
    public enum Parameter: String, Sendable, Codable {
        case weight, bias
        /// Per-output-channel quantization parameters (`weight_scale`, `weight_offset`, `deq_scale`, `quant_bias`).
        case perChannel = "per_channel"
        /// Per-tensor quantization parameters (`input_scale`, `input_offset`).
        case perTensor = "per_tensor"
        /// FP8 block scales (`weight_scale_inv`), one per 128×128 block of the weight.
        case blockScale = "block_scale"
    }

    public var kind: Kind
    public var parameter: Parameter
    /// The decoder layer, when the tensor is in one.
    public var layer: Int?
    /// The routed expert, for MoE expert tensors.
    public var expert: Int?
    /// GPT-2 `Conv1D` stores weights `[in, out]`: column and row cuts swap dimensions.
    public var transposed: Bool

    public init(_ kind: Kind, _ parameter: Parameter = .weight, layer: Int? = nil, expert: Int? = nil, transposed: Bool = false) {
        self.kind = kind
        self.parameter = parameter
        self.layer = layer
        self.expert = expert
        self.transposed = transposed
    }

    /// How the role reads in tables: `o_proj.weight`, `expert_up.per_channel`.
    public var label: String { kind == .buffer ? "buffer" : "\(kind.rawValue).\(parameter.rawValue)" }
}

extension TensorRole.Kind {
    /// A shared expert's projection (DeepSeek `shared_experts`, Qwen2-MoE `shared_expert`).
    public var isShared: Bool { self == .sharedGate || self == .sharedUp || self == .sharedDown }
}
