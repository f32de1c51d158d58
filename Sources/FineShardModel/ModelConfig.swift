import Foundation

/// The fields of a Hugging Face `config.json` that decide how a model is sharded.
///
/// Every field is optional: fineshard works without `config.json` from names and shapes, and a
/// rule that needs a missing field says which one. Key names are Hugging Face's (Llama, Qwen2/3,
/// Qwen2-MoE/Qwen3-MoE, Mixtral, DeepSeek-V2/V3, BERT, GPT-2's `n_*` spellings).
public struct ModelConfig: Codable, Sendable, Equatable {
    public var architectures: [String]?
    public var modelType: String?
    public var hiddenSize: Int?
    public var numAttentionHeads: Int?
    public var numKeyValueHeads: Int?
    public var headDim: Int?
    public var intermediateSize: Int?
    public var vocabSize: Int?
    public var numHiddenLayers: Int?
    public var tieWordEmbeddings: Bool?
    // DeepSeek-V2/V3 (MLA and MoE).
    public var firstKDenseReplace: Int?
    public var nRoutedExperts: Int?
    public var nSharedExperts: Int?
    public var moeIntermediateSize: Int?
    public var qLoraRank: Int?
    public var kvLoraRank: Int?
    public var qkNopeHeadDim: Int?
    public var qkRopeHeadDim: Int?
    public var vHeadDim: Int?
    public var numNextnPredictLayers: Int?
    /// DeepSeek-V2: every `moe_layer_freq`-th layer from `first_k_dense_replace` on is MoE (vLLM `deepseek_v2.py`).
    public var moeLayerFreq: Int?
    // Qwen2-MoE / Qwen3-MoE / Mixtral experts. transformers 5 writes Qwen3-MoE's and Mixtral's
    // expert count as `num_local_experts` (`attribute_map`), Qwen2-MoE's and older Qwen3-MoE
    // checkpoints as `num_experts`.
    public var numExperts: Int?
    public var numLocalExperts: Int?
    public var numExpertsPerTok: Int?
    public var sharedExpertIntermediateSize: Int?
    /// Qwen MoE: layer `l` is MoE when `(l + 1) % decoder_sparse_step == 0` and `l` is not in `mlp_only_layers`.
    public var decoderSparseStep: Int?
    public var mlpOnlyLayers: [Int]?
    public var normTopkProb: Bool?
    public var quantizationConfig: QuantizationConfig?
    // GPT-2.
    public var nEmbd: Int?
    public var nHead: Int?
    public var nLayer: Int?
    public var nInner: Int?

    public struct QuantizationConfig: Codable, Sendable, Equatable {
        public var quantMethod: String?
        /// FP8 block quantization (DeepSeek-V3): `[128, 128]`.
        public var weightBlockSize: [Int]?

        enum CodingKeys: String, CodingKey {
            case quantMethod = "quant_method"
            case weightBlockSize = "weight_block_size"
        }
    }

    enum CodingKeys: String, CodingKey {
        case architectures
        case modelType = "model_type"
        case hiddenSize = "hidden_size"
        case numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads"
        case headDim = "head_dim"
        case intermediateSize = "intermediate_size"
        case vocabSize = "vocab_size"
        case numHiddenLayers = "num_hidden_layers"
        case tieWordEmbeddings = "tie_word_embeddings"
        case firstKDenseReplace = "first_k_dense_replace"
        case nRoutedExperts = "n_routed_experts"
        case nSharedExperts = "n_shared_experts"
        case moeIntermediateSize = "moe_intermediate_size"
        case qLoraRank = "q_lora_rank"
        case kvLoraRank = "kv_lora_rank"
        case qkNopeHeadDim = "qk_nope_head_dim"
        case qkRopeHeadDim = "qk_rope_head_dim"
        case vHeadDim = "v_head_dim"
        case numNextnPredictLayers = "num_nextn_predict_layers"
        case moeLayerFreq = "moe_layer_freq"
        case numExperts = "num_experts"
        case numLocalExperts = "num_local_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case sharedExpertIntermediateSize = "shared_expert_intermediate_size"
        case decoderSparseStep = "decoder_sparse_step"
        case mlpOnlyLayers = "mlp_only_layers"
        case normTopkProb = "norm_topk_prob"
        case quantizationConfig = "quantization_config"
        case nEmbd = "n_embd"
        case nHead = "n_head"
        case nLayer = "n_layer"
        case nInner = "n_inner"
    }

    public init() {}

    /// Decodes `config.json`; a field of the wrong type or a non-positive size names the field.
    public static func decode(_ data: Data, file: String = "config.json") throws -> ModelConfig {
        let config: ModelConfig
        do {
            config = try JSONDecoder().decode(ModelConfig.self, from: data)
        } catch DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw ModelError.badConfig(file: file, field: field, message: context.debugDescription)
        } catch DecodingError.dataCorrupted(let context) {
            throw ModelError.badConfig(
                file: file, field: context.codingPath.map(\.stringValue).joined(separator: "."),
                message: "not valid JSON: \(context.debugDescription)")
        }
        let sizes: [(String, Int?)] = [
            ("hidden_size", config.hiddenSize), ("num_attention_heads", config.numAttentionHeads),
            ("num_key_value_heads", config.numKeyValueHeads), ("head_dim", config.headDim),
            ("intermediate_size", config.intermediateSize), ("vocab_size", config.vocabSize),
            ("n_routed_experts", config.nRoutedExperts), ("moe_intermediate_size", config.moeIntermediateSize),
            ("num_experts_per_tok", config.numExpertsPerTok), ("decoder_sparse_step", config.decoderSparseStep),
            ("moe_layer_freq", config.moeLayerFreq),
        ]
        for (field, value) in sizes {
            if let value, value <= 0 { throw ModelError.badConfig(file: file, field: field, message: "must be positive, is \(value)") }
        }
        // Qwen MoE configs use `num_experts: 0` for a dense model; a negative count is an error.
        for (field, value) in [("num_experts", config.numExperts), ("num_local_experts", config.numLocalExperts)] {
            if let value, value < 0 { throw ModelError.badConfig(file: file, field: field, message: "must not be negative, is \(value)") }
        }
        if let size = config.sharedExpertIntermediateSize, size < 0 {
            throw ModelError.badConfig(file: file, field: "shared_expert_intermediate_size", message: "must not be negative, is \(size)")
        }
        if let k = config.numExpertsPerTok, let e = config.nRoutedExperts ?? config.numExperts ?? config.numLocalExperts, e > 0, k > e {
            throw ModelError.badConfig(
                file: file, field: "num_experts_per_tok", message: "\(k) is more than the \(e) routed experts")
        }
        if let heads = config.numAttentionHeads, let kv = config.numKeyValueHeads, heads % kv != 0 {
            throw ModelError.badConfig(
                file: file, field: "num_key_value_heads", message: "\(kv) does not divide num_attention_heads = \(heads)")
        }
        return config
    }
}
