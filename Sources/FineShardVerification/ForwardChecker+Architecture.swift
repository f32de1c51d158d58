import FineShardFormats
import FineShardModel
import FineShardPlanning
import Foundation

extension ForwardChecker {
    /// What the forward pass needs to know about a model: sizes, norms, rotary frequencies and the
    /// tensor names of each module. Two shapes of network are computed:
    ///
    /// - the Llama family (`modeling_llama.py`, `modeling_mistral.py`, `modeling_qwen2.py` with q/k/v
    ///   biases, `modeling_qwen3.py` with per-head `q_norm`/`k_norm`): pre-RMSNorm decoder, RoPE, causal
    ///   GQA attention, SiLU-gated MLP, tied or untied `lm_head`; compared on logits;
    /// - BERT encoders (`modeling_bert.py`): word + absolute position + token type 0 embeddings and
    ///   LayerNorm, bidirectional attention, post-LayerNorm, exact-GELU MLP; compared on the last hidden state.
    struct Architecture: Sendable {
        enum Kind: Sendable { case decoder, encoder }

        /// The modules of a layer whose tensors the forward pass reads.
        enum Module: Sendable {
            case q, k, v, qkv, qNorm, kNorm, o, gate, up, gateUp, down
            /// MLA (`modeling_deepseek_v3.py` `DeepseekV3Attention`).
            case qA, qANorm, qB, kvA, kvANorm, kvB
            /// Llama `input_layernorm` / `post_attention_layernorm`.
            case inputNorm, postNorm
            /// BERT `attention.output.LayerNorm` / `output.LayerNorm`.
            case attentionNorm, outputNorm
        }

        var kind: Kind
        var name: String
        var hidden: Int
        var heads: Int
        var kvHeads: Int
        var headDim: Int
        var layers: Int
        var intermediate: Int
        /// Rows of the embedding table (the real vocabulary, unpadded).
        var vocab: Int
        var eps: Float
        /// RoPE `inv_freq` (decoders), after `rope_scaling`; of the rotary part for MLA.
        var invFreq: [Float]
        /// YaRN's `attention_factor`: HF multiplies cos and sin by it (`attention_scaling`).
        var ropeScale: Float = 1
        /// MLA attention (DeepSeek), instead of q/k/v heads.
        var mla: MLA?
        /// The MoE layers' routing and experts, when the model has any.
        var moe: MoE?
        /// Mistral / Qwen `sliding_window`, when the model attends within one.
        var slidingWindow: Int?
        /// The FP8 block of `weight_scale_inv` (`quantization_config.weight_block_size`, default 128×128).
        var block = [128, 128]
        var maxPositions: Int?
        /// BERT checkpoints of a task head (`BertForMaskedLM`) prefix the encoder with `bert.`.
        var prefix: String

        var embedding: String {
            kind == .decoder ? "model.embed_tokens.weight" : prefix + "embeddings.word_embeddings.weight"
        }
        var lmHead: String { "lm_head.weight" }
        var finalNorm: String { "model.norm.weight" }
        var positionEmbedding: String { prefix + "embeddings.position_embeddings.weight" }
        var tokenTypeEmbedding: String { prefix + "embeddings.token_type_embeddings.weight" }
        var embeddingNorm: String { prefix + "embeddings.LayerNorm." }

        /// The name of `parameter` (`weight`, `bias`) of `module` in layer `layer`.
        func name(_ layer: Int, _ module: Module, _ parameter: String = "weight") -> String {
            if kind == .encoder {
                let modules: [Module: String] = [
                    .q: "attention.self.query", .k: "attention.self.key", .v: "attention.self.value",
                    .o: "attention.output.dense", .attentionNorm: "attention.output.LayerNorm",
                    .up: "intermediate.dense", .down: "output.dense", .outputNorm: "output.LayerNorm",
                ]
                return "\(prefix)encoder.layer.\(layer).\(modules[module] ?? "-").\(parameter)"
            }
            let modules: [Module: String] = [
                .q: "self_attn.q_proj", .k: "self_attn.k_proj", .v: "self_attn.v_proj", .qkv: "self_attn.qkv_proj",
                .qNorm: "self_attn.q_norm", .kNorm: "self_attn.k_norm", .o: "self_attn.o_proj",
                .gate: "mlp.gate_proj", .up: "mlp.up_proj", .gateUp: "mlp.gate_up_proj", .down: "mlp.down_proj",
                .inputNorm: "input_layernorm", .postNorm: "post_attention_layernorm",
                .qA: "self_attn.q_a_proj", .qANorm: "self_attn.q_a_layernorm", .qB: "self_attn.q_b_proj",
                .kvA: "self_attn.kv_a_proj_with_mqa", .kvANorm: "self_attn.kv_a_layernorm", .kvB: "self_attn.kv_b_proj",
            ]
            return "model.layers.\(layer).\(modules[module] ?? "-").\(parameter)"
        }

        /// The extra `config.json` fields the forward pass needs (Hugging Face names).
        struct Config: Decodable {
            var hiddenAct: String?
            var rmsNormEps: Double?
            var layerNormEps: Double?
            var ropeTheta: Double?
            var ropeScaling: [String: JSONValue]?
            var partialRotaryFactor: Double?
            var positionEmbeddingType: String?
            var maxPositionEmbeddings: Int?
            /// transformers ≥ 5: `{rope_theta, rope_type, factor, …}`; older configs: `rope_scaling` + `rope_theta`.
            var ropeParameters: [String: JSONValue]?
            var ropeInterleave: Bool?
            var modelType: String?
            var slidingWindow: Int?
            var useSlidingWindow: Bool?
            // MLA.
            var qLoraRank: Int?
            var kvLoraRank: Int?
            var qkNopeHeadDim: Int?
            var qkRopeHeadDim: Int?
            var vHeadDim: Int?
            // MoE.
            var nRoutedExperts: Int?
            var numExperts: Int?
            var numLocalExperts: Int?
            var numExpertsPerTok: Int?
            var moeIntermediateSize: Int?
            var sharedExpertIntermediateSize: Int?
            var nSharedExperts: Int?
            var nGroup: Int?
            var topkGroup: Int?
            var topkMethod: String?
            var scoringFunc: String?
            var normTopkProb: Bool?
            var routedScalingFactor: Double?
            var firstKDenseReplace: Int?
            var decoderSparseStep: Int?
            var mlpOnlyLayers: [Int]?
            var quantizationConfig: ModelConfig.QuantizationConfig?

            enum CodingKeys: String, CodingKey {
                case quantizationConfig = "quantization_config"
                case ropeParameters = "rope_parameters"
                case ropeInterleave = "rope_interleave"
                case modelType = "model_type"
                case slidingWindow = "sliding_window"
                case useSlidingWindow = "use_sliding_window"
                case qLoraRank = "q_lora_rank"
                case kvLoraRank = "kv_lora_rank"
                case qkNopeHeadDim = "qk_nope_head_dim"
                case qkRopeHeadDim = "qk_rope_head_dim"
                case vHeadDim = "v_head_dim"
                case nRoutedExperts = "n_routed_experts"
                case numExperts = "num_experts"
                case numLocalExperts = "num_local_experts"
                case numExpertsPerTok = "num_experts_per_tok"
                case moeIntermediateSize = "moe_intermediate_size"
                case sharedExpertIntermediateSize = "shared_expert_intermediate_size"
                case nSharedExperts = "n_shared_experts"
                case nGroup = "n_group"
                case topkGroup = "topk_group"
                case topkMethod = "topk_method"
                case scoringFunc = "scoring_func"
                case normTopkProb = "norm_topk_prob"
                case routedScalingFactor = "routed_scaling_factor"
                case firstKDenseReplace = "first_k_dense_replace"
                case decoderSparseStep = "decoder_sparse_step"
                case mlpOnlyLayers = "mlp_only_layers"
                case hiddenAct = "hidden_act"
                case rmsNormEps = "rms_norm_eps"
                case layerNormEps = "layer_norm_eps"
                case ropeTheta = "rope_theta"
                case ropeScaling = "rope_scaling"
                case partialRotaryFactor = "partial_rotary_factor"
                case positionEmbeddingType = "position_embedding_type"
                case maxPositionEmbeddings = "max_position_embeddings"
            }
        }

        /// Recognizes the model of `source`, or throws ``ModelError/unsupported(message:)`` naming what
        /// forward-check cannot compute yet.
        static func recognize(_ source: Checkpoint, model: Model) throws -> Architecture {
            let facts = model.facts
            if facts.family == .gpt2 {
                throw ModelError.unsupported(
                    message:
                        "forward-check does not support \(facts.architecture) yet (GPT-2 Conv1D weights and fused c_attn); it covers the Llama family (Llama, Mistral, Qwen2, Qwen3), DeepSeek-V2/V3, Qwen2-MoE, Qwen3-MoE, Mixtral and BERT encoders"
                )
            }
            let config =
                try source.config.map { data -> Config in
                    do { return try JSONDecoder().decode(Config.self, from: data) } catch {
                        throw ModelError.badConfig(file: source.path(of: "config.json"), field: "", message: "\(error)")
                    }
                } ?? Config()
            let block = config.quantizationConfig?.weightBlockSize ?? [128, 128]
            guard block.count == 2, block.allSatisfy({ $0 > 0 }) else {
                throw ModelError.badConfig(
                    file: source.path(of: "config.json"), field: "quantization_config.weight_block_size",
                    message: "must be two positive sizes, is \(block)")
            }
            try checkQuantization(source, model: model, block: block)
            let ignorable: (String) -> Bool = {
                $0.hasSuffix("position_ids") || $0.hasSuffix("token_type_ids") || $0.hasPrefix("pooler.") || $0.hasPrefix("bert.pooler.")
            }
            if let unknown = source.tensors.first(where: { model.roles[$0.name]?.kind == .other && !ignorable($0.name) }) {
                throw ModelError.unsupported(
                    message:
                        "forward-check does not know what tensor '\(unknown.name)' computes in \(facts.architecture); not supported yet")
            }
            let kind: Kind = facts.family == .bert ? .encoder : .decoder
            let prefix = kind == .encoder && source.contains("bert.embeddings.word_embeddings.weight") ? "bert." : ""
            var arch = Architecture(
                kind: kind, name: facts.architecture, hidden: 0, heads: 0, kvHeads: 0, headDim: 0, layers: 0, intermediate: 0,
                vocab: 0, eps: 0, invFreq: [], maxPositions: config.maxPositionEmbeddings, prefix: prefix)
            func need(_ value: Int?, _ field: String) throws -> Int {
                guard let value else { throw ModelError.missingFact(field: field, neededFor: "the forward check") }
                return value
            }
            arch.hidden = try need(facts.hiddenSize, "hidden_size")
            arch.heads = try need(facts.numAttentionHeads, "num_attention_heads")
            arch.kvHeads = try need(facts.numKeyValueHeads, "num_key_value_heads")
            arch.headDim = facts.family == .deepseek ? 0 : try need(facts.headDim, "head_dim")
            arch.intermediate = try need(facts.intermediateSize, "intermediate_size")
            let layerIndices = Set(model.roles.values.compactMap(\.layer))
            arch.layers = facts.numHiddenLayers ?? layerIndices.count
            guard source.contains(arch.embedding) else {
                throw ModelError.missingFact(field: arch.embedding, neededFor: "the forward check (the input embedding table)")
            }
            arch.vocab = try source.tensor(arch.embedding).shape[0]
            switch kind {
            case .decoder:
                let act = config.hiddenAct ?? "silu"
                guard act == "silu" else {
                    throw ModelError.unsupported(
                        message: "forward-check computes the Llama MLP with SiLU; hidden_act '\(act)' is not supported yet")
                }
                arch.eps = Float(config.rmsNormEps ?? 1e-6)
                arch.block = block
                arch.mla = try MLA.recognize(config, model: model)
                (arch.invFreq, arch.ropeScale) = try rotaryFrequencies(config, headDim: arch.mla?.ropeDim ?? arch.headDim)
                if let mla = arch.mla { arch.mla?.scale = mla.softmaxScale(config) }
                arch.moe = try MoE.recognize(config, model: model, layers: arch.layers)
                if config.useSlidingWindow != false { arch.slidingWindow = config.slidingWindow }
            case .encoder:
                let act = config.hiddenAct ?? "gelu"
                guard act == "gelu" else {
                    throw ModelError.unsupported(
                        message: "forward-check computes BERT with exact GELU; hidden_act '\(act)' is not supported yet")
                }
                if let type = config.positionEmbeddingType, type != "absolute" {
                    throw ModelError.unsupported(
                        message:
                            "forward-check supports BERT absolute position embeddings; position_embedding_type '\(type)' is not supported yet"
                    )
                }
                arch.eps = Float(config.layerNormEps ?? 1e-12)
                arch.maxPositions = try source.tensor(arch.positionEmbedding).shape.first
            }
            return arch
        }

        /// The roles whose weights are never quantized (tables, norms, routers).
        static let unquantized: Set<TensorRole.Kind> = [.embedding, .lmHead, .norm, .router, .positionEmbedding, .buffer, .other]

        /// Accepts the quantized weights the forward pass dequantizes (``Simulation/dequantize(_:_:rank:)``)
        /// and throws ``ModelError/unsupported(message:)`` for every other quantized tensor:
        ///
        /// - Ascend / msModelSlim W8A8: an `I8` `.weight` `[out, in]` of an attention, MLP or expert linear
        ///   with a floating-point per-output-channel `.weight_scale` (and optional `.weight_offset`) of
        ///   shape `[out]` or `[out, 1]`. The per-tensor activation parameters (`input_scale`,
        ///   `input_offset`) and `deq_scale` / `quant_bias` of the int8 activation path are accepted and not read;
        /// - FP8 block weights (DeepSeek-V3): an F8 `.weight` with a floating-point `.weight_scale_inv` of
        ///   one value per `weight_block_size` block (`quantization_config`, default 128×128).
        static func checkQuantization(_ source: Checkpoint, model: Model, block: [Int]) throws {
            func unsupported(_ name: String, _ why: String) -> ModelError {
                .unsupported(message: "forward-check does not support quantized weights like '\(name)' yet: \(why)")
            }
            func weight(of name: String) -> String { String(name[..<(name.lastIndex(of: ".") ?? name.endIndex)]) + ".weight" }
            for t in source.tensors {
                guard let role = model.roles[t.name] else { continue }
                switch role.parameter {
                case .blockScale:
                    let w = weight(of: t.name)
                    guard source.contains(w), case let info = try source.tensor(w), info.shape.count == 2, t.dtype.isFloatingPoint else {
                        throw unsupported(t.name, "a weight_scale_inv is read only next to a 2-D weight, as floating point")
                    }
                    let blocks = [(info.shape[0] + block[0] - 1) / block[0], (info.shape[1] + block[1] - 1) / block[1]]
                    guard t.shape == blocks else {
                        throw unsupported(
                            t.name, "one scale per \(block[0])×\(block[1]) block of '\(w)' \(info.shape) is \(blocks), this is \(t.shape)")
                    }
                case .perChannel, .perTensor:
                    let w = weight(of: t.name)
                    guard source.contains(w), try source.tensor(w).dtype == .i8 else {
                        throw unsupported(t.name, "quantization parameters are read only for an I8 weight (int8 W8A8)")
                    }
                case .weight where !t.dtype.isFloatingPoint && t.name.hasSuffix(".weight"):
                    guard t.dtype == .i8, model.facts.family != .bert, !unquantized.contains(role.kind), t.shape.count == 2 else {
                        throw unsupported(
                            t.name,
                            "\(t.dtype.rawValue) weights are dequantized only as int8 W8A8 attention, MLP and expert linears of decoders")
                    }
                    let prefix = String(t.name.dropLast("weight".count))
                    for (parameter, required) in [("weight_scale", true), ("weight_offset", false)] {
                        guard source.contains(prefix + parameter) else {
                            if required { throw unsupported(t.name, "the I8 weight has no '\(prefix)weight_scale'") }
                            continue
                        }
                        let p = try source.tensor(prefix + parameter)
                        guard p.dtype.isFloatingPoint, p.shape == [t.shape[0]] || p.shape == [t.shape[0], 1] else {
                            throw unsupported(
                                prefix + parameter,
                                "a per-output-channel \(parameter) is floating point [\(t.shape[0])] or [\(t.shape[0]), 1], this is \(p.dtype.rawValue) \(p.shape)"
                            )
                        }
                    }
                default:
                    continue
                }
            }
        }

        /// The RoPE parameters of either config dialect: transformers ≥ 5 `rope_parameters` (with
        /// `rope_theta` and `rope_type` inside), or the older `rope_scaling` (`type` or `rope_type`) next
        /// to a top-level `rope_theta` — what `standardize_rope_params` merges.
        static func ropeParameters(_ config: Config) -> [String: JSONValue] {
            var p = config.ropeParameters ?? config.ropeScaling ?? [:]
            if p["rope_type"] == nil { p["rope_type"] = p["type"] ?? .string("default") }
            if p["rope_theta"] == nil, let theta = config.ropeTheta { p["rope_theta"] = .number(theta) }
            if p["original_max_position_embeddings"] == nil, let m = config.maxPositionEmbeddings {
                p["original_max_position_embeddings"] = .number(Double(m))
            }
            return p
        }

        /// `inv_freq = 1 / θ^(2i/d)` (`_compute_default_rope_parameters`), adjusted by the rope type:
        /// `linear` (divide by `factor`), `llama3` (`_compute_llama3_parameters`) or `yarn`
        /// (`_compute_yarn_parameters`, which also gives the `attention_factor` that scales cos and sin),
        /// all in `modeling_rope_utils.py`. Returns the frequencies and that factor (1 but for YaRN).
        static func rotaryFrequencies(_ config: Config, headDim: Int) throws -> ([Float], Float) {
            let scaling = ropeParameters(config)
            func number(_ key: String) -> Double? {
                if case .number(let n) = scaling[key] { return n }
                return nil
            }
            if let partial = number("partial_rotary_factor") ?? config.partialRotaryFactor, partial != 1 {
                throw ModelError.unsupported(
                    message: "forward-check applies RoPE to the whole head; partial_rotary_factor \(partial) is not supported yet")
            }
            let theta = number("rope_theta") ?? 10000
            var freq = (0..<headDim / 2).map { 1 / pow(theta, Double(2 * $0) / Double(headDim)) }
            var attentionFactor = 1.0
            var type = "default"
            if case .string(let t) = scaling["rope_type"] { type = t }
            switch type {
            case "default":
                break
            case "linear":
                let factor = number("factor") ?? 1
                freq = freq.map { $0 / factor }
            case "llama3":
                guard let factor = number("factor"), let low = number("low_freq_factor"), let high = number("high_freq_factor"),
                    let original = number("original_max_position_embeddings")
                else {
                    throw ModelError.badConfig(
                        file: "config.json", field: "rope_scaling",
                        message: "llama3 scaling needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings")
                }
                let lowWavelength = original / low
                let highWavelength = original / high
                freq = freq.map { f in
                    let wavelength = 2 * Double.pi / f
                    if wavelength < highWavelength { return f }
                    if wavelength > lowWavelength { return f / factor }
                    let smooth = (original / wavelength - low) / (high - low)
                    return (1 - smooth) * f / factor + smooth * f
                }
            case "yarn":
                guard let factor = number("factor"), let original = number("original_max_position_embeddings") else {
                    throw ModelError.badConfig(
                        file: "config.json", field: "rope_parameters",
                        message: "yarn scaling needs factor and original_max_position_embeddings")
                }
                func mscale(_ scale: Double, _ m: Double = 1) -> Double { scale <= 1 ? 1 : 0.1 * m * log(scale) + 1 }
                if let given = number("attention_factor") {
                    attentionFactor = given
                } else if let m = number("mscale"), let all = number("mscale_all_dim"), m != 0, all != 0 {
                    attentionFactor = Double(Float(mscale(factor, m) / mscale(factor, all)))
                } else {
                    attentionFactor = mscale(factor)
                }
                let betaFast = number("beta_fast").flatMap { $0 == 0 ? nil : $0 } ?? 32
                let betaSlow = number("beta_slow").flatMap { $0 == 0 ? nil : $0 } ?? 1
                let d = Double(headDim)
                func correction(_ rotations: Double) -> Double { d * log(original / (rotations * 2 * .pi)) / (2 * log(theta)) }
                var low = correction(betaFast)
                var high = correction(betaSlow)
                if scaling["truncate"] != .bool(false) { (low, high) = (floor(low), ceil(high)) }
                (low, high) = (max(low, 0), min(high, d - 1))
                if low == high { high += 0.001 }
                // HF computes the ramp and the blend in float32.
                let (lowF, highF) = (Float(low), Float(high))
                freq = (0..<headDim / 2).map { i in
                    let base = Float(pow(theta, Double(2 * i) / d))
                    let extrapolation = 1 / base
                    let interpolation = 1 / (Float(factor) * base)
                    let ramp = min(max((Float(i) - lowF) / (highF - lowF), 0), 1)
                    let extrapolationFactor = 1 - ramp
                    return Double(interpolation * (1 - extrapolationFactor) + extrapolation * extrapolationFactor)
                }
            default:
                throw ModelError.unsupported(
                    message: "forward-check does not support rope type '\(type)' yet (default, linear, llama3 and yarn are)")
            }
            return (freq.map(Float.init), Float(attentionFactor))
        }
    }
}
