import Dispatch
import FineShardFormats
import FineShardModel

/// Computes a ``ShardPlan`` from the source tensor table, the recognized model and the parallel
/// configuration, validating everything before anything is written. Pure: no I/O.
public struct ShardPlanner {
    let sources: [TensorInfo]
    let model: Model
    let parallel: ParallelConfig
    let topology: RankTopology
    var problems: [String] = []
    var seenProblems = Set<String>()

    /// Plans `sources` for `parallel`. Throws ``PlanError`` listing every problem found.
    public static func plan(
        sources: [TensorInfo], model: Model, parallel: ParallelConfig, strict: Bool = false, notes: [String] = []
    ) throws -> ShardPlan {
        try plan(sorted: sources.sortedByName(), model: model, parallel: parallel, strict: strict, notes: notes)
    }

    /// ``plan(sources:model:parallel:strict:notes:)`` of sources already sorted by name (a checkpoint's table).
    static func plan(
        sorted sources: [TensorInfo], model: Model, parallel: ParallelConfig, strict: Bool, notes: [String]
    ) throws -> ShardPlan {
        var parallel = parallel
        var notes = notes
        if parallel.enableSharedExpertDP == true, !parallel.expertParallel || parallel.tp <= 1 {
            // vllm-ascend AscendConfig: `enable_shared_expert_dp and enable_expert_parallel and tensor_parallel_size > 1`.
            parallel.enableSharedExpertDP = nil
            notes.append(
                "--additional-config: enable_shared_expert_dp has no effect without --enable-expert-parallel and --tp > 1 (vllm-ascend ascend_config.py); ignored"
            )
        }
        var planner = ShardPlanner(
            sources: sources, model: model, parallel: parallel,
            topology: RankTopology(dp: parallel.dp, tp: parallel.tp, finegrained: parallel.finegrained))
        planner.validateConfiguration()
        guard planner.problems.isEmpty else { throw PlanError.invalidConfiguration(problems: planner.problems) }
        if strict, !model.unknown.isEmpty { throw PlanError.unknownTensors(names: model.unknown) }
        // The fingerprint serializes the whole tensor table: compute it beside the rules.
        final class Digest: @unchecked Sendable { var value = "" }
        let digest = Digest()
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) { [sources = planner.sources, parallel] in
            digest.value = ShardPlan.fingerprint(model: model.facts, parallel: parallel, sources: sources)
        }
        let rules = planner.makeRules()
        if parallel.format == .hdf5,
            let bad = rules.first(where: { $0.output.isEmpty || $0.output.contains("/") || $0.output.contains("\0") || $0.output == "." })
        {
            planner.problem(
                "--format hdf5: tensor '\(bad.output)' cannot be an HDF5 dataset name (it is empty, '.', or contains '/' or NUL); use --format safetensors"
            )
        }
        guard planner.problems.isEmpty else { throw PlanError.invalidConfiguration(problems: planner.problems) }
        let warnings = planner.warnings()
        group.wait()
        return ShardPlan(
            parallel: parallel, topology: planner.topology, model: model.facts, sources: planner.sources, rules: rules,
            unknown: model.unknown, warnings: warnings, notes: notes, fingerprint: digest.value)
    }

    /// The planner's checks of a parallel configuration against a model's facts alone (no tensors):
    /// what `shard` refuses, so what no manifest fineshard writes can hold (docs/SPEC.md §5).
    package static func problems(in parallel: ParallelConfig, facts: ModelFacts) -> [String] {
        var planner = ShardPlanner(
            sources: [], model: Model(facts: facts, roles: TensorRoles(), unknown: [], embedding: nil), parallel: parallel,
            topology: RankTopology(dp: parallel.dp, tp: parallel.tp, finegrained: parallel.finegrained))
        planner.validateConfiguration()
        return planner.problems
    }

    mutating func problem(_ message: String, key: String? = nil) {
        if seenProblems.insert(key ?? message).inserted { problems.append(message) }
    }

    // MARK: - Configuration

    static func optionName(_ c: Component) -> String {
        "finegrained_tp_config." + FineGrainedConfig.vllmKeys.first { $0.1 == c }!.0
    }

    /// "nearest legal: 2, 4" from the values in `1...limit` that satisfy `legal`.
    /// Looks at most 65536 values each way: a hostile size (a prime expert count near 2^61) must not
    /// make the search run for ever.
    static func nearest(_ value: Int, limit: Int, _ legal: (Int) -> Bool) -> String {
        let window = 1 << 16
        let start = min(value, limit)
        let below = stride(from: start, through: max(1, start > window ? start - window : 1), by: -1).first(where: legal)
        let above = value < limit ? (value + 1...(limit - value > window ? value + window : limit)).first(where: legal) : nil
        let values = [below, above].compactMap { $0 }.filter { $0 != value }
        return values.isEmpty ? "" : " (nearest legal: \(values.map(String.init).joined(separator: ", ")))"
    }

    mutating func validateConfiguration() {
        let p = parallel
        if p.dp < 1 { problem("--dp must be at least 1, is \(p.dp)") }
        if p.tp < 1 { problem("--tp must be at least 1, is \(p.tp)") }
        if p.vocabPadding < 1 { problem("--vocab-padding must be at least 1, is \(p.vocabPadding)") }
        if p.maxFileSize < 1 { problem("--max-file-size must be at least 1 byte, is \(p.maxFileSize)") }
        guard problems.isEmpty else { return }
        let (world, overflow) = p.dp.multipliedReportingOverflow(by: p.tp)
        if overflow || world > RankTopology.maxWorldSize {
            return problem("--dp × --tp = \(p.dp) × \(p.tp) is more than \(RankTopology.maxWorldSize) ranks")
        }
        for c in Component.allCases where p.finegrained[c] < 0 {
            problem("\(Self.optionName(c)) must be 0 (follow --tp) or a group size, is \(p.finegrained[c])")
        }
        for c in Component.allCases where p.finegrained[c] > 0 {
            let g = p.finegrained[c]
            if g > p.dp || p.dp % g != 0 {
                problem(
                    "\(Self.optionName(c)) = \(g) must divide --dp \(p.dp) (a group is G consecutive DP ranks)"
                        + Self.nearest(g, limit: p.dp) { p.dp % $0 == 0 })
            }
        }
        if p.finegrained.oProj > 0, p.tp > 1 {
            problem(
                "\(Self.optionName(.oProj)) = \(p.finegrained.oProj) needs --tp 1 (vllm-ascend: the attention output it consumes is not TP-split then), but --tp is \(p.tp)"
            )
        }
        let pattern = p.filePattern
        if !pattern.contains("{part}") { problem("--file-pattern '\(pattern)' must contain {part}") }
        if p.worldSize > 1, !pattern.contains("{rank}"), !(pattern.contains("{dp_rank}") && pattern.contains("{tp_rank}")) {
            problem("--file-pattern '\(pattern)' must contain {rank} (or both {dp_rank} and {tp_rank}) so ranks get different files")
        }
        if pattern.contains("/") || pattern.contains("\0") || pattern.hasPrefix(".") {
            problem("--file-pattern '\(pattern)' must be a plain file name (no '/', no leading '.')")
        }
        if p.layout == .vllm, model.facts.family != .llama, model.facts.family != .deepseek {
            problem(
                "--layout vllm covers the Llama family (Llama, Mistral, Qwen2, Qwen3, Qwen2-MoE, Qwen3-MoE, Mixtral) and DeepSeek-V2/V3; this model is \(model.facts.architecture); use --layout hf"
            )
        }
        validateExpertParallel()
        if p.layout == .vllm, model.facts.tieWordEmbeddings, problems.isEmpty,
            (0..<topology.worldSize).contains(where: { r in
                topology.size(.fineGrained(.embedding)) != topology.size(.fineGrained(.lmHead))
                    || topology.index(.fineGrained(.embedding), rank: r) != topology.index(.fineGrained(.lmHead), rank: r)
            })
        {
            problem(
                "--layout vllm with tied embeddings writes one table per rank (lm_head.weight, the key vLLM's _filter_subtensors keeps), so every rank needs the same embedding and lm_head shard: \(option(.fineGrained(.embedding))) and \(option(.fineGrained(.lmHead))) give different ones"
            )
        }
    }

    /// With expert parallelism, the routed experts must divide evenly over the EP ranks: vLLM's
    /// `determine_expert_map` would give the first `E mod EP` ranks one expert more, a placement
    /// fineshard does not write (yet).
    mutating func validateExpertParallel() {
        guard parallel.expertParallel, let experts = model.facts.nRoutedExperts, parallel.dp >= 1, parallel.tp >= 1 else { return }
        let ep = topology.worldSize
        if experts % ep != 0 {
            problem(
                "the \(experts) routed experts (\(expertCountField)) do not divide evenly over the expert-parallel size --dp × --tp = \(ep); uneven expert placement is not supported yet"
                    + Self.nearest(ep, limit: experts) { experts % $0 == 0 }, key: "experts")
        }
    }

    /// The config.json field the expert count comes from, for messages.
    var expertCountField: String {
        switch model.facts.architecture {
        case let a where a.hasPrefix("Mixtral"): "num_local_experts"
        case let a where a.hasPrefix("Qwen"): "num_experts / num_local_experts"
        default: "n_routed_experts"
        }
    }

    func warnings() -> [String] {
        var out: [String] = []
        let g = parallel.finegrained
        let anyFine = Component.allCases.contains { g[$0] > 0 }
        // vllm-ascend FinegrainedTPConfig raises "can be enabled only for MOE models" when
        // `model_config.is_moe` is false: a model with routed experts passes.
        if anyFine, model.facts.nRoutedExperts == nil {
            out.append("vllm-ascend enables finegrained_tp_config only for MoE models (ascend_config.py); the layout is written anyway")
        }
        if g.mlp > 0, model.facts.nRoutedExperts != nil,
            !model.roles.values.contains(where: {
                mlpGroupKinds.contains($0.kind) && ($0.kind.isShared ? sharedExpertGroup == .fineGrained(.mlp) : true)
            })
        {
            out.append(
                "mlp_tensor_parallel_size = \(g.mlp) has nothing to shard in \(model.facts.architecture): every layer is MoE, and vllm-ascend never applies MLP TP to routed experts\(model.facts.family == .deepseek ? " or DeepSeek's shared experts" : "")"
            )
        }
        if g.oProj > 0 {
            out.append("vllm-ascend runs o_proj TP only in graph mode on a PD-disaggregated decode node (kv consumer)")
        }
        if g.oProj > 0 || g.embedding > 0 {
            out.append("vllm-ascend needs recompute_scheduler_enable=true for embedding or o_proj TP")
        }
        if g.lmHead > 0 {
            out.append("vllm-ascend's enable_reduce_sample is incompatible with lm_head TP")
        }
        return out
    }

    // MARK: - Rules

    /// The EP rank that holds routed expert `expert` of `experts` over `ep` ranks (`experts % ep == 0`).
    ///
    /// vllm-ascend (commit 182b75ea84) `AscendRoutedExperts.init_eplb` (`ops/fused_moe/routed_experts.py`)
    /// calls `init_eplb_config` (`eplb/core/eplb_utils.py`), which without `dynamic_eplb` and
    /// `expert_map_path` returns vLLM's `determine_expert_map(ep_size, ep_rank, n_experts)`
    /// (`fused_moe/expert_map_manager.py`) with its default `"linear"` strategy: EP rank `r` holds
    /// experts `[r·E/EP, (r+1)·E/EP)`. The EP rank is the flattened `dp_rank · TP + tp_rank`
    /// (`FusedMoEParallelConfig.make`), fineshard's global rank. vllm-ascend never uses vLLM's
    /// `"round_robin"` strategy (expert `e` on rank `e mod EP`).
    static func expertOwner(_ expert: Int, experts: Int, ep: Int) -> Int { expert / (experts / ep) }

    /// Dense-MLP and shared-expert kinds: the kinds the fine-grained MLP group may cut.
    var mlpGroupKinds: Set<TensorRole.Kind> { [.gate, .up, .down, .gateUp, .sharedGate, .sharedUp, .sharedDown] }

    /// The group a MoE layer's shared expert is cut over, or nil when it is replicated.
    ///
    /// vllm-ascend `get_parallel_op` (`ops/linear_op.py`, commit 182b75ea84): a shared-expert layer
    /// (`_is_shared_expert_layer`) is replicated when `enable_shared_expert_dp` is on (kept by
    /// `AscendConfig` only with EP and TP > 1); otherwise its `gate_up_proj` / `down_proj` get MLP TP
    /// (`MLPColumnParallelOp` / `MLPRowParallelOp`) when `mlp_tp_enable() and not is_moe_layer(prefix)`,
    /// else the global TP group. `is_moe_layer` reads only DeepSeek's config keys
    /// (`n_routed_experts`, `first_k_dense_replace` — default infinity — and `moe_layer_freq`): it is true
    /// for DeepSeek's MoE layers, which hold its `shared_experts`, and false for every Qwen2-MoE layer,
    /// so Qwen2-MoE's `shared_expert` is cut over the fine-grained MLP group (the global TP without it).
    var sharedExpertGroup: GroupKind? {
        if parallel.enableSharedExpertDP == true { return nil }
        return model.facts.family == .deepseek ? .tensorParallel : .fineGrained(.mlp)
    }

    /// The source tensor named `name` (binary search: the sources are sorted by name).
    /// `near`: the index of a source next to it in name order (a weight's parameters sit beside it).
    func sourceTensor(named name: String, near hint: Int? = nil) -> TensorInfo? {
        sources.index(ofName: name, near: hint).map { sources[$0] }
    }

    func fact(_ value: Int?, _ field: String, for what: String) throws -> Int {
        guard let value else { throw ModelError.missingFact(field: field, neededFor: what) }
        return value
    }

    /// The size of the group a split is made over.
    func size(_ group: GroupKind) -> Int { topology.size(group) }

    /// The option that sets a group's size, for messages.
    func option(_ group: GroupKind) -> String {
        switch group {
        case .tensorParallel: "--tp \(parallel.tp)"
        case .fineGrained(let c): topology.isFineGrained(c) ? "\(Self.optionName(c)) = \(parallel.finegrained[c])" : "--tp \(parallel.tp)"
        case .flattened: "--dp × --tp = \(topology.worldSize) (MoE TP without expert parallel)"
        }
    }

    /// Legal sizes near `n` for a group when `divides(d)` must hold.
    func nearestLegal(_ group: GroupKind, _ divides: (Int) -> Bool) -> String {
        let n = size(group)
        switch group {
        case .fineGrained(let c) where topology.isFineGrained(c):
            return Self.nearest(n, limit: parallel.dp) { parallel.dp % $0 == 0 && divides($0) }
        case .flattened:
            return ""
        default:
            return Self.nearest(n, limit: max(n * 2, 64), divides)
        }
    }

    mutating func makeRules() -> [TensorRule] {
        var rules: [TensorRule] = []
        rules.reserveCapacity(sources.count)
        for (k, source) in sources.enumerated() {
            let role = model.roles.role(of: source.name, near: k) ?? TensorRole(.other)
            let spec = TensorSpec(name: source.name, dtype: source.dtype, shape: source.shape)
            if parallel.layout == .vllm, let scale = Self.vllmAttentionScaleName(source.name) {
                if source.dtype != .f32 || !source.shape.isEmpty {
                    problem(
                        "--layout vllm writes attention scale '\(source.name)' as vLLM's 0-d float32 '\(scale)', but it is \(source.dtype.rawValue) \(source.shape); use --layout hf"
                    )
                }
                rules.append(TensorRule(source: spec, role: role, placement: .replicated, output: scale, fusionIndex: 0))
                continue
            }
            if parallel.layout == .vllm, role.expert != nil, role.parameter == .perTensor {
                problem(
                    "--layout vllm cannot stack per-tensor quantization parameters of routed experts ('\(source.name)'; vLLM's FusedMoE keeps one per expert and projection); use --layout hf",
                    key: "vllmexpertpertensor")
            }
            do {
                let placement = try self.placement(of: spec, role: role, at: k)
                let (output, fusion, stack) = outputName(source.name, role: role)
                rules.append(TensorRule(source: spec, role: role, placement: placement, output: output, fusionIndex: fusion, stack: stack))
            } catch let error as ModelError {
                problem(error.description, key: "model:\(error.description)")
            } catch {
                problem("\(source.name): \(error)")
            }
        }
        if model.facts.tieWordEmbeddings, let embedding = model.embedding.flatMap({ sourceTensor(named: $0) }) {
            let spec = TensorSpec(name: embedding.name, dtype: embedding.dtype, shape: embedding.shape)
            let placement = Placement.split(
                Split(dim: 0, group: .fineGrained(.lmHead), scheme: vocabScheme(rows: spec.shape[0])))
            checkVocab(spec, group: .fineGrained(.lmHead))
            let tied = TensorRule(source: spec, role: TensorRole(.lmHead), placement: placement, output: tiedHeadName, fusionIndex: 0)
            if parallel.layout == .vllm {
                rules.removeAll { $0.source.name == embedding.name && $0.role.kind == .embedding }
            }
            rules.append(tied)
        }
        applyCast(&rules)
        if parallel.layout == .vllm {
            rules += defaultAttentionScales(after: rules)
            checkFusedBlockScales(rules)
        }
        func before(_ a: TensorRule, _ b: TensorRule) -> Bool {
            guard a.output == b.output else { return a.output.utf8Precedes(b.output) }
            return a.stack == b.stack ? a.fusionIndex < b.fusionIndex : (a.stack ?? -1) < (b.stack ?? -1)
        }
        // Rules come out in source order, which is already output order unless names were fused or a head tied.
        return zip(rules, rules.dropFirst()).allSatisfy { before($0, $1) } ? rules : rules.sorted(by: before)
    }

    /// The attention scales vLLM's attention layers keep in their state dict: four 0-d float32 buffers
    /// (`set_default_quant_scales(register_buffer=True)` in vllm/model_executor/layers/attention/attention.py;
    /// vLLM 0.32), which `sharded_state` requires like every other key.
    static let vllmAttentionScales = ["_k_scale", "_v_scale", "_q_scale", "_prob_scale"]

    /// The vLLM name of a checkpoint's own attention scale (`….self_attn.k_scale`, or `….self_attn.k_proj.k_scale`
    /// as vLLM's `maybe_remap_kv_scale_name` also reads it): `….self_attn.attn._k_scale`; nil for other names.
    static func vllmAttentionScaleName(_ name: String) -> String? {
        for scale in ["k", "v", "q", "prob"] {
            for module in [".self_attn.", ".self_attn.\(scale)_proj."] where scale != "prob" || module == ".self_attn." {
                let suffix = module + scale + "_scale"
                if name.hasSuffix(suffix) { return String(name.dropLast(suffix.count)) + ".self_attn.attn._\(scale)_scale" }
            }
        }
        return nil
    }

    /// Scales of 1.0 (vLLM's value without quantized KV) for every attention layer the checkpoint
    /// gives none: fill pieces, no source region.
    func defaultAttentionScales(after rules: [TensorRule]) -> [TensorRule] {
        let present = Set(rules.map(\.output))
        var out: [TensorRule] = []
        for rule in rules where rule.role.kind == .q || rule.role.kind == .mlaHeads {
            guard let prefix = VLLMNaming.attentionScalePrefix(of: rule.source.name, family: model.facts.family) else { continue }
            for scale in Self.vllmAttentionScales where !present.contains(prefix + scale) {
                let spec = TensorSpec(name: prefix + scale, dtype: .f32, shape: [])
                out.append(TensorRule(source: spec, role: TensorRole(.other), placement: .constant(1.0), output: spec.name, fusionIndex: 0))
            }
        }
        return out
    }

    /// The name of a tied lm_head: GPT-2 and BERT-style prefixes aside, Hugging Face's `lm_head.weight`.
    var tiedHeadName: String { "lm_head.weight" }

    /// The output name of a source tensor, its place in a fused tensor and its slot in a stacked one
    /// (`--layout vllm`: ``VLLMNaming``).
    func outputName(_ name: String, role: TensorRole) -> (String, Int, Int?) {
        guard parallel.layout == .vllm else { return (name, 0, nil) }
        let target = VLLMNaming.target(of: name, role: role, facts: model.facts, qLora: hasQLora)
        return (target.name, target.fusion, target.expert)
    }

    /// Whether a DeepSeek checkpoint has q-LoRA (`q_a_proj`), which vLLM fuses with `kv_a_proj_with_mqa`.
    var hasQLora: Bool { model.facts.family == .deepseek && sources.contains { $0.name.contains(".self_attn.q_a_proj.") } }

    /// FP8 block scales of fused parts (`gate_up_proj`, `fused_qkv_a_proj`, `w13_weight_scale_inv`) stack
    /// in block rows: every part but the last must end on a block boundary, as vLLM's merged linear
    /// layers load them (`shard_offset // block_n`).
    mutating func checkFusedBlockScales(_ rules: [TensorRule]) {
        let block = model.facts.weightBlockSize ?? 128
        let outputs = Dictionary(grouping: rules.filter { $0.role.parameter == .blockScale }, by: \.output)
        let weights = Dictionary(rules.filter { $0.role.parameter == .weight }.map { ($0.source.name, $0) }) { a, _ in a }
        // In output order, so the problem reported is the same on every run.
        for (output, parts) in outputs.sorted(by: { $0.key.utf8Precedes($1.key) }) where parts.contains(where: { $0.fusionIndex > 0 }) {
            for rule in parts where parts.contains(where: { $0.stack == rule.stack && $0.fusionIndex > rule.fusionIndex }) {
                let weightName = String(rule.source.name.dropLast("_scale_inv".count))
                guard let weight = sourceTensor(named: weightName), let rows = weight.shape.first else { continue }
                var local = rows
                if case .split(let split) = weights[weightName]?.placement, split.dim == 0 {
                    local = Split.segments(split.scheme, index: 0, of: size(split.group), length: rows).0
                }
                if local % block != 0 {
                    problem(
                        "--layout vllm fuses '\(weightName)' (\(local) rows per rank) into '\(output)', but its FP8 block scales can only be stacked when the rows are a multiple of the \(block)-row blocks; use --layout hf",
                        key: "fusedblock:\(rule.role.kind)")
                }
            }
        }
    }

    func vocabScheme(rows: Int) -> Split.Scheme {
        let pad = parallel.vocabPadding
        return .vocab(rows: rows, padded: (rows + pad - 1) / pad * pad)
    }

    mutating func checkVocab(_ spec: TensorSpec, group: GroupKind) {
        let rows = spec.shape.first ?? 0
        let pad = parallel.vocabPadding
        let padded = (rows + pad - 1) / pad * pad
        let n = size(group)
        if padded % n != 0 {
            problem(
                "vocab of '\(spec.name)' padded to \(padded) rows (\(rows) rounded up to --vocab-padding \(pad)) is not divisible by \(option(group))"
                    + nearestLegal(group) { padded % $0 == 0 }, key: "vocab:\(padded):\(group)")
        }
    }

    /// How the weight of a role is cut, from the weight's shape; nil when it is replicated.
    mutating func weightSplit(_ role: TensorRole, shape: [Int], name: String) throws -> Placement {
        guard shape.count >= 1 else { return .replicated }
        let outDim = role.transposed ? 1 : 0
        let inDim = role.transposed ? 0 : 1
        let facts = model.facts
        func even(_ dim: Int, _ group: GroupKind, _ what: String) -> Placement {
            guard dim < shape.count else { return .replicated }
            let n = size(group)
            if shape[dim] % n != 0 {
                problem(
                    "\(what) of '\(name)' (\(shape[dim])) is not divisible by \(option(group))"
                        + nearestLegal(group) { shape[dim] % $0 == 0 },
                    key: "\(role.kind):\(shape[dim]):\(group)")
            }
            return .split(Split(dim: dim, group: group, scheme: .even))
        }
        switch role.kind {
        case .embedding, .lmHead:
            let group: GroupKind = .fineGrained(role.kind == .embedding ? .embedding : .lmHead)
            checkVocab(TensorSpec(name: name, dtype: .u8, shape: shape), group: group)
            return .split(Split(dim: 0, group: group, scheme: vocabScheme(rows: shape[0])))
        case .q, .mlaHeads:
            if parallel.tp > 1 {
                let heads = try fact(
                    facts.numAttentionHeads, "num_attention_heads", for: "cutting '\(name)' by heads over --tp \(parallel.tp)")
                if heads % parallel.tp != 0 {
                    problem(
                        "num_attention_heads = \(heads) is not divisible by --tp \(parallel.tp)"
                            + Self.nearest(parallel.tp, limit: heads) { heads % $0 == 0 }, key: "heads")
                }
            }
            return even(outDim, .tensorParallel, "the output dimension")
        case .k, .v, .qkv:
            let tp = parallel.tp
            guard tp > 1 || role.kind == .qkv else { return even(outDim, .tensorParallel, "the output dimension") }
            let what = "cutting '\(name)' by heads over --tp \(tp)"
            let heads = try fact(facts.numAttentionHeads, "num_attention_heads", for: what)
            let kvHeads = try fact(facts.numKeyValueHeads, "num_key_value_heads", for: what)
            let headDim = try fact(facts.headDim, "head_dim", for: what)
            if heads % tp != 0 {
                problem(
                    "num_attention_heads = \(heads) is not divisible by --tp \(tp)" + Self.nearest(tp, limit: heads) { heads % $0 == 0 },
                    key: "heads")
            }
            if tp <= kvHeads ? kvHeads % tp != 0 : tp % kvHeads != 0 {
                problem(
                    "num_key_value_heads = \(kvHeads) with --tp \(tp): TP must divide the kv heads or be a multiple of them (each kv head then replicated over TP / \(kvHeads) ranks)"
                        + Self.nearest(tp, limit: max(tp * 2, kvHeads)) { $0 <= kvHeads ? kvHeads % $0 == 0 : $0 % kvHeads == 0 },
                    key: "kvheads")
            }
            let expected = role.kind == .qkv ? (heads + 2 * kvHeads) * headDim : kvHeads * headDim
            guard outDim < shape.count, shape[outDim] == expected else {
                throw ModelError.shapeMismatch(
                    tensor: name, shape: shape,
                    expected:
                        "\(expected) along dimension \(outDim) from num_attention_heads \(heads), num_key_value_heads \(kvHeads), head_dim \(headDim)"
                )
            }
            let scheme: Split.Scheme =
                role.kind == .qkv ? .qkv(heads: heads, kvHeads: kvHeads, headSize: headDim) : .kvHeads(heads: kvHeads, headSize: headDim)
            return .split(Split(dim: outDim, group: .tensorParallel, scheme: scheme))
        case .oProj:
            return even(inDim, .fineGrained(.oProj), "the input dimension")
        case .gate, .up:
            return even(outDim, .fineGrained(.mlp), "the intermediate size")
        case .gateUp:
            let placement = even(outDim, .fineGrained(.mlp), "the fused intermediate size")
            guard case .split(var split) = placement else { return placement }
            let half = shape[outDim] / 2
            if half % size(.fineGrained(.mlp)) != 0 {
                problem(
                    "the intermediate size of '\(name)' (\(half)) is not divisible by \(option(.fineGrained(.mlp)))", key: "gateup:\(half)")
            }
            split.scheme = .segments([half, half])
            return .split(split)
        case .down:
            return even(inDim, .fineGrained(.mlp), "the intermediate size")
        case .expertGate, .expertUp, .expertDown:
            if parallel.expertParallel {
                let experts = try fact(facts.nRoutedExperts, expertCountField, for: "expert parallelism")
                let ep = topology.worldSize
                guard experts % ep == 0, let expert = role.expert else { return .replicated }
                return .owned(rank: Self.expertOwner(expert, experts: experts, ep: ep))
            }
            // vLLM flattens MoE TP over DP (`FusedMoEParallelConfig.flatten_tp_across_dp_and_pcp`):
            // w1/w3 column-parallel, w2 row-parallel over all DP × TP ranks.
            return even(role.kind == .expertDown ? inDim : outDim, .flattened, "the expert intermediate size")
        case .sharedGate, .sharedUp, .sharedDown:
            guard let group = sharedExpertGroup else { return .replicated }
            return even(role.kind == .sharedDown ? inDim : outDim, group, "the shared-expert intermediate size")
        case .router, .sharedExpertGate, .norm, .positionEmbedding, .buffer, .replicated, .other, .mlaReplicated:
            return .replicated
        }
    }

    /// The placement of a tensor: weights by their role, biases and per-channel parameters
    /// following a column-parallel weight's rows (whole with a row-parallel one), per-tensor
    /// parameters replicated, FP8 block scales cut in block units where the weight is cut.
    /// `index`: the source's index in ``sources``, where its weight is looked for first.
    mutating func placement(of spec: TensorSpec, role: TensorRole, at index: Int? = nil) throws -> Placement {
        if role.parameter == .weight { return try weightSplit(role, shape: spec.shape, name: spec.name) }
        if role.parameter == .perTensor {
            // With EP a routed expert's per-tensor parameters live with it (vLLM's FusedMoE loads only
            // the local experts' `input_scale`); otherwise every rank holds them whole.
            if role.expert != nil, parallel.expertParallel,
                case .owned(let rank) = try weightSplit(role, shape: spec.shape, name: spec.name)
            {
                return .owned(rank: rank)
            }
            return replicatedParameter(spec, role)
        }
        // Dequantized weights are written without their block scales: no block alignment to check.
        if role.parameter == .blockScale, castsFP8 { return .replicated }
        let weightName = String(spec.name.utf8[..<spec.name.utf8.lastIndex(of: UInt8(ascii: "."))!])! + ".weight"
        guard let weight = sourceTensor(named: weightName, near: index), weight.shape.count >= 1 else {
            // A parameter without its weight: cut it as its own weight would be cut along rows.
            return role.parameter == .blockScale
                ? .replicated : try weightSplit(role, shape: spec.shape, name: spec.name).rowsOnly(transposed: role.transposed)
        }
        let weightPlacement = try weightSplit(role, shape: weight.shape, name: weightName)
        switch (weightPlacement, role.parameter) {
        case (.split(let split), .blockScale):
            let block = model.facts.weightBlockSize ?? 128
            let length = weight.shape[split.dim]
            let expectedBlocks = weight.shape.map { ($0 + block - 1) / block }
            if spec.shape != expectedBlocks {
                throw ModelError.shapeMismatch(
                    tensor: spec.name, shape: spec.shape,
                    expected: "\(expectedBlocks): one scale per \(block)×\(block) block of '\(weightName)' \(weight.shape)")
            }
            let n = size(split.group)
            let bad = Split.boundaries(split.scheme, of: n, length: length).first { $0 % block != 0 && $0 != length }
            if let bad {
                let width = Split.segments(split.scheme, index: 0, of: n, length: length).0
                problem(
                    "'\(weightName)' would be cut at \(bad) along dimension \(split.dim) (shards \(width) wide over \(option(split.group))), not a multiple of the \(block)-wide FP8 blocks of '\(spec.name)'",
                    key: "block:\(role.kind):\(length):\(split.group)")
            }
            return .split(Split(dim: split.dim, group: split.group, scheme: .blocks(of: split.scheme, weightLength: length, block: block)))
        case (.split(let split), _):
            let outDim = role.transposed ? 1 : 0
            guard split.dim == outDim else { return replicatedParameter(spec, role) }
            let rows = weight.shape[outDim]
            guard spec.shape.first == rows else {
                throw ModelError.shapeMismatch(
                    tensor: spec.name, shape: spec.shape,
                    expected: "first dimension \(rows), the output channels of '\(weightName)' \(weight.shape)")
            }
            return .split(Split(dim: 0, group: split.group, scheme: split.scheme))
        default:
            return weightPlacement == .replicated ? replicatedParameter(spec, role) : weightPlacement
        }
    }

    mutating func replicatedParameter(_ spec: TensorSpec, _ role: TensorRole) -> Placement {
        let fusedKinds: Set<TensorRole.Kind> = [.q, .k, .v, .gate, .up]
        let perTensorKinds = fusedKinds.union([.sharedGate, .sharedUp, .expertGate, .expertUp, .expertDown])
        if parallel.layout == .vllm,
            role.parameter == .perTensor
                && (perTensorKinds.contains(role.kind)
                    || VLLMNaming.target(of: spec.name, role: role, facts: model.facts, qLora: hasQLora).fusion > 0)
                || role.parameter == .blockScale && fusedKinds.contains(role.kind)
        {
            problem(
                "--layout vllm cannot fuse per-tensor or block quantization parameters ('\(spec.name)'); use --layout hf", key: "vllmquant")
        }
        return .replicated
    }
}

extension Placement {
    /// A column cut stays on the parameter's dimension 0; a row cut leaves it whole.
    func rowsOnly(transposed: Bool) -> Placement {
        guard case .split(let split) = self else { return self }
        return split.dim == (transposed ? 1 : 0) ? .split(Split(dim: 0, group: split.group, scheme: split.scheme)) : .replicated
    }
}
