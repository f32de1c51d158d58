import FineShardFormats
import FineShardModel

extension ShardPlanner {
    /// Whether `--dtype bf16` dequantizes FP8 block weights (their scales are then not written).
    var castsFP8: Bool { parallel.dtype == .bf16 }

    /// `--dtype bf16` (docs/SPEC.md §4): every F8_E4M3 weight with a `weight_scale_inv` gets the
    /// FP8 block dequantization and is written as BF16; its scale is written nowhere (the pieces name it).
    /// With `--cast-floats`, F32 / F16 weights and biases are cast to BF16 too — not the router's
    /// `e_score_correction_bias`, which vLLM keeps in float32 (`DeepseekV2MoE`), nor buffers, quantization
    /// parameters or tensors no rule knows. Every other tensor keeps its dtype, as in DeepSeek's
    /// `fp8_cast_bf16.py`.
    mutating func applyCast(_ rules: inout [TensorRule]) {
        guard castsFP8 else {
            if parallel.castFloats == true { problem("--cast-floats casts to --dtype bf16; give --dtype bf16 too") }
            return
        }
        let block = model.facts.weightBlockSize ?? 128
        var consumed = Set<String>()
        var castAny = false
        for k in rules.indices {
            let rule = rules[k]
            let source = rule.source
            if rule.role.parameter == .weight, source.dtype == .f8e4m3 || source.dtype == .f8e5m2 {
                let scaleName = source.name + "_scale_inv"
                guard let scale = sourceTensor(named: scaleName) else {
                    problem("--dtype bf16: FP8 weight '\(source.name)' has no '\(scaleName)' to dequantize it with", key: "noscale")
                    continue
                }
                let blocks = source.shape.map { ($0 + block - 1) / block }
                guard source.dtype == .f8e4m3, source.shape.count == 2, scale.shape == blocks, [.f32, .bf16, .f16].contains(scale.dtype)
                else {
                    problem(
                        "--dtype bf16 dequantizes 2-D F8_E4M3 weights with one F32/BF16/F16 scale per \(block)×\(block) block; '\(source.name)' is \(source.dtype.rawValue) \(source.shape) with '\(scaleName)' \(scale.dtype.rawValue) \(scale.shape)"
                    )
                    continue
                }
                rules[k].transform = .fp8BlockDequant(from: .f8e4m3, scale: scaleName, scaleDType: scale.dtype, block: [block, block])
                consumed.insert(scaleName)
                castAny = true
            } else if parallel.castFloats == true, source.dtype == .f32 || source.dtype == .f16, castsFloat(rule) {
                rules[k].transform = .cast(from: source.dtype)
                castAny = true
            }
        }
        rules.removeAll { consumed.contains($0.source.name) && $0.role.parameter == .blockScale }
        if !castAny { problem("--dtype bf16: the checkpoint has no FP8 block weights (F8_E4M3 with weight_scale_inv) to dequantize") }
    }

    /// Whether `--cast-floats` casts the tensor of this rule.
    func castsFloat(_ rule: TensorRule) -> Bool {
        if case .constant = rule.placement { return false }
        let role = rule.role
        guard role.parameter == .weight || (role.parameter == .bias && role.kind != .router) else { return false }
        return ![.buffer, .other].contains(role.kind) && Self.vllmAttentionScaleName(rule.source.name) == nil
    }
}

extension ShardPlan {
    /// Whether the output's `config.json` drops `quantization_config`: the FP8 block weights it
    /// describes are written dequantized (`--dtype bf16`).
    public var dropsQuantizationConfig: Bool {
        rules.contains { if case .fp8BlockDequant = $0.transform { true } else { false } }
    }
}
