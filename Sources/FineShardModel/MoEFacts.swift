import FineShardFormats

/// The mixture-of-experts facts of a model (``ModelFacts/nRoutedExperts``, ``ModelFacts/moeLayers``, …),
/// from `config.json` where it has them and from the expert tensors otherwise.
///
/// Which layers are MoE follows each family's modeling code (transformers 5.19, vLLM 0.32):
/// `Qwen2MoeDecoderLayer` / `Qwen3MoeDecoderLayer` build a sparse block when
/// `layer_idx not in mlp_only_layers and num_experts > 0 and (layer_idx + 1) % decoder_sparse_step == 0`;
/// every Mixtral layer is sparse; vLLM's `DeepseekV2DecoderLayer` when
/// `layer_idx >= first_k_dense_replace and layer_idx % moe_layer_freq == 0`.
struct MoEFacts {
    var experts: Int?
    var perToken: Int?
    var intermediate: Int?
    var sharedIntermediate: Int?
    var layers: [Int]?
    var normTopkProb: Bool?

    /// The MoE dialect of a config.
    enum Style { case qwen, mixtral, deepseekV2, deepseekV3 }

    static func style(_ c: ModelConfig, family: ModelFamily) -> Style? {
        let type = c.modelType?.lowercased() ?? ""
        let arch = c.architectures?.first ?? ""
        if family == .deepseek { return type == "deepseek_v3" || arch.hasPrefix("DeepseekV3") ? .deepseekV3 : .deepseekV2 }
        if type == "mixtral" || arch.hasPrefix("Mixtral") { return .mixtral }
        if ["qwen2_moe", "qwen3_moe"].contains(type) || arch.hasPrefix("Qwen2Moe") || arch.hasPrefix("Qwen3Moe") { return .qwen }
        return nil
    }

    /// `tensors` sorted by name, as `roles`.
    init(config c: ModelConfig, family: ModelFamily, roles: TensorRoles, tensors: [TensorInfo]) throws {
        let style = Self.style(c, family: family)
        let expertIndices = Set(roles.values.compactMap(\.expert))
        let expertLayers = Set(roles.values.compactMap { $0.expert != nil ? $0.layer : nil })
        let configured = c.nRoutedExperts ?? c.numExperts ?? c.numLocalExperts
        if configured == 0, let layer = expertLayers.min() {
            throw ModelError.inconsistent(
                message: "config.json says the model has 0 experts, but layer \(layer) has expert tensors")
        }
        guard let experts = configured?.nonZero ?? expertIndices.count.nonZero else { return }
        if let top = expertIndices.max(), top >= experts {
            let name = roles.first { $0.value.expert == top }?.key ?? "expert \(top)"
            throw ModelError.inconsistent(
                message: "tensor '\(name)' is expert \(top), but the model has \(experts) routed experts (config.json)")
        }
        self.experts = experts
        perToken = c.numExpertsPerTok

        func rows(_ kind: TensorRole.Kind) -> Int? {
            zip(tensors, roles.values).first { $1.kind == kind && $1.parameter == .weight && $0.shape.count == 2 }?.0.shape[0]
        }
        intermediate = c.moeIntermediateSize ?? (style == .mixtral ? c.intermediateSize : nil) ?? rows(.expertGate)
        switch style {
        case .qwen: sharedIntermediate = c.sharedExpertIntermediateSize.map { $0.nonZero } ?? rows(.sharedGate)
        case .deepseekV2, .deepseekV3:
            if let n = c.nSharedExperts, let width = c.moeIntermediateSize {
                sharedIntermediate = (n * width).nonZero
            } else {
                sharedIntermediate = rows(.sharedGate)
            }
        case .mixtral, nil: sharedIntermediate = rows(.sharedGate)
        }
        switch style {
        case .qwen: normTopkProb = c.normTopkProb ?? false
        case .mixtral: normTopkProb = true
        case .deepseekV2: normTopkProb = c.normTopkProb ?? false
        case .deepseekV3: normTopkProb = c.normTopkProb ?? true
        case nil: normTopkProb = c.normTopkProb
        }

        // Which layers are MoE: the config's rule over every layer, checked against the tensors.
        let rule: ((Int) -> Bool)?
        let ruleText: String
        switch style {
        case .qwen:
            let step = c.decoderSparseStep ?? 1
            let dense = Set(c.mlpOnlyLayers ?? [])
            rule = { !dense.contains($0) && ($0 + 1) % step == 0 }
            ruleText = "decoder_sparse_step \(step), mlp_only_layers \(dense.sorted())"
        case .mixtral:
            rule = { _ in true }
            ruleText = "every Mixtral layer is MoE"
        case .deepseekV2, .deepseekV3:
            if let first = c.firstKDenseReplace {
                let freq = c.moeLayerFreq ?? 1
                rule = { $0 >= first && $0 % freq == 0 }
                ruleText = "first_k_dense_replace \(first), moe_layer_freq \(freq)"
            } else {
                rule = nil
                ruleText = ""
            }
        case nil:
            rule = nil
            ruleText = ""
        }
        guard let rule else {
            layers = expertLayers.sorted().nonEmpty
            return
        }
        let present = Set(roles.values.compactMap(\.layer))
        let all = present.union(0..<(c.numHiddenLayers ?? 0))
        let moe = all.filter(rule)
        if let layer = expertLayers.subtracting(moe).min() {
            throw ModelError.inconsistent(
                message: "layer \(layer) has expert tensors, but config.json makes it a dense layer (\(ruleText))")
        }
        let denseMLP = Set(roles.values.compactMap { [.gate, .up, .down, .gateUp].contains($0.kind) ? $0.layer : nil })
        if let layer = denseMLP.intersection(moe).min() {
            throw ModelError.inconsistent(
                message: "layer \(layer) has a dense MLP, but config.json makes it a MoE layer (\(ruleText))")
        }
        layers = moe.sorted().nonEmpty
    }
}

extension Array {
    /// `nil` for an empty array, so "none" reads as "absent".
    var nonEmpty: Self? { isEmpty ? nil : self }
}
