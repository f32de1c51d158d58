import FineShardPlanning
import Foundation

extension ForwardChecker {
    /// One forward pass over a rank grid, every rank computing with its own weights and the
    /// collectives between them simulated in process, as vLLM / vllm-ascend run it:
    ///
    /// - vocab-parallel embedding (`VocabParallelEmbedding.forward`): ids outside the rank's rows are
    ///   masked to zero, looked up, summed over the embedding group (all-reduce within a TP group;
    ///   with a fine-grained group of DP ranks, ids are all-gathered first and the sum is a reduce-scatter);
    /// - attention on the rank's heads (`QKVParallelLinear`: q heads split, kv heads split or
    ///   replicated over `TP / num_kv_heads` ranks);
    /// - o_proj (`RowParallelLinear`): partial product over the rank's input columns, summed over
    ///   the o_proj group; with a fine-grained o_proj group the attention outputs' column chunks go
    ///   through an all-to-all first and the sum is a reduce-scatter; the bias is added once (group index 0);
    /// - dense MLP: column-parallel gate/up, row-parallel down, summed over the MLP group (all-gather
    ///   and reduce-scatter for a fine-grained group), bias once;
    /// - lm_head (`ParallelLMHead` + `LogitsProcessor._gather_logits`): hidden states all-gathered
    ///   within the lm_head group, each rank's vocab slice of logits, exchanged (all-to-all) so each
    ///   rank gets every slice for its own tokens, padded columns dropped.
    ///
    /// The dense run is this same pass on a grid of one rank reading the source, so the per-rank
    /// arithmetic is shared and only the layout and the collectives differ between the two runs.
    struct Simulation {
        let arch: Architecture
        let weights: any Weights
        let topology: RankTopology
        /// Rows of the (padded) vocab-parallel tables; the real vocabulary for the dense run.
        let paddedVocab: Int
        /// Token ids of every rank, its sequences stacked.
        let tokens: [[Int]]
        /// Lengths of the independent sequences in every rank's rows.
        let segments: [[Int]]
        /// Every rank's rows as (DP batch, position), the same token in both passes.
        let rowIDs: [[RowID]]
        /// MoE experts on their EP ranks (`--enable-expert-parallel`), or split over DP × TP.
        let expertParallel: Bool
        /// vllm-ascend `enable_shared_expert_dp` in effect (with EP and TP > 1): shared experts whole on every rank.
        var sharedExpertDP = false
        let threads: Int
        /// Where this pass records its probes and routing.
        let trace: Trace
        /// The dense pass's trace, for settling routing choices; nil in the dense pass.
        let reference: Trace?
        /// The routing margin below which another choice is a near-tie.
        let tieTolerance: Float

        var world: Int { topology.worldSize }

        /// The ranks of one communication group, in shard-index order, and whether they share one
        /// token batch (a TP group: all-reduce) or not (a fine-grained group of DP ranks: all-gather
        /// then reduce-scatter).
        struct Group {
            var members: [Int]
            var sameBatch: Bool
        }

        /// The groups of `kind`, following vllm-ascend's `init_ascend_model_parallel`: G consecutive DP
        /// ranks at one TP index, or the TP group of a DP rank.
        func groups(_ kind: GroupKind) -> [Group] {
            var seen = Set<[Int]>()
            var out: [Group] = []
            for r in 0..<world {
                let members = topology.members(kind, of: r)
                guard seen.insert(members).inserted else { continue }
                precondition(members.enumerated().allSatisfy { topology.index(kind, rank: $0.element) == $0.offset })
                out.append(Group(members: members, sameBatch: Set(members.map(topology.dpRank)).count == 1))
            }
            return out
        }

        /// Runs `partial(rank, index, sources)` on every member of every group of `kind` and sums the
        /// partials as the group's collective does. `sources` are the ranks whose rows the member
        /// computes on: itself in a TP group (then the sum is an all-reduce), every member in a
        /// fine-grained group (rows stacked in member order; each member keeps its own rows of the
        /// sum: a reduce-scatter).
        func groupSum(_ kind: GroupKind, _ partial: (_ rank: Int, _ index: Int, _ sources: [Int]) throws -> Matrix) rethrows -> [Matrix] {
            var out = [Matrix?](repeating: nil, count: world)
            for g in groups(kind) {
                var sum: Matrix?
                for (i, r) in g.members.enumerated() {
                    let p = try partial(r, i, g.sameBatch ? [r] : g.members)
                    if sum == nil { sum = p } else { sum! += p }
                }
                var start = 0
                for r in g.members {
                    if g.sameBatch {
                        out[r] = sum!
                    } else {
                        out[r] = sum!.rows(start..<start + tokens[r].count)
                        start += tokens[r].count
                    }
                }
            }
            return out.map { $0! }
        }

        // MARK: - Weights

        /// Throws unless the rank holds `name` with the shape its computation needs.
        func expectShape(_ name: String, rank: Int, _ expected: [Int]) throws {
            guard let shape = try weights.shape(name, rank: rank) else {
                throw ForwardCheckError.layoutDisagrees(rank: rank, tensor: name, message: "the rank holds no such tensor")
            }
            guard shape == expected else {
                throw ForwardCheckError.layoutDisagrees(
                    rank: rank, tensor: name, message: "has shape \(shape); this rank computes with \(expected)")
            }
        }

        /// A linear's weight `[rows, cols]`: BF16 as stored, or float32 with int8 W8A8 and FP8 block
        /// weights dequantized.
        func matrix(_ name: String, rank: Int, rows: Int, cols: Int) throws -> Weight {
            try expectShape(name, rank: rank, [rows, cols])
            if let bits = try weights.readBF16(name, rank: rank, rows: nil) { return Weight(rows: rows, cols: cols, bf16: bits) }
            var w = Matrix(rows: rows, cols: cols, data: try weights.read(name, rank: rank, rows: nil))
            try dequantize(&w, name, rank: rank)
            return Weight(w)
        }

        /// Dequantizes an int8 W8A8 weight in place: `w[o, i] = (q[o, i] − offset[o]) · scale[o]`, with the
        /// per-output-channel `weight_scale` and optional `weight_offset` (`[out]` or `[out, 1]`) next to
        /// `.weight` — Ascend W8A8 as msModelSlim writes it (`W8A8LinearMethod` in vllm-ascend's
        /// `quantization/w8a8.py`: a per-channel symmetric or asymmetric int8 weight). A weight with no
        /// `weight_scale` is left as it is (a float weight).
        ///
        /// The parameters are read from the same place as the weight — the rank's shard files in the
        /// sharded pass, the source in the dense one — so a wrong scale shard changes the output. They
        /// follow the weight's rows (docs/SPEC.md §4): a column-parallel shard (q/k/v, gate/up, fused qkv and
        /// gate_up) holds the scales of its own rows; a row-parallel one (o_proj, down) is cut along its
        /// input dimension and every rank holds every row, so the whole scale applies to each shard's
        /// columns. Either way the rank's scale has one value per row of the rank's weight.
        ///
        /// The per-tensor activation parameters (`input_scale`, `input_offset`) and `deq_scale` /
        /// `quant_bias` describe the NPU's int8 activation path (quantize x, int8 matmul, rescale); a
        /// float32 reference does not take it: it checks that the sharded weights dequantize to the same
        /// function as the dense ones, and those parameters are not read.
        func dequantize(_ w: inout Matrix, _ name: String, rank: Int) throws {
            guard name.hasSuffix(".weight") else { return }
            let prefix = String(name.dropLast("weight".count))
            if let shape = try weights.shape(prefix + "weight_scale_inv", rank: rank) {
                try dequantizeBlocks(&w, prefix + "weight_scale_inv", shape: shape, rank: rank)
                return
            }
            func perChannel(_ parameter: String) throws -> [Float]? {
                let pname = prefix + parameter
                guard let shape = try weights.shape(pname, rank: rank) else { return nil }
                guard shape == [w.rows] || shape == [w.rows, 1] else {
                    throw ForwardCheckError.layoutDisagrees(
                        rank: rank, tensor: pname,
                        message:
                            "has shape \(shape); the rank's '\(name)' has \(w.rows) rows, one \(parameter) each ([\(w.rows)] or [\(w.rows), 1])"
                    )
                }
                return try weights.read(pname, rank: rank, rows: nil)
            }
            guard let scale = try perChannel("weight_scale") else {
                if try weights.shape(prefix + "weight_offset", rank: rank) != nil {
                    throw ForwardCheckError.layoutDisagrees(
                        rank: rank, tensor: prefix + "weight_offset", message: "the rank holds a weight_offset without its weight_scale")
                }
                return
            }
            let offset = try perChannel("weight_offset")
            let cols = w.cols
            w.data.withUnsafeMutableBufferPointer { data in
                for o in 0..<scale.count {
                    let (s, z) = (scale[o], offset?[o] ?? 0)
                    for i in o * cols..<(o + 1) * cols { data[i] = (data[i] - z) * s }
                }
            }
        }

        /// Dequantizes an FP8 block weight in place: `w[o, i] = q[o, i] · s[o / B₀, i / B₁]`, with the
        /// `weight_scale_inv` of one float per `B₀ × B₁` block (`quantization_config.weight_block_size`,
        /// DeepSeek-V3's 128 × 128) — vLLM's `Fp8LinearMethod` with `weight_block_size`. A shard is cut on
        /// block boundaries (SPEC §4), so the rank's scale shard is the blocks of its own weight shard:
        /// `[⌈rows / B₀⌉, ⌈cols / B₁⌉]` of the rank's rows and columns.
        func dequantizeBlocks(_ w: inout Matrix, _ name: String, shape: [Int], rank: Int) throws {
            let (b0, b1) = (arch.block[0], arch.block[1])
            let expected = [(w.rows + b0 - 1) / b0, (w.cols + b1 - 1) / b1]
            guard shape == expected else {
                throw ForwardCheckError.layoutDisagrees(
                    rank: rank, tensor: name,
                    message:
                        "has shape \(shape); the rank's weight is [\(w.rows), \(w.cols)], one scale per \(b0)×\(b1) block is \(expected)")
            }
            let scale = try weights.read(name, rank: rank, rows: nil)
            let (rows, cols) = (w.rows, w.cols)
            w.data.withUnsafeMutableBufferPointer { data in
                for o in 0..<rows {
                    for i in 0..<cols { data[o * cols + i] *= scale[(o / b0) * expected[1] + i / b1] }
                }
            }
            if weights.roundsToBF16(String(name.dropLast("_scale_inv".count))) { roundToBF16(&w.data) }
        }

        /// A vector parameter (bias, norm weight), or nil when the rank holds none.
        func vector(_ name: String, rank: Int, count: Int) throws -> [Float]? {
            guard let shape = try weights.shape(name, rank: rank) else { return nil }
            guard shape == [count] else {
                throw ForwardCheckError.layoutDisagrees(
                    rank: rank, tensor: name, message: "has shape \(shape); this rank computes with [\(count)]")
            }
            return try weights.read(name, rank: rank, rows: nil)
        }

        func required(_ name: String, rank: Int, count: Int) throws -> [Float] {
            guard let v = try vector(name, rank: rank, count: count) else {
                throw ForwardCheckError.layoutDisagrees(rank: rank, tensor: name, message: "the rank holds no such tensor")
            }
            return v
        }

        /// The vocab rows `[start, start + per)` a rank holds in a vocab-parallel group, checked against
        /// the manifest's pieces (vLLM `VocabParallelEmbedding._get_indices`).
        func vocabRows(_ name: String, rank: Int, kind: GroupKind) throws -> (start: Int, per: Int) {
            let per = paddedVocab / topology.size(kind)
            let start = topology.index(kind, rank: rank) * per
            if let first = weights.firstSourceRow(name, rank: rank), first != start {
                throw ForwardCheckError.layoutDisagrees(
                    rank: rank, tensor: name,
                    message: "the manifest places source row \(first) first; vLLM's rank \(rank) holds rows [\(start), \(start + per))")
            }
            return (start, per)
        }

        /// The table a rank embeds with: the embedding, or for a tied head in the vllm layout the one
        /// `lm_head.weight` that vLLM's `_filter_subtensors` keeps.
        func embeddingTable(rank: Int) throws -> String {
            try weights.shape(arch.embedding, rank: rank) != nil ? arch.embedding : arch.lmHead
        }

        // MARK: - The pass

        /// Runs the pass; returns every rank's output rows (logits `[T, vocab]`, or the last hidden state
        /// `[T, hidden]` of an encoder).
        func run() throws -> [Matrix] {
            var x = try embed()
            for l in 0..<arch.layers { x = try layer(l, x) }
            guard arch.kind == .decoder else { return x }
            for r in 0..<world {
                Kernels.rmsNorm(&x[r], weight: try required(arch.finalNorm, rank: r, count: arch.hidden), eps: arch.eps)
            }
            return try logits(x)
        }

        /// One layer on every rank: its input hidden states to its output ones. Reads only this
        /// layer's tensors (and of an MoE layer only the experts the tokens pick).
        func layer(_ l: Int, _ input: [Matrix]) throws -> [Matrix] {
            var x = input
            switch arch.kind {
            case .decoder:
                var attention: [Matrix] = []
                for r in 0..<world {
                    var h = x[r]
                    Kernels.rmsNorm(&h, weight: try required(arch.name(l, .inputNorm), rank: r, count: arch.hidden), eps: arch.eps)
                    attention.append(try arch.mla.map { try attendMLA(rank: r, layer: l, h, $0) } ?? attend(rank: r, layer: l, h))
                }
                let o = try project(layer: l, attention)
                var h: [Matrix] = []
                for r in 0..<world {
                    x[r] += o[r]
                    var y = x[r]
                    Kernels.rmsNorm(&y, weight: try required(arch.name(l, .postNorm), rank: r, count: arch.hidden), eps: arch.eps)
                    h.append(y)
                }
                let m: [Matrix]
                if let moe = arch.moe, moe.sparseLayers.contains(l) {
                    m = try self.moe(layer: l, h, moe)
                } else {
                    m = try mlp(layer: l, h)
                }
                let sparse = arch.moe?.sparseLayers.contains(l) == true
                let tensors =
                    sparse ? [arch.moe!.prefix(l) + "experts"] : [arch.name(l, .gate), arch.name(l, .up), arch.name(l, .down)]
                for r in 0..<world {
                    record(.mlp, layer: l, rank: r, tensors: tensors, rows: rowIDs[r], columnOffset: 0, m[r])
                    x[r] += m[r]
                }
            case .encoder:
                let attention = try (0..<world).map { try attend(rank: $0, layer: l, x[$0]) }
                let o = try project(layer: l, attention)
                for r in 0..<world {
                    var y = o[r]
                    y += x[r]
                    try normalize(&y, arch.name(l, .attentionNorm, ""), rank: r)
                    x[r] = y
                }
                let m = try mlp(layer: l, x)
                for r in 0..<world {
                    var y = m[r]
                    y += x[r]
                    try normalize(&y, arch.name(l, .outputNorm, ""), rank: r)
                    x[r] = y
                }
            }
            return x
        }

        /// BERT's LayerNorm with parameters `prefix` + `weight` / `bias`.
        func normalize(_ y: inout Matrix, _ prefix: String, rank: Int) throws {
            Kernels.layerNorm(
                &y, weight: try required(prefix + "weight", rank: rank, count: arch.hidden),
                bias: try required(prefix + "bias", rank: rank, count: arch.hidden), eps: arch.eps)
        }

        /// Vocab-parallel embedding, then (BERT) position and token-type 0 embeddings and LayerNorm.
        func embed() throws -> [Matrix] {
            let kind = GroupKind.fineGrained(.embedding)
            var x = try groupSum(kind) { r, _, sources in
                let table = try embeddingTable(rank: r)
                let (start, per) = try vocabRows(table, rank: r, kind: kind)
                try expectShape(table, rank: r, [per, arch.hidden])
                let ids = sources.flatMap { tokens[$0] }
                var out = Matrix(rows: ids.count, cols: arch.hidden)
                var rows: [Int: [Float]] = [:]
                for (t, id) in ids.enumerated() where id >= start && id < min(start + per, arch.vocab) {
                    if rows[id] == nil { rows[id] = try weights.read(table, rank: r, rows: id - start..<id - start + 1) }
                    out.data.replaceSubrange(t * arch.hidden..<(t + 1) * arch.hidden, with: rows[id]!)
                }
                return out
            }
            guard arch.kind == .encoder else { return x }
            for r in 0..<world {
                let positions = segments[r].flatMap { 0..<$0 }
                let type0 = try weights.read(arch.tokenTypeEmbedding, rank: r, rows: 0..<1)
                let table = try weights.read(arch.positionEmbedding, rank: r, rows: 0..<(positions.max() ?? 0) + 1)
                for (t, p) in positions.enumerated() {
                    for i in 0..<arch.hidden { x[r].data[t * arch.hidden + i] += table[p * arch.hidden + i] + type0[i] }
                }
                try normalize(&x[r], arch.embeddingNorm, rank: r)
            }
            return x
        }

        /// Self-attention of one rank on its own heads; returns `[T, localHeads · headDim]`.
        func attend(rank r: Int, layer l: Int, _ h: Matrix) throws -> Matrix {
            let tp = topology.tp
            let heads = arch.heads / tp
            let kvHeads = arch.kvHeads >= tp ? arch.kvHeads / tp : 1
            let d = arch.headDim
            let (qRows, kvRows) = (heads * d, kvHeads * d)
            var q: Matrix
            var k: Matrix
            let v: Matrix
            if try weights.shape(arch.name(l, .qkv), rank: r) != nil {
                // vLLM's fused QKVParallelLinear shard: [q_r; k_r; v_r].
                let w = try matrix(arch.name(l, .qkv), rank: r, rows: qRows + 2 * kvRows, cols: arch.hidden)
                let b = try vector(arch.name(l, .qkv, "bias"), rank: r, count: qRows + 2 * kvRows)
                q = Kernels.linear(h, weight: w.rows(0..<qRows), bias: b.map { Array($0[0..<qRows]) }, threads: threads)
                k = Kernels.linear(
                    h, weight: w.rows(qRows..<qRows + kvRows), bias: b.map { Array($0[qRows..<qRows + kvRows]) }, threads: threads)
                v = Kernels.linear(
                    h, weight: w.rows(qRows + kvRows..<qRows + 2 * kvRows), bias: b.map { Array($0[(qRows + kvRows)...]) }, threads: threads
                )
            } else {
                func project(_ module: Architecture.Module, _ rows: Int) throws -> Matrix {
                    Kernels.linear(
                        h, weight: try matrix(arch.name(l, module), rank: r, rows: rows, cols: arch.hidden),
                        bias: try vector(arch.name(l, module, "bias"), rank: r, count: rows), threads: threads)
                }
                q = try project(.q, qRows)
                k = try project(.k, kvRows)
                v = try project(.v, kvRows)
            }
            let positions = segments[r].flatMap { 0..<$0 }
            if arch.kind == .decoder {
                // Qwen3: RMSNorm over each head before RoPE.
                if let w = try vector(arch.name(l, .qNorm), rank: r, count: d) {
                    var perHead = Matrix(rows: q.rows * heads, cols: d, data: q.data)
                    Kernels.rmsNorm(&perHead, weight: w, eps: arch.eps)
                    q.data = perHead.data
                }
                if let w = try vector(arch.name(l, .kNorm), rank: r, count: d) {
                    var perHead = Matrix(rows: k.rows * kvHeads, cols: d, data: k.data)
                    Kernels.rmsNorm(&perHead, weight: w, eps: arch.eps)
                    k.data = perHead.data
                }
                Kernels.rope(&q, heads: heads, headDim: d, positions: positions, invFreq: arch.invFreq, scale: arch.ropeScale)
                Kernels.rope(&k, heads: kvHeads, headDim: d, positions: positions, invFreq: arch.invFreq, scale: arch.ropeScale)
            }
            return Kernels.attention(
                q: q, k: k, v: v, heads: heads, kvHeads: kvHeads, headDim: d, segments: segments[r], causal: arch.kind == .decoder)
        }

        /// o_proj, row-parallel over the o_proj group; a fine-grained group exchanges column chunks first.
        func project(layer l: Int, _ attention: [Matrix]) throws -> [Matrix] {
            let kind = GroupKind.fineGrained(.oProj)
            let n = topology.size(kind)
            let chunked = topology.isFineGrained(.oProj)
            let tensors =
                arch.mla == nil
                ? [arch.name(l, .q), arch.name(l, .k), arch.name(l, .v)]
                : [arch.name(l, .qB), arch.name(l, .kvB)]
            for r in 0..<world {
                record(
                    .attention, layer: l, rank: r, tensors: tensors, rows: rowIDs[r], columnOffset: topology.tpRank(r) * attention[r].cols,
                    attention[r])
            }
            let out = try groupSum(kind) { r, i, sources in
                let input = Matrix.stacking(
                    sources.map { s in
                        let width = attention[s].cols / n
                        return chunked ? attention[s].columns(i * width..<(i + 1) * width) : attention[s]
                    })
                let w = try matrix(arch.name(l, .o), rank: r, rows: arch.hidden, cols: input.cols)
                let bias = try vector(arch.name(l, .o, "bias"), rank: r, count: arch.hidden)
                return Kernels.linear(input, weight: w, bias: i == 0 ? bias : nil, threads: threads)
            }
            for r in 0..<world { record(.oProj, layer: l, rank: r, tensors: [arch.name(l, .o)], rows: rowIDs[r], columnOffset: 0, out[r]) }
            return out
        }

        /// The dense MLP over the MLP group: gate/up (SiLU-gated) or intermediate (GELU), then down.
        func mlp(layer l: Int, _ h: [Matrix]) throws -> [Matrix] {
            let kind = GroupKind.fineGrained(.mlp)
            let local = arch.intermediate / topology.size(kind)
            return try groupSum(kind) { r, i, sources in
                let input = Matrix.stacking(sources.map { h[$0] })
                var a: Matrix
                if try weights.shape(arch.name(l, .gateUp), rank: r) != nil {
                    // vLLM's MergedColumnParallelLinear shard: [gate_r; up_r].
                    let w = try matrix(arch.name(l, .gateUp), rank: r, rows: 2 * local, cols: arch.hidden)
                    let b = try vector(arch.name(l, .gateUp, "bias"), rank: r, count: 2 * local)
                    let gate = Kernels.linear(input, weight: w.rows(0..<local), bias: b.map { Array($0[0..<local]) }, threads: threads)
                    a = Kernels.linear(input, weight: w.rows(local..<2 * local), bias: b.map { Array($0[local...]) }, threads: threads)
                    for j in a.data.indices { a.data[j] *= Kernels.silu(gate.data[j]) }
                } else {
                    a = Kernels.linear(
                        input, weight: try matrix(arch.name(l, .up), rank: r, rows: local, cols: arch.hidden),
                        bias: try vector(arch.name(l, .up, "bias"), rank: r, count: local), threads: threads)
                    if arch.kind == .decoder {
                        let gate = Kernels.linear(
                            input, weight: try matrix(arch.name(l, .gate), rank: r, rows: local, cols: arch.hidden),
                            bias: try vector(arch.name(l, .gate, "bias"), rank: r, count: local), threads: threads)
                        for j in a.data.indices { a.data[j] *= Kernels.silu(gate.data[j]) }
                    } else {
                        for j in a.data.indices { a.data[j] = Kernels.gelu(a.data[j]) }
                    }
                }
                let down = try matrix(arch.name(l, .down), rank: r, rows: arch.hidden, cols: local)
                let bias = try vector(arch.name(l, .down, "bias"), rank: r, count: arch.hidden)
                return Kernels.linear(a, weight: down, bias: i == 0 ? bias : nil, threads: threads)
            }
        }

        /// Vocab-parallel logits: each member's slice for the gathered hidden states, exchanged so every
        /// rank gets all slices for its own tokens; columns past the real vocabulary dropped.
        func logits(_ x: [Matrix]) throws -> [Matrix] {
            let kind = GroupKind.fineGrained(.lmHead)
            var out = [Matrix?](repeating: nil, count: world)
            for g in groups(kind) {
                var slices: [Matrix] = []
                for r in g.members {
                    // A tied head of the dense source is the embedding table itself.
                    let head = try weights.shape(arch.lmHead, rank: r) != nil ? arch.lmHead : arch.embedding
                    let (_, per) = try vocabRows(head, rank: r, kind: kind)
                    let input = Matrix.stacking(g.sameBatch ? [x[r]] : g.members.map { x[$0] })
                    slices.append(try streamedLinear(input, head, rank: r, rows: per))
                }
                var start = 0
                for r in g.members {
                    let mine = g.sameBatch ? slices : slices.map { $0.rows(start..<start + tokens[r].count) }
                    if !g.sameBatch { start += tokens[r].count }
                    out[r] = Matrix.concatenating(columns: mine).columns(0..<arch.vocab)
                }
            }
            return out.map { $0! }
        }

        /// `x · Wᵀ` for a large `W` (`[rows, hidden]`), read in blocks of rows so a vocabulary-sized table
        /// never sits in memory whole.
        func streamedLinear(_ x: Matrix, _ name: String, rank: Int, rows: Int) throws -> Matrix {
            try expectShape(name, rank: rank, [rows, arch.hidden])
            let block = max(1, (32 << 20) / (4 * arch.hidden))
            var parts: [Matrix] = []
            for start in stride(from: 0, to: rows, by: block) {
                let stop = min(start + block, rows)
                let w =
                    try weights.readBF16(name, rank: rank, rows: start..<stop).map {
                        Weight(rows: stop - start, cols: arch.hidden, bf16: $0)
                    }
                    ?? Weight(Matrix(rows: stop - start, cols: arch.hidden, data: try weights.read(name, rank: rank, rows: start..<stop)))
                parts.append(Kernels.linear(x, weight: w, threads: threads))
            }
            return Matrix.concatenating(columns: parts)
        }
    }
}
