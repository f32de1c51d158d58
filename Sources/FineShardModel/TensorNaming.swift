/// Tensor-name knowledge of every supported family, in one place.
///
/// Names follow the Hugging Face checkpoints of each family (`modeling_llama.py`,
/// `modeling_qwen2_moe.py`, `modeling_qwen3_moe.py`, `modeling_mixtral.py`, `modeling_deepseek.py`,
/// `modeling_bert.py`, `modeling_gpt2.py`); quantization parameter suffixes follow Ascend W8A8
/// (msModelSlim) and FP8 block checkpoints (DeepSeek-V3).
///
/// MoE names are the ones transformers 5.19 `save_pretrained` writes (checked on tiny random
/// Qwen2MoeForCausalLM, Qwen3MoeForCausalLM and MixtralForCausalLM models): one tensor per expert,
/// `model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight` (Qwen, DeepSeek) and
/// `model.layers.L.block_sparse_moe.experts.E.{w1,w3,w2}.weight` (Mixtral: gate, up, down).
/// Qwen2-MoE, Qwen3-MoE and Mixtral are the ``ModelFamily/llama`` family plus these expert roles:
/// their attention and norms are Qwen2's, Qwen3's and Mistral's.
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
        if let role = moeLayer(module.split(separator: ".").map(String.init), suffix, layer) { return role }
        return llamaModules[module].flatMap { param($0, suffix, layer: layer) }
    }

    /// The routed experts' projections by checkpoint name: Hugging Face's `gate_proj`/`up_proj`/`down_proj`
    /// and Mixtral's `w1`/`w3`/`w2` (`MixtralExperts`: `w2(act(w1 x) * w3 x)`).
    static let expertProjections: [String: TensorRole.Kind] = [
        "gate_proj": .expertGate, "up_proj": .expertUp, "down_proj": .expertDown,
        "w1": .expertGate, "w3": .expertUp, "w2": .expertDown,
    ]

    /// A MoE block's tensors, shared by every MoE family: the router (`mlp.gate`, Mixtral
    /// `block_sparse_moe.gate`; DeepSeek-V3's `e_score_correction_bias` is its bias), the routed
    /// experts, and Qwen2-MoE's `shared_expert` (singular) with its `shared_expert_gate`.
    static func moeLayer(_ module: [String], _ suffix: String, _ layer: Int) -> TensorRole? {
        guard module.count >= 2, module[0] == "mlp" || module[0] == "block_sparse_moe" else { return nil }
        let mixtral = module[0] == "block_sparse_moe"
        if module.count == 2, module[1] == "gate" {
            if suffix == "e_score_correction_bias", !mixtral { return TensorRole(.router, .bias, layer: layer) }
            return param(.router, suffix, layer: layer)
        }
        if module.count == 4, module[1] == "experts", let expert = Int(module[2]),
            let kind = expertProjections[module[3]],
            mixtral == module[3].hasPrefix("w")
        {
            return param(kind, suffix, layer: layer, expert: expert)
        }
        guard !mixtral else { return nil }
        if module.count == 2, module[1] == "shared_expert_gate" { return param(.sharedExpertGate, suffix, layer: layer) }
        if module.count == 3, module[1] == "shared_expert" || module[1] == "shared_experts" {
            let kinds: [String: TensorRole.Kind] = ["gate_proj": .sharedGate, "up_proj": .sharedUp, "down_proj": .sharedDown]
            return kinds[module[2]].flatMap { param($0, suffix, layer: layer) }
        }
        return nil
    }

    static let deepseekModules: [String: TensorRole.Kind] = [
        "self_attn.q_proj": .mlaHeads, "self_attn.q_b_proj": .mlaHeads, "self_attn.kv_b_proj": .mlaHeads,
        "self_attn.q_a_proj": .mlaReplicated, "self_attn.kv_a_proj_with_mqa": .mlaReplicated,
        "self_attn.q_a_layernorm": .mlaReplicated, "self_attn.kv_a_layernorm": .mlaReplicated,
        "self_attn.o_proj": .oProj,
        "mlp.gate_proj": .gate, "mlp.up_proj": .up, "mlp.down_proj": .down,
        "input_layernorm": .norm, "post_attention_layernorm": .norm,
        // The MTP layer (`num_nextn_predict_layers`) after the last decoder layer.
        "embed_tokens": .embedding, "shared_head.head": .lmHead, "shared_head.norm": .norm,
        "enorm": .norm, "hnorm": .norm, "eh_proj": .replicated,
    ]

    static func deepseekLayer(_ module: [String], _ suffix: String, _ layer: Int) -> TensorRole? {
        if module.first == "mlp", let role = moeLayer(module, suffix, layer) { return role }
        return deepseekModules[module.joined(separator: ".")].flatMap { param($0, suffix, layer: layer) }
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
        /// A name's bytes with its numeric components replaced by '#'.
        struct Template: Hashable {
            var bytes: [UInt8] = []
            func hash(into hasher: inout Hasher) { bytes.withUnsafeBytes { hasher.combine(bytes: $0) } }
        }

        let family: ModelFamily
        private var known: [Template: TensorRole?] = [:]
        /// Reused for every name: no allocation per name.
        private var template = Template()

        init(family: ModelFamily) { self.family = family }

        mutating func role(of name: String) -> TensorRole? {
            // The name with every all-digit component (shorter than 10 digits) replaced by '#', in one
            // pass over its bytes (hundreds of thousands of names in a large checkpoint).
            template.bytes.removeAll(keepingCapacity: true)
            template.bytes.append(contentsOf: name.utf8)
            var numbers: (first: Int?, second: Int?, count: Int) = (nil, nil, 0)
            let length = template.bytes.withUnsafeMutableBufferPointer { t in
                // Rewritten in place: the template is never longer than the name read so far.
                var write = 0
                var componentStart = 0
                var value = 0
                var digitsOnly = true
                for read in 0...t.count {
                    let byte = read < t.count ? t[read] : UInt8(ascii: ".")
                    guard byte == UInt8(ascii: ".") else {
                        if byte >= 0x30 && byte <= 0x39 { value = value &* 10 &+ Int(byte - 0x30) } else { digitsOnly = false }
                        continue
                    }
                    let length = read - componentStart
                    if length > 0, length < 10, digitsOnly {
                        t[write] = UInt8(ascii: "#")
                        write += 1
                        if numbers.count == 0 { numbers.first = value } else if numbers.count == 1 { numbers.second = value }
                        numbers.count += 1
                    } else {
                        for k in componentStart..<read {
                            t[write] = t[k]
                            write += 1
                        }
                    }
                    if read < t.count {
                        t[write] = byte
                        write += 1
                    }
                    (componentStart, value, digitsOnly) = (read + 1, 0, true)
                }
                return write
            }
            template.bytes.removeLast(template.bytes.count - length)
            if let cached = known[template] {
                guard var role = cached else { return nil }
                if role.layer != nil { role.layer = numbers.first }
                if role.expert != nil { role.expert = numbers.second }
                return role
            }
            let role = TensorNaming.role(of: name, family: family)
            // Cache only templates whose numbers are exactly the layer and expert indices.
            let used = (role?.layer != nil ? 1 : 0) + (role?.expert != nil ? 1 : 0)
            if used == numbers.count, role?.layer == numbers.first, role?.expert == numbers.second {
                known[template] = .some(role)
            }
            return role
        }
    }
}
