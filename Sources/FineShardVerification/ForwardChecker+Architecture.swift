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
        /// RoPE `inv_freq` (decoders), after `rope_scaling`.
        var invFreq: [Float]
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

            enum CodingKeys: String, CodingKey {
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
            switch facts.family {
            case .deepseek:
                throw ModelError.unsupported(
                    message:
                        "forward-check does not support \(facts.architecture) yet (DeepSeek MLA attention and MoE experts); it covers the Llama family (Llama, Mistral, Qwen2, Qwen3) and BERT encoders"
                )
            case .gpt2:
                throw ModelError.unsupported(
                    message:
                        "forward-check does not support \(facts.architecture) yet (GPT-2 Conv1D weights and fused c_attn); it covers the Llama family (Llama, Mistral, Qwen2, Qwen3) and BERT encoders"
                )
            case .llama, .bert: break
            }
            try checkQuantization(source, model: model)
            let ignorable: (String) -> Bool = {
                $0.hasSuffix("position_ids") || $0.hasSuffix("token_type_ids") || $0.hasPrefix("pooler.") || $0.hasPrefix("bert.pooler.")
            }
            if let unknown = source.tensors.first(where: { model.roles[$0.name]?.kind == .other && !ignorable($0.name) }) {
                throw ModelError.unsupported(
                    message:
                        "forward-check does not know what tensor '\(unknown.name)' computes in \(facts.architecture); not supported yet")
            }
            if let moe = source.tensors.first(where: {
                [.expertUp, .expertGate, .expertDown, .router, .mlaHeads].contains(model.roles[$0.name]?.kind)
            }) {
                throw ModelError.unsupported(message: "forward-check does not support MoE or MLA layers yet ('\(moe.name)')")
            }
            let config =
                try source.config.map { data -> Config in
                    do { return try JSONDecoder().decode(Config.self, from: data) } catch {
                        throw ModelError.badConfig(file: source.path(of: "config.json"), field: "", message: "\(error)")
                    }
                } ?? Config()
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
            arch.headDim = try need(facts.headDim, "head_dim")
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
                arch.invFreq = try rotaryFrequencies(config, headDim: arch.headDim)
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

        /// The linears whose weights may be int8 W8A8 (``Simulation/dequantize(_:_:rank:)``).
        static let quantizable: Set<TensorRole.Kind> = [.q, .k, .v, .qkv, .oProj, .gate, .up, .gateUp, .down]

        /// Accepts Ascend / msModelSlim W8A8 weights — an `I8` `.weight` `[out, in]` of a Llama-family
        /// attention or MLP linear with a floating-point per-output-channel `.weight_scale` (and optional
        /// `.weight_offset`) of shape `[out]` or `[out, 1]` — and throws
        /// ``ModelError/unsupported(message:)`` for every other quantized tensor (FP8 block scales, integer
        /// embeddings or heads, scales without an int8 weight). The per-tensor activation parameters
        /// (`input_scale`, `input_offset`) and `deq_scale` / `quant_bias` of the int8 activation path are
        /// accepted and not read.
        static func checkQuantization(_ source: Checkpoint, model: Model) throws {
            func unsupported(_ name: String, _ why: String) -> ModelError {
                .unsupported(message: "forward-check does not support quantized weights like '\(name)' yet: \(why)")
            }
            func weight(of name: String) -> String { String(name[..<(name.lastIndex(of: ".") ?? name.endIndex)]) + ".weight" }
            for t in source.tensors {
                guard let role = model.roles[t.name] else { continue }
                switch role.parameter {
                case .blockScale:
                    throw unsupported(t.name, "FP8 block-scaled checkpoints need dequantization that is not implemented (int8 W8A8 is)")
                case .perChannel, .perTensor:
                    let w = weight(of: t.name)
                    guard source.contains(w), try source.tensor(w).dtype == .i8 else {
                        throw unsupported(t.name, "quantization parameters are read only for an I8 weight (int8 W8A8)")
                    }
                case .weight where !t.dtype.isFloatingPoint && t.name.hasSuffix(".weight"):
                    guard t.dtype == .i8, model.facts.family == .llama, quantizable.contains(role.kind), t.shape.count == 2 else {
                        throw unsupported(
                            t.name,
                            "\(t.dtype.rawValue) weights are dequantized only as int8 W8A8 attention and MLP linears of the Llama family")
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

        /// `inv_freq = 1 / θ^(2i/d)` (`_compute_default_rope_parameters`), adjusted by `rope_scaling`
        /// type `linear` (divide by `factor`) or `llama3` (`_compute_llama3_parameters` in
        /// `modeling_rope_utils.py`).
        static func rotaryFrequencies(_ config: Config, headDim: Int) throws -> [Float] {
            if let partial = config.partialRotaryFactor, partial != 1 {
                throw ModelError.unsupported(
                    message: "forward-check applies RoPE to the whole head; partial_rotary_factor \(partial) is not supported yet")
            }
            let theta = config.ropeTheta ?? 10000
            var freq = (0..<headDim / 2).map { 1 / pow(theta, Double(2 * $0) / Double(headDim)) }
            guard let scaling = config.ropeScaling else { return freq.map(Float.init) }
            func number(_ key: String) -> Double? {
                if case .number(let n) = scaling[key] { return n }
                return nil
            }
            var type = "default"
            if case .string(let t) = scaling["rope_type"] ?? scaling["type"] ?? .string("default") { type = t }
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
            default:
                throw ModelError.unsupported(
                    message: "forward-check does not support rope_scaling type '\(type)' yet (default, linear and llama3 are)")
            }
            return freq.map(Float.init)
        }
    }
}
