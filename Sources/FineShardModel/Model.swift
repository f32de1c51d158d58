import FineShardFormats
import Foundation

/// The architecture families whose tensor names fineshard knows.
public enum ModelFamily: String, Sendable, Codable {
    /// Llama, Mistral, Qwen2 (q/k/v biases), Qwen3 (q/k norms), and their MoE variants Qwen2-MoE
    /// (routed experts, a shared expert with a sigmoid gate), Qwen3-MoE and Mixtral (routed experts):
    /// the same attention and norms, with expert roles in MoE layers (``ModelFacts/moeLayers``).
    case llama
    /// DeepSeek-V2/V3/R1: MLA attention, dense layers then MoE layers, optional MTP layer.
    case deepseek
    /// BERT encoders (all-MiniLM-L6-v2): no lm_head.
    case bert
    /// GPT-2: `Conv1D` weights stored `[in, out]`, fused `c_attn`.
    case gpt2
}

/// The facts about a model that the sharding rules use; recorded in the manifest.
public struct ModelFacts: Codable, Sendable, Hashable {
    public var architecture: String
    public var family: ModelFamily
    /// A causal LM has (or ties) an lm_head; an encoder has none.
    public var causal: Bool
    public var vocabSize: Int?
    public var hiddenSize: Int?
    public var numAttentionHeads: Int?
    public var numKeyValueHeads: Int?
    public var headDim: Int?
    public var numHiddenLayers: Int?
    public var intermediateSize: Int?
    public var tieWordEmbeddings: Bool
    public var firstKDenseReplace: Int?
    /// The number of routed experts per MoE layer: DeepSeek `n_routed_experts`, Qwen2-MoE / Qwen3-MoE
    /// `num_experts` (transformers 5 writes Qwen3-MoE's as `num_local_experts`), Mixtral
    /// `num_local_experts`; counted from the expert tensors without config.json. Nil for a dense model.
    public var nRoutedExperts: Int?
    /// The width of one routed expert's MLP: `moe_intermediate_size` (Mixtral: `intermediate_size`).
    public var moeIntermediateSize: Int?
    /// FP8 block size of `weight_scale_inv` (128 for DeepSeek-V3).
    public var weightBlockSize: Int?
    /// Experts each token is routed to: `num_experts_per_tok`.
    public var numExpertsPerTok: Int?
    /// The width of a MoE layer's shared expert MLP: Qwen2-MoE `shared_expert_intermediate_size`,
    /// DeepSeek `n_shared_experts × moe_intermediate_size` (one fused MLP, as `DeepseekV3MoE` builds it).
    /// Nil when the model has no shared expert (Qwen3-MoE, Mixtral).
    public var sharedExpertIntermediateSize: Int?
    /// The decoder layers whose MLP is a MoE block, ascending (the others have a dense MLP of
    /// `intermediate_size`). Qwen: `l ∉ mlp_only_layers` and `(l + 1) % decoder_sparse_step == 0`;
    /// Mixtral: every layer; DeepSeek: `l ≥ first_k_dense_replace` and `l % moe_layer_freq == 0`
    /// (including the MTP layer); without config.json, the layers that have expert tensors.
    public var moeLayers: [Int]?
    /// Whether the top-k routing weights are renormalized to sum to 1: `norm_topk_prob` (defaults:
    /// Qwen false, DeepSeek-V2 false, DeepSeek-V3 true); Mixtral always renormalizes (softmax, top-k,
    /// divide by the sum in transformers 5.19 `MixtralTopKRouter`), recorded as true.
    public var normTopkProb: Bool?

    enum CodingKeys: String, CodingKey {
        case architecture, family, causal
        case vocabSize = "vocab_size"
        case hiddenSize = "hidden_size"
        case numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads"
        case headDim = "head_dim"
        case numHiddenLayers = "num_hidden_layers"
        case intermediateSize = "intermediate_size"
        case tieWordEmbeddings = "tie_word_embeddings"
        case firstKDenseReplace = "first_k_dense_replace"
        case nRoutedExperts = "n_routed_experts"
        case moeIntermediateSize = "moe_intermediate_size"
        case weightBlockSize = "weight_block_size"
        case numExpertsPerTok = "num_experts_per_tok"
        case sharedExpertIntermediateSize = "shared_expert_intermediate_size"
        case moeLayers = "moe_layers"
        case normTopkProb = "norm_topk_prob"
    }

    /// Whether decoder layer `layer` has a MoE block (routed experts) rather than a dense MLP.
    public func isMoELayer(_ layer: Int) -> Bool { moeLayers?.contains(layer) ?? false }
}

/// A recognized model: its facts and the role of every tensor.
public struct Model: Sendable {
    public var facts: ModelFacts
    /// The role of every tensor of the checkpoint, by name.
    public var roles: TensorRoles
    /// Tensors no rule knows; replicated, listed by `plan`, an error with `--strict`.
    public var unknown: [String]
    /// The input embedding table (the source of a tied lm_head).
    public var embedding: String?

    package init(facts: ModelFacts, roles: TensorRoles, unknown: [String], embedding: String?) {
        self.facts = facts
        self.roles = roles
        self.unknown = unknown
        self.embedding = embedding
    }

    /// Recognizes the model from `config.json` (when present) and the tensor names and shapes.
    public static func recognize(_ tensors: [TensorInfo], config: ModelConfig?) throws -> Model {
        try recognize(sorted: tensors.sortedByName(), config: config)
    }

    /// ``recognize(_:config:)`` of tensors already sorted by name (a checkpoint's table).
    static func recognize(sorted tensors: [TensorInfo], config: ModelConfig?) throws -> Model {
        let names = tensors.map(\.name)
        let family = try detectFamily(config: config, names: names)
        var list: [TensorRole] = []
        var unknown: [String] = []
        var naming = TensorNaming.Memo(family: family)
        list.reserveCapacity(tensors.count)
        for name in names {
            if let role = naming.role(of: name) {
                list.append(role)
            } else {
                list.append(TensorRole(.other))
                unknown.append(name)
            }
        }
        let roles = TensorRoles(names: names, roles: list)
        /// The first tensor whose role satisfies `test`.
        func first(_ test: (TensorRole) -> Bool) -> TensorInfo? { list.firstIndex(where: test).map { tensors[$0] } }
        let embedding = first { $0.kind == .embedding && $0.layer == nil && $0.parameter == .weight }
        let hasLMHead = list.contains { $0.kind == .lmHead && $0.layer == nil }
        let causal = family != .bert
        if causal, !hasLMHead, config?.tieWordEmbeddings == false {
            throw ModelError.inconsistent(
                message:
                    "config.json says tie_word_embeddings: false but the checkpoint has no lm_head tensor; a causal LM needs one or tied embeddings"
            )
        }
        let c = config ?? ModelConfig()
        let hidden = c.hiddenSize ?? c.nEmbd ?? embedding?.shape.last
        let heads = c.numAttentionHeads ?? c.nHead
        var kvHeads = c.numKeyValueHeads ?? (family == .llama ? nil : heads)
        var headDim = c.headDim
        if family == .llama, headDim == nil, let hidden, let heads, hidden % heads == 0 { headDim = hidden / heads }
        if family == .bert || family == .gpt2, let hidden, let heads, hidden % heads == 0 { headDim = hidden / heads }
        if family == .llama, kvHeads == nil, let headDim,
            let k = zip(tensors, list).first(where: { $1.kind == .k && $1.parameter == .weight && $0.shape.count == 2 })?.0
        {
            kvHeads = k.shape[0] / headDim
        }
        let intermediate =
            c.intermediateSize ?? c.nInner
            ?? zip(tensors, list).first { [.gate, .up].contains($1.kind) && $1.parameter == .weight }
            .map { $1.transposed ? $0.shape[1] : $0.shape[0] }
        let moe = try MoEFacts(config: c, family: family, roles: roles, tensors: tensors)
        let facts = ModelFacts(
            architecture: c.architectures?.first ?? c.modelType ?? family.rawValue,
            family: family,
            causal: causal,
            vocabSize: c.vocabSize ?? embedding?.shape.first,
            hiddenSize: hidden,
            numAttentionHeads: heads,
            numKeyValueHeads: kvHeads,
            headDim: headDim,
            numHiddenLayers: c.numHiddenLayers ?? c.nLayer,
            intermediateSize: intermediate,
            tieWordEmbeddings: causal && !hasLMHead,
            firstKDenseReplace: c.firstKDenseReplace,
            nRoutedExperts: moe.experts,
            moeIntermediateSize: moe.intermediate,
            weightBlockSize: c.quantizationConfig?.weightBlockSize?.first
                ?? (roles.values.contains { $0.parameter == .blockScale } ? 128 : nil),
            numExpertsPerTok: moe.perToken,
            sharedExpertIntermediateSize: moe.sharedIntermediate,
            moeLayers: moe.layers,
            normTopkProb: moe.normTopkProb
        )
        return Model(facts: facts, roles: roles, unknown: unknown.sorted(), embedding: embedding?.name)
    }

    static func detectFamily(config: ModelConfig?, names: [String]) throws -> ModelFamily {
        let type = config?.modelType?.lowercased() ?? ""
        let arch = config?.architectures?.first ?? ""
        switch type {
        case "llama", "mistral", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "mixtral": return .llama
        case "deepseek_v2", "deepseek_v3": return .deepseek
        case "bert": return .bert
        case "gpt2": return .gpt2
        default: break
        }
        if ["Llama", "Mistral", "Mixtral", "Qwen2", "Qwen3"].contains(where: arch.hasPrefix) { return .llama }
        if arch.hasPrefix("DeepseekV") { return .deepseek }
        if arch.hasPrefix("Bert") { return .bert }
        if arch.hasPrefix("GPT2") { return .gpt2 }
        if names.contains(where: { $0.contains("kv_a_proj_with_mqa") }) { return .deepseek }
        if names.contains(where: { $0.contains(".attn.c_attn.") }) { return .gpt2 }
        if names.contains(where: { $0.contains("attention.self.query") }) { return .bert }
        if names.contains(where: { $0.hasPrefix("model.layers.") && $0.contains("self_attn.") }) { return .llama }
        let what =
            config == nil
            ? "there is no config.json and the tensor names"
            : "config.json (model_type '\(type)', architectures '\(arch)') and the tensor names"
        throw ModelError.unsupported(
            message:
                "\(what) match no architecture fineshard knows (Llama, Mistral, Mixtral, Qwen2, Qwen3, Qwen2-MoE, Qwen3-MoE, DeepSeek-V2/V3, BERT, GPT-2)"
        )
    }
}

extension Int {
    /// `nil` for zero, so a count of nothing reads as "absent".
    var nonZero: Int? { self == 0 ? nil : self }
}
