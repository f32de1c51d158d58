import FineShardFormats
import FineShardModel
import FineShardPlanning
import Foundation

extension ForwardChecker.Architecture {
    /// The MoE layers of a model: which layers are sparse, how a token picks its experts, and the
    /// tensor names of the router, the routed experts and the shared experts. Each family's routing
    /// follows its Hugging Face modeling code exactly (transformers 5.19):
    ///
    /// - DeepSeek-V3 (`DeepseekV3TopkRouter`): sigmoid scores; `e_score_correction_bias` added for the
    ///   selection only; groups ranked by the sum of their two best biased scores, the best `topk_group`
    ///   kept, then the top `num_experts_per_tok` experts of those; the weights are the unbiased scores,
    ///   normalized (`norm_topk_prob`, `+ 1e-20`) and multiplied by `routed_scaling_factor`;
    /// - DeepSeek-V2 (`DeepseekV2TopkRouter`): softmax scores; `topk_method` `greedy` (top-k) or
    ///   `group_limited_greedy` (groups ranked by their best score); times `routed_scaling_factor`, not
    ///   normalized (transformers' V2 router ignores `norm_topk_prob`);
    /// - Qwen2-MoE, Qwen3-MoE (`Qwen2MoeTopKRouter`, `Qwen3MoeTopKRouter`): softmax, top-k, normalized
    ///   when `norm_topk_prob`; Qwen2-MoE adds `sigmoid(shared_expert_gate(x)) · shared_expert(x)`;
    /// - Mixtral (`MixtralTopKRouter`): softmax, top-k, renormalized — top-k then softmax.
    ///
    /// Dense layers: DeepSeek's first `first_k_dense_replace`; Qwen's `mlp_only_layers` and the layers
    /// where `(layer + 1) % decoder_sparse_step != 0`.
    struct MoE: Sendable {
        enum Scoring: Sendable { case softmax, sigmoid }
        enum Selection: Sendable {
            /// Top-k of all experts.
            case topK
            /// Groups ranked by their best score (DeepSeek-V2 `group_limited_greedy`).
            case groupMax
            /// Groups ranked by the sum of their two best biased scores (DeepSeek-V3 `noaux_tc`).
            case groupTopTwoSum
        }
        enum Style: Sendable { case deepseek, qwen, mixtral }
        enum Part: Sendable { case gate, up, down }

        var experts: Int
        var topK: Int
        var intermediate: Int
        var scoring: Scoring
        var selection: Selection
        var groups = 1
        var topKGroups = 1
        var normalize: Bool
        /// Added to the normalizing sum (DeepSeek-V3: 1e-20).
        var normEpsilon: Float = 0
        var scale: Float = 1
        var correctionBias = false
        /// The shared experts' intermediate size (DeepSeek `n_shared_experts · moe_intermediate_size`,
        /// Qwen2-MoE `shared_expert_intermediate_size`); nil without shared experts.
        var sharedIntermediate: Int?
        /// Qwen2-MoE's `shared_expert_gate`.
        var sharedGate = false
        var sparseLayers: Set<Int>
        var style: Style

        // MARK: Names

        func prefix(_ l: Int) -> String { "model.layers.\(l)." + (style == .mixtral ? "block_sparse_moe." : "mlp.") }
        func router(_ l: Int) -> String { prefix(l) + "gate.weight" }
        func bias(_ l: Int) -> String { prefix(l) + "gate.e_score_correction_bias" }
        func expert(_ l: Int, _ e: Int, _ part: Part) -> String {
            let names: [Part: String] =
                style == .mixtral ? [.gate: "w1", .up: "w3", .down: "w2"] : [.gate: "gate_proj", .up: "up_proj", .down: "down_proj"]
            return prefix(l) + "experts.\(e).\(names[part]!).weight"
        }
        func shared(_ l: Int, _ part: Part) -> String {
            let names: [Part: String] = [.gate: "gate_proj", .up: "up_proj", .down: "down_proj"]
            return prefix(l) + (style == .qwen ? "shared_expert." : "shared_experts.") + names[part]! + ".weight"
        }
        func sharedGateName(_ l: Int) -> String { prefix(l) + "shared_expert_gate.weight" }

        static func recognize(_ config: Config, model: Model, layers: Int) throws -> MoE? {
            guard let experts = config.nRoutedExperts ?? config.numExperts ?? config.numLocalExperts, experts > 0 else { return nil }
            func need(_ value: Int?, _ field: String) throws -> Int {
                guard let value, value > 0 else {
                    throw ModelError.missingFact(field: field, neededFor: "MoE routing in the forward check")
                }
                return value
            }
            let names = model.roles.keys
            let style: Style =
                model.facts.family == .deepseek ? .deepseek : names.contains { $0.contains(".block_sparse_moe.") } ? .mixtral : .qwen
            let topK = try need(config.numExpertsPerTok, "num_experts_per_tok")
            let intermediate = try need(
                config.moeIntermediateSize ?? (style == .mixtral ? model.facts.intermediateSize : nil), "moe_intermediate_size")
            var moe = MoE(
                experts: experts, topK: topK, intermediate: intermediate, scoring: .softmax, selection: .topK, normalize: true,
                sparseLayers: Set(0..<layers), style: style)
            guard topK <= experts else {
                throw ModelError.badConfig(
                    file: "config.json", field: "num_experts_per_tok", message: "\(topK) is more than the \(experts) experts")
            }
            switch style {
            case .deepseek:
                let v2 = config.modelType == "deepseek_v2" || model.facts.architecture.hasPrefix("DeepseekV2")
                // transformers' defaults (configuration_deepseek_v2.py / _v3.py) for absent fields.
                moe.sparseLayers = Set(min(config.firstKDenseReplace ?? (v2 ? 0 : 3), layers)..<layers)
                let n = config.nSharedExperts ?? (v2 ? 2 : 1)
                if n > 0 { moe.sharedIntermediate = n * intermediate }
                if v2 {
                    moe.normalize = false
                    moe.scale = Float(config.routedScalingFactor ?? 1)
                    switch config.topkMethod ?? "greedy" {
                    case "greedy": break
                    case "group_limited_greedy":
                        moe.selection = .groupMax
                        moe.groups = try need(config.nGroup, "n_group")
                        moe.topKGroups = try need(config.topkGroup, "topk_group")
                    case let other:
                        throw ModelError.unsupported(
                            message:
                                "forward-check follows transformers' DeepSeek-V2 router, which has topk_method greedy and group_limited_greedy, not '\(other)'"
                        )
                    }
                } else {
                    if let f = config.scoringFunc, f != "sigmoid" {
                        throw ModelError.unsupported(
                            message: "forward-check follows transformers' DeepSeek-V3 router (sigmoid scores), not scoring_func '\(f)'")
                    }
                    moe.scoring = .sigmoid
                    moe.selection = .groupTopTwoSum
                    moe.groups = config.nGroup ?? 8
                    moe.topKGroups = config.topkGroup ?? 4
                    moe.normalize = config.normTopkProb ?? true
                    moe.normEpsilon = 1e-20
                    moe.scale = Float(config.routedScalingFactor ?? 2.5)
                    moe.correctionBias = true
                }
                if moe.selection != .topK {
                    guard moe.groups > 0, experts % moe.groups == 0, moe.topKGroups <= moe.groups,
                        moe.topKGroups * (experts / moe.groups) >= topK
                    else {
                        throw ModelError.badConfig(
                            file: "config.json", field: "n_group",
                            message:
                                "\(experts) experts in \(moe.groups) groups, \(moe.topKGroups) kept, cannot give \(topK) experts a token"
                        )
                    }
                }
            case .qwen:
                moe.normalize = config.normTopkProb ?? false
                let step = config.decoderSparseStep ?? 1
                let dense = Set(config.mlpOnlyLayers ?? [])
                moe.sparseLayers = Set((0..<layers).filter { !dense.contains($0) && step > 0 && ($0 + 1) % step == 0 })
                if let s = config.sharedExpertIntermediateSize, s > 0, names.contains(where: { $0.contains(".mlp.shared_expert.") }) {
                    moe.sharedIntermediate = s
                    moe.sharedGate = true
                }
            case .mixtral:
                break
            }
            return moe
        }

        // MARK: Routing

        /// One token's routing: the chosen experts (best first), their weights, every expert's score
        /// (to weigh another choice) and the margin of the choice — the smallest gap, in the values
        /// the selection compares, between the last kept and the first dropped group or expert. A
        /// float32 difference below the margin cannot change the choice.
        struct Choice: Sendable, Equatable {
            var experts: [Int]
            var weights: [Float]
            var scores: [Float]
            var margin: Float
        }

        func route(_ logits: [Float], bias: [Float]?) -> Choice {
            let scores = scoring == .sigmoid ? logits.map(Kernels.sigmoid) : Kernels.softmax(logits)
            let values = bias.map { zip(scores, $0).map(+) } ?? scores
            var margin = Float.infinity
            var allowed = Array(0..<experts)
            if selection != .topK {
                let size = experts / groups
                let groupScores = (0..<groups).map { g -> Float in
                    let members = values[g * size..<(g + 1) * size]
                    if selection == .groupMax { return members.max()! }
                    let best = members.sorted(by: >)
                    return best[0] + (best.count > 1 ? best[1] : 0)
                }
                let ranked = (0..<groups).sorted { groupScores[$0] > groupScores[$1] || (groupScores[$0] == groupScores[$1] && $0 < $1) }
                if topKGroups < groups { margin = groupScores[ranked[topKGroups - 1]] - groupScores[ranked[topKGroups]] }
                allowed = ranked.prefix(topKGroups).sorted().flatMap { g in g * size..<(g + 1) * size }
            }
            let ranked = allowed.sorted { values[$0] > values[$1] || (values[$0] == values[$1] && $0 < $1) }
            if ranked.count > topK { margin = min(margin, values[ranked[topK - 1]] - values[ranked[topK]]) }
            return choice(Array(ranked.prefix(topK)), scores: scores, margin: margin)
        }

        /// A sharded choice against the dense one for the same token: the same experts are `same`; other
        /// experts with a margin (of either pass) below `tolerance` are a near-tie, settled on the dense
        /// experts weighted with the sharded scores; any other difference is kept and `differs`.
        static func settle(
            _ choice: Choice, dense: Choice, tolerance: Float, _ moe: MoE
        ) -> (Choice, ForwardCheckReport.RoutingChoice.Outcome) {
            if Set(dense.experts) == Set(choice.experts) { return (choice, .same) }
            guard min(dense.margin, choice.margin) < tolerance else { return (choice, .differs) }
            return (moe.choice(dense.experts, scores: choice.scores, margin: choice.margin), .tie)
        }

        /// The weights of `chosen` experts from the scores: normalized when the model does, scaled.
        func choice(_ chosen: [Int], scores: [Float], margin: Float) -> Choice {
            var weights = chosen.map { scores[$0] }
            if normalize {
                let total = weights.reduce(0, +) + normEpsilon
                weights = weights.map { $0 / total }
            }
            return Choice(experts: chosen, weights: weights.map { $0 * scale }, scores: scores, margin: margin)
        }
    }
}

extension ForwardChecker.Simulation {
    /// The rank vLLM's expert map gives expert `e`: contiguous blocks of `E / EP` experts per rank —
    /// `determine_expert_map` in vLLM's `fused_moe/layer.py` (linear placement) and vllm-ascend's
    /// default expert map without `expert_map_path`. EP spans every rank (EP size = DP × TP).
    func expertOwner(_ e: Int, experts: Int) throws -> Int {
        guard experts % world == 0 else {
            throw ModelError.unsupported(
                message: "\(experts) experts do not divide over \(world) expert-parallel ranks; vLLM's expert map needs E mod EP = 0")
        }
        return e / (experts / world)
    }

    /// An MoE layer over the rank grid, as vLLM's `FusedMoE` runs it:
    ///
    /// - every rank routes its own tokens with its (replicated) router;
    /// - with expert parallelism, each token row is dispatched to the ranks that own its experts
    ///   (``expertOwner(_:experts:)``), which compute those experts whole with their own weights, and the
    ///   weighted results are combined back on the token's rank (all-to-all both ways) — an expert on
    ///   another rank, or another expert's weights, changes the answer;
    /// - without it, MoE tensor parallelism is flattened over DP × TP: every rank computes every
    ///   expert's slice of `moe_intermediate_size` (column-parallel gate/up, row-parallel down) for the
    ///   rows of every rank, and the partials are summed back (all-gather, reduce-scatter);
    /// - shared experts are an MLP on the global TP group (column gate/up, row down, all-reduce), with
    ///   Qwen2-MoE's sigmoid `shared_expert_gate` computed on each rank.
    ///
    /// Expert weights are read only for the experts some token picked. Routing choices are compared
    /// with the dense pass's (``settle(_:layer:rank:row:_:)``).
    func moe(layer l: Int, _ h: [Matrix], _ moe: ForwardChecker.Architecture.MoE) throws -> [Matrix] {
        let e = moe.experts
        var assigned = [[(source: Int, row: Int, weight: Float)]](repeating: [], count: e)
        for r in 0..<world {
            let router = try matrix(moe.router(l), rank: r, rows: e, cols: arch.hidden)
            let bias = moe.correctionBias ? try required(moe.bias(l), rank: r, count: e) : nil
            let logits = Kernels.linear(h[r], weight: router, threads: threads)
            for t in 0..<h[r].rows {
                let choice = settle(moe.route(Array(logits.data[t * e..<(t + 1) * e]), bias: bias), layer: l, rank: r, row: t, moe)
                for (expert, weight) in zip(choice.experts, choice.weights) { assigned[expert].append((r, t, weight)) }
            }
        }
        var out = h.map { Matrix(rows: $0.rows, cols: $0.cols) }
        let parallel = expertParallel && world > 1
        let local = parallel ? moe.intermediate : moe.intermediate / world
        if !parallel, moe.intermediate % world != 0 {
            throw ModelError.unsupported(
                message: "moe_intermediate_size \(moe.intermediate) does not divide over the \(world) ranks MoE tensor parallelism spans")
        }
        for expert in 0..<e where !assigned[expert].isEmpty {
            let tokens = assigned[expert]
            var input = Matrix(rows: tokens.count, cols: arch.hidden)
            for (i, a) in tokens.enumerated() {
                input.data.replaceSubrange(
                    i * arch.hidden..<(i + 1) * arch.hidden, with: h[a.source].data[a.row * arch.hidden..<(a.row + 1) * arch.hidden])
            }
            let rows = tokens.map { rowIDs[$0.source][$0.row] }
            let holders = parallel ? [try expertOwner(expert, experts: e)] : Array(0..<world)
            for k in holders {
                let names = [moe.expert(l, expert, .gate), moe.expert(l, expert, .up), moe.expert(l, expert, .down)]
                if parallel, try weights.shape(names[0], rank: k) == nil {
                    throw ForwardCheckError.layoutDisagrees(
                        rank: k, tensor: names[0],
                        message:
                            "vLLM's expert map (\(e / world) contiguous experts per rank of \(world)) puts expert \(expert) of layer \(l) on this rank, which holds no such tensor"
                    )
                }
                let offset = parallel ? 0 : topology.index(.flattened, rank: k) * local
                let label = "expert \(expert)"
                let gate = Kernels.linear(input, weight: try matrix(names[0], rank: k, rows: local, cols: arch.hidden), threads: threads)
                record(.expertGate, layer: l, rank: k, tensors: [names[0]], rows: rows, columnOffset: offset, gate, label: label)
                var a = Kernels.linear(input, weight: try matrix(names[1], rank: k, rows: local, cols: arch.hidden), threads: threads)
                record(.expertUp, layer: l, rank: k, tensors: [names[1]], rows: rows, columnOffset: offset, a, label: label)
                for j in a.data.indices { a.data[j] *= Kernels.silu(gate.data[j]) }
                let y = Kernels.linear(a, weight: try matrix(names[2], rank: k, rows: arch.hidden, cols: local), threads: threads)
                if parallel || world == 1 {
                    record(.expertDown, layer: l, rank: k, tensors: [names[2]], rows: rows, columnOffset: 0, y, label: label)
                }
                for (i, a) in tokens.enumerated() {
                    for c in 0..<arch.hidden { out[a.source].data[a.row * arch.hidden + c] += a.weight * y.data[i * arch.hidden + c] }
                }
            }
        }
        guard let sharedSize = moe.sharedIntermediate else { return out }
        let shared = try sharedExperts(layer: l, h, moe, intermediate: sharedSize)
        for r in 0..<world { out[r] += shared[r] }
        return out
    }

    /// The shared experts: an MLP of `intermediate`, gated per token by Qwen2-MoE's
    /// `sigmoid(shared_expert_gate(x))`, cut as vllm-ascend's `get_parallel_op` (`ops/linear_op.py`)
    /// cuts a shared-expert layer: whole on every rank with `enable_shared_expert_dp` (which vllm-ascend
    /// keeps only with EP and TP > 1); otherwise on the fine-grained MLP group when MLP TP is on and
    /// `is_moe_layer` is false — every Qwen2-MoE layer, since `is_moe_layer` reads only DeepSeek's config
    /// keys — and on the global TP group for DeepSeek's MoE layers.
    func sharedExperts(layer l: Int, _ h: [Matrix], _ moe: ForwardChecker.Architecture.MoE, intermediate: Int) throws -> [Matrix] {
        let names = [moe.shared(l, .gate), moe.shared(l, .up), moe.shared(l, .down)]
        func partial(_ r: Int, _ input: Matrix, _ local: Int) throws -> Matrix {
            let gate = Kernels.linear(input, weight: try matrix(names[0], rank: r, rows: local, cols: arch.hidden), threads: threads)
            var a = Kernels.linear(input, weight: try matrix(names[1], rank: r, rows: local, cols: arch.hidden), threads: threads)
            for j in a.data.indices { a.data[j] *= Kernels.silu(gate.data[j]) }
            return Kernels.linear(a, weight: try matrix(names[2], rank: r, rows: arch.hidden, cols: local), threads: threads)
        }
        var out: [Matrix]
        if sharedExpertDP {
            out = try (0..<world).map { try partial($0, h[$0], intermediate) }
        } else {
            let kind: GroupKind = moe.style == .deepseek ? .tensorParallel : .fineGrained(.mlp)
            let local = intermediate / topology.size(kind)
            out = try groupSum(kind) { r, _, sources in try partial(r, Matrix.stacking(sources.map { h[$0] }), local) }
        }
        var tensors = names
        if moe.sharedGate {
            tensors.append(moe.sharedGateName(l))
            for r in 0..<world {
                let g = Kernels.linear(
                    h[r], weight: try matrix(moe.sharedGateName(l), rank: r, rows: 1, cols: arch.hidden), threads: threads)
                for t in 0..<h[r].rows {
                    let s = Kernels.sigmoid(g.data[t])
                    for c in 0..<arch.hidden { out[r].data[t * arch.hidden + c] *= s }
                }
            }
        }
        for r in 0..<world { record(.sharedExpert, layer: l, rank: r, tensors: tensors, rows: rowIDs[r], columnOffset: 0, out[r]) }
        return out
    }

    /// Settles one token's routing in the sharded pass against the dense pass's choice for the same
    /// token: the same experts pass; other experts within `tieTolerance` of the choice margin (of either
    /// pass) are a near-tie — summing in another order may flip them — so the dense choice is taken
    /// (weighted with this rank's own scores) and a tie is recorded; any other difference is recorded
    /// as a routing difference and kept, so the numbers show it too. The dense pass records its choices.
    func settle(
        _ choice: ForwardChecker.Architecture.MoE.Choice, layer l: Int, rank r: Int, row t: Int, _ moe: ForwardChecker.Architecture.MoE
    ) -> ForwardChecker.Architecture.MoE.Choice {
        let id = rowIDs[r][t]
        guard let reference else {
            trace.choices[l, default: [:]][id] = choice
            return choice
        }
        guard let dense = reference.choices[l]?[id] else { return choice }
        let (settled, outcome) = ForwardChecker.Architecture.MoE.settle(choice, dense: dense, tolerance: tieTolerance, moe)
        let record = ForwardCheckReport.RoutingChoice(
            rank: r, layer: l, position: id.position, experts: choice.experts, margin: ForwardChecker.finite(choice.margin),
            outcome: outcome, denseExperts: outcome == .same ? nil : dense.experts)
        trace.routing.append(record)
        return settled
    }
}
