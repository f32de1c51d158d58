/// Tensor-name knowledge of every supported family, in one place.
///
/// Names follow the Hugging Face checkpoints of each family (`modeling_llama.py`,
/// `modeling_deepseek.py`, `modeling_bert.py`, `modeling_gpt2.py`); quantization parameter
/// suffixes follow Ascend W8A8 (msModelSlim) and FP8 block checkpoints (DeepSeek-V3).
enum TensorNaming {
    static let parameterSuffixes: [String: TensorRole.Parameter] = [
        "weight": .weight, "bias": .bias,
        "weight_scale": .perChannel, "weight_offset": .perChannel, "deq_scale": .perChannel, "quant_bias": .perChannel,
        "input_scale": .perTensor, "input_offset": .perTensor,
        "weight_scale_inv": .blockScale,
    ]

    /// The role of tensor `name` in a model of `family`, or nil when no rule knows it.
    static func role(of name: String, family: ModelFamily) -> TensorRole? {
        var parts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 2 else { return nil }
        let suffix = parts.removeLast()
        switch family {
        case .llama, .deepseek:
            if parts == ["model", "embed_tokens"] { return param(.embedding, suffix) }
            if parts == ["lm_head"] { return param(.lmHead, suffix) }
            if parts == ["model", "norm"] { return param(.norm, suffix) }
            if parts.first == "model", parts.count >= 4, parts[1] == "layers", let layer = Int(parts[2]) {
                let module = parts[3...].joined(separator: ".")
                if suffix == "inv_freq" { return TensorRole(.buffer, layer: layer) }
                return family == .llama ? llamaLayer(module, suffix, layer) : deepseekLayer(Array(parts[3...]), suffix, layer)
            }
            if suffix == "inv_freq" { return TensorRole(.buffer) }
        case .bert:
            if parts.first == "bert" { parts.removeFirst() }
            return bert(parts, suffix)
        case .gpt2:
            if parts.first == "transformer" { parts.removeFirst() }
            return gpt2(parts, suffix)
        }
        return nil
    }

    static func param(
        _ kind: TensorRole.Kind, _ suffix: String, layer: Int? = nil, expert: Int? = nil, transposed: Bool = false
    ) -> TensorRole? {
        guard let p = parameterSuffixes[suffix] else { return nil }
        return TensorRole(kind, p, layer: layer, expert: expert, transposed: transposed)
    }

    static let llamaModules: [String: TensorRole.Kind] = [
        "self_attn.q_proj": .q, "self_attn.k_proj": .k, "self_attn.v_proj": .v, "self_attn.qkv_proj": .qkv,
        "self_attn.o_proj": .oProj, "self_attn.q_norm": .norm, "self_attn.k_norm": .norm,
        "mlp.gate_proj": .gate, "mlp.up_proj": .up, "mlp.down_proj": .down, "mlp.gate_up_proj": .gateUp,
        "input_layernorm": .norm, "post_attention_layernorm": .norm,
        "pre_feedforward_layernorm": .norm, "post_feedforward_layernorm": .norm,
    ]

    static func llamaLayer(_ module: String, _ suffix: String, _ layer: Int) -> TensorRole? {
        llamaModules[module].flatMap { param($0, suffix, layer: layer) }
    }

    static let deepseekModules: [String: TensorRole.Kind] = [
        "self_attn.q_proj": .mlaHeads, "self_attn.q_b_proj": .mlaHeads, "self_attn.kv_b_proj": .mlaHeads,
        "self_attn.q_a_proj": .mlaReplicated, "self_attn.kv_a_proj_with_mqa": .mlaReplicated,
        "self_attn.q_a_layernorm": .mlaReplicated, "self_attn.kv_a_layernorm": .mlaReplicated,
        "self_attn.o_proj": .oProj,
        "mlp.gate_proj": .gate, "mlp.up_proj": .up, "mlp.down_proj": .down,
        "mlp.shared_experts.gate_proj": .sharedGate, "mlp.shared_experts.up_proj": .sharedUp,
        "mlp.shared_experts.down_proj": .sharedDown,
        "input_layernorm": .norm, "post_attention_layernorm": .norm,
        // The MTP layer (`num_nextn_predict_layers`) after the last decoder layer.
        "embed_tokens": .embedding, "shared_head.head": .lmHead, "shared_head.norm": .norm,
        "enorm": .norm, "hnorm": .norm, "eh_proj": .replicated,
    ]

    static func deepseekLayer(_ module: [String], _ suffix: String, _ layer: Int) -> TensorRole? {
        let joined = module.joined(separator: ".")
        if joined == "mlp.gate", suffix == "weight" || suffix == "e_score_correction_bias" {
            return TensorRole(.router, suffix == "weight" ? .weight : .bias, layer: layer)
        }
        if module.count == 4, module[0] == "mlp", module[1] == "experts", let expert = Int(module[2]) {
            let kinds: [String: TensorRole.Kind] = ["gate_proj": .expertGate, "up_proj": .expertUp, "down_proj": .expertDown]
            return kinds[module[3]].flatMap { param($0, suffix, layer: layer, expert: expert) }
        }
        return deepseekModules[joined].flatMap { param($0, suffix, layer: layer) }
    }

    static func bert(_ parts: [String], _ suffix: String) -> TensorRole? {
        switch parts {
        case ["embeddings", "word_embeddings"]: return param(.embedding, suffix)
        case ["embeddings", "position_embeddings"], ["embeddings", "token_type_embeddings"]: return param(.positionEmbedding, suffix)
        case ["embeddings", "LayerNorm"]: return param(.norm, suffix)
        case ["embeddings"] where suffix == "position_ids" || suffix == "token_type_ids": return TensorRole(.buffer)
        case ["pooler", "dense"]: return param(.replicated, suffix)
        default: break
        }
        guard parts.count >= 4, parts[0] == "encoder", parts[1] == "layer", let layer = Int(parts[2]) else { return nil }
        let modules: [String: TensorRole.Kind] = [
            "attention.self.query": .q, "attention.self.key": .k, "attention.self.value": .v,
            "attention.output.dense": .oProj, "attention.output.LayerNorm": .norm,
            "intermediate.dense": .up, "output.dense": .down, "output.LayerNorm": .norm,
        ]
        return modules[parts[3...].joined(separator: ".")].flatMap { param($0, suffix, layer: layer) }
    }

    static func gpt2(_ parts: [String], _ suffix: String) -> TensorRole? {
        switch parts {
        case ["wte"]: return param(.embedding, suffix)
        case ["wpe"]: return param(.positionEmbedding, suffix)
        case ["ln_f"]: return param(.norm, suffix)
        case ["lm_head"]: return param(.lmHead, suffix)
        default: break
        }
        guard parts.count >= 3, parts[0] == "h", let layer = Int(parts[1]) else { return nil }
        let module = parts[2...].joined(separator: ".")
        if module == "attn", suffix == "bias" || suffix == "masked_bias" { return TensorRole(.buffer, layer: layer) }
        let modules: [String: TensorRole.Kind] = [
            "ln_1": .norm, "ln_2": .norm, "attn.c_attn": .qkv, "attn.c_proj": .oProj, "mlp.c_fc": .up, "mlp.c_proj": .down,
        ]
        guard let kind = modules[module] else { return nil }
        return param(kind, suffix, layer: layer, transposed: kind != .norm)
    }
}

extension TensorNaming {
    /// ``role(of:family:)`` remembered per name template: names that differ only in their numeric
    /// components (`layers.7.mlp.experts.12.…`) share a role but for the layer and expert, which
    /// are the template's first and second numbers. A DeepSeek-V3 checkpoint has ~136k names and
    /// ~200 templates.
    struct Memo {
        let family: ModelFamily
        private var known: [String: TensorRole?] = [:]

        init(family: ModelFamily) { self.family = family }

        mutating func role(of name: String) -> TensorRole? {
            var template = [UInt8]()
            template.reserveCapacity(name.utf8.count)
            var numbers: [Int] = []
            for component in name.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false) {
                if !template.isEmpty { template.append(UInt8(ascii: ".")) }
                if !component.isEmpty, component.count < 10, component.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
                    numbers.append(component.reduce(0) { $0 * 10 + Int($1 - 0x30) })
                    template.append(UInt8(ascii: "#"))
                } else {
                    template.append(contentsOf: component)
                }
            }
            let key = String(decoding: template, as: UTF8.self)
            if let cached = known[key] {
                guard var role = cached else { return nil }
                if role.layer != nil { role.layer = numbers.first }
                if role.expert != nil { role.expert = numbers.count > 1 ? numbers[1] : nil }
                return role
            }
            let role = TensorNaming.role(of: name, family: family)
            // Cache only templates whose numbers are exactly the layer and expert indices.
            let used = (role?.layer != nil ? 1 : 0) + (role?.expert != nil ? 1 : 0)
            if used == numbers.count, role?.layer == numbers.first, role?.expert == (numbers.count > 1 ? numbers[1] : nil) {
                known[key] = .some(role)
            }
            return role
        }
    }
}
