import FineShardFormats
import FineShardModel
import FineShardOutput
import FineShardPlanning
import FineShardSystem
import Foundation

/// The numerical proof of a shard layout (issue 6): the model run densely from the source, and as
/// the ranks of the manifest would run it from their shard files — each DP rank with its own token
/// batch, the collectives of vLLM / vllm-ascend simulated in process (see ``Simulation``) — and every
/// rank's logits (an encoder's last hidden state) compared with the dense ones.
///
/// Byte-exact reassembly (`verify --source`) proves the shards hold the right bytes; this proves that
/// the layout plus the runtime's communication computes the model: a kv head on the wrong rank, two
/// o_proj shards swapped, gate and up swapped, a shifted vocab range or a split row-parallel bias all
/// change the output. All arithmetic is float32; weights stored as bf16, f16 or f8 are widened exactly,
/// and int8 W8A8 weights (Ascend / msModelSlim, per-output-channel `weight_scale` and `weight_offset`)
/// and FP8 block weights (`weight_scale_inv`) are dequantized from the rank's own parameter shards
/// (``Simulation/dequantize(_:_:rank:)``).
///
/// MoE models (DeepSeek-V2/V3 with MLA, Qwen2-MoE, Qwen3-MoE, Mixtral) route every token as their
/// Hugging Face code does; the sharded pass dispatches it to the EP rank vLLM's expert map gives each
/// chosen expert and combines the results (``Simulation/moe(layer:_:_:)``). Routing choices are
/// settled against the dense pass's (near-ties are reported, not failed), and both passes record
/// module outputs (``Trace``) so that a failure names the first module, rank and tensors that differ.
public struct ForwardChecker: Sendable {
    public struct Options: Sendable {
        /// Token ids per DP rank (one list for every rank, or one per DP rank); nil: seeded.
        public var tokens: [[Int]]?
        public var seed: UInt64
        public var tokensPerRank: Int
        /// Largest relative error (max |sharded − dense| / max |dense|) that passes. The sharded run sums
        /// partial products in another order, so float32 results differ in the last bits (≈1e-7 relative);
        /// any layout error moves the output by orders of magnitude more.
        public var tolerance: Float
        public var threads: Int
        /// Put every dense output value in the report (for an independent reference).
        public var includeDense: Bool

        public init(
            tokens: [[Int]]? = nil, seed: UInt64 = 0, tokensPerRank: Int = 8, tolerance: Float = 1e-4, threads: Int = 1,
            includeDense: Bool = false
        ) {
            self.tokens = tokens
            self.seed = seed
            self.tokensPerRank = tokensPerRank
            self.tolerance = tolerance
            self.threads = max(1, threads)
            self.includeDense = includeDense
        }
    }

    public var folder: String
    public var options: Options

    public init(folder: String, options: Options = Options()) {
        self.folder = folder
        self.options = options
    }

    /// Parses `--tokens`: comma-separated ids, `;` between DP ranks (`"1,2,3"` or `"1,2,3;4,5,6"`).
    public static func parseTokens(_ text: String) throws -> [[Int]] {
        try text.split(separator: ";", omittingEmptySubsequences: false).map { batch in
            let ids = batch.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            return try ids.map { s in
                guard let id = Int(s), id >= 0 else {
                    throw ForwardCheckError.badTokens(message: "'\(s)' in --tokens is not a token id (a non-negative integer)")
                }
                return id
            }
        }
    }

    /// Runs both passes and compares them. Bad input (no manifest, another source, an unsupported
    /// model, bad token ids) throws; a numerical difference is reported, never thrown.
    public func run(source: Checkpoint) throws -> ForwardCheckReport {
        let start = Date()
        let (manifest, _) = try Manifest.combine(try Manifest.load(folder: folder), requireAllRanks: true)
        try checkSource(source, manifest: manifest)
        let model = try Model.recognize(source)
        let arch = try Architecture.recognize(source, model: model)
        let parallel = manifest.parallel
        let topology = RankTopology(dp: parallel.dp, tp: parallel.tp, finegrained: parallel.finegrained)
        let batches = try tokenBatches(dp: parallel.dp, arch: arch)

        let denseTrace = Trace()
        let dense = try Simulation(
            arch: arch, weights: SourceWeights(checkpoint: source, bf16: manifest.transformedSources),
            topology: RankTopology(dp: 1, tp: 1, finegrained: FineGrainedConfig()),
            paddedVocab: arch.vocab, tokens: [batches.flatMap { $0 }], segments: [batches.map(\.count)],
            rowIDs: [batches.enumerated().flatMap { d, b in b.indices.map { RowID(batch: d, position: $0) } }], expertParallel: false,
            threads: options.threads, trace: denseTrace, reference: nil, tieTolerance: options.tolerance
        ).run()[0]
        var denseBatches: [Matrix] = []
        var row = 0
        for b in batches {
            denseBatches.append(dense.rows(row..<row + b.count))
            row += b.count
        }

        let pad = parallel.vocabPadding
        let shardedTrace = Trace()
        var shardWeights = ShardWeights(folder: folder, manifest: manifest)
        shardWeights.readAheadDepth = options.threads > 1 ? options.threads : 0
        var shardedPass = Simulation(
            arch: arch, weights: shardWeights, topology: topology,
            paddedVocab: (arch.vocab + pad - 1) / pad * pad,
            tokens: (0..<topology.worldSize).map { batches[topology.dpRank($0)] },
            segments: (0..<topology.worldSize).map { [batches[topology.dpRank($0)].count] },
            rowIDs: (0..<topology.worldSize).map { r in
                batches[topology.dpRank(r)].indices.map { RowID(batch: topology.dpRank(r), position: $0) }
            },
            expertParallel: parallel.expertParallel, threads: options.threads, trace: shardedTrace, reference: denseTrace,
            tieTolerance: options.tolerance)
        shardedPass.sharedExpertDP = parallel.enableSharedExpertDP == true && parallel.expertParallel && parallel.tp > 1
        let sharded = try shardedPass.run()

        var ranks = (0..<topology.worldSize).map { r in
            compare(
                rank: r, dpRank: topology.dpRank(r), tpRank: topology.tpRank(r), tokens: batches[topology.dpRank(r)],
                dense: denseBatches[topology.dpRank(r)], sharded: sharded[r])
        }
        var differences = shardedTrace.differences(from: denseTrace, tolerance: options.tolerance)
        if arch.moe != nil {
            let routing = Dictionary(grouping: shardedTrace.routing, by: \.rank)
            for i in ranks.indices {
                let mine = routing[ranks[i].rank] ?? []
                let differing = mine.filter { $0.outcome == .differs }
                ranks[i].routing = mine
                ranks[i].routingTies = mine.filter { $0.outcome == .tie }.count
                ranks[i].routingDifferences = differing.count
                ranks[i].minRoutingMargin = mine.map(\.margin).min()
                for (layer, choices) in Dictionary(grouping: differing, by: \.layer).sorted(by: { $0.key < $1.key }) {
                    let moe = arch.moe!
                    differences.append(
                        ForwardCheckReport.Difference(
                            rank: ranks[i].rank, layer: layer,
                            module:
                                "routing (\(choices.count) of \(mine.filter { $0.layer == layer }.count) tokens choose other experts than the dense pass, margins ≥ \(Self.scientific(options.tolerance)))",
                            tensors: [moe.router(layer)] + (moe.correctionBias ? [moe.bias(layer)] : []), maxRelError: 1,
                            stage: Stage.router.rawValue))
                }
                if !differing.isEmpty {
                    ranks[i].passed = false
                    ranks[i].problem =
                        (ranks[i].problem.map { $0 + "; " } ?? "rank \(ranks[i].rank) (dp \(ranks[i].dpRank), tp \(ranks[i].tpRank)): ")
                        + "\(differing.count) routing choices differ from the dense pass beyond the tolerance"
                }
            }
        }
        // Only the earliest differing modules: later ones differ because their inputs do.
        if let first = differences.map({ ($0.layer, $0.stage) }).min(by: { $0 < $1 }) {
            differences = differences.filter { ($0.layer, $0.stage) == first }
        }
        let routingChoices = arch.moe == nil ? nil : shardedTrace.routing.count
        let denseOutputs =
            options.includeDense
            ? batches.indices.map {
                ForwardCheckReport.DenseOutput(
                    dpRank: $0, tokens: batches[$0], shape: [denseBatches[$0].rows, denseBatches[$0].cols],
                    values: denseBatches[$0].data.map(Self.finite))
            }
            : nil
        var report = ForwardCheckReport(
            folder: folder, architecture: arch.name, output: arch.kind == .decoder ? .logits : .lastHiddenState,
            layout: parallel.layout.rawValue, format: parallel.format.rawValue, dp: parallel.dp, tp: parallel.tp,
            finegrained: parallel.finegrained, tolerance: options.tolerance, ranks: ranks, dense: denseOutputs,
            routingChoices: routingChoices,
            routingTies: routingChoices.map { _ in shardedTrace.routing.filter { $0.outcome == .tie }.count },
            routingDifferences: routingChoices.map { _ in shardedTrace.routing.filter { $0.outcome == .differs }.count },
            firstDifferences: differences, ok: ranks.allSatisfy(\.passed) && differences.isEmpty, seconds: Date().timeIntervalSince(start),
            peakRSSBytes: peakRSS())
        (report.shardTensorsHashed, report.shardBytesHashed) = shardWeights.hashChecks
        return report
    }

    /// The manifest must describe this source: every source tensor it lists, with the same dtype and shape.
    func checkSource(_ source: Checkpoint, manifest: Manifest) throws {
        for spec in manifest.source.tensors {
            guard source.contains(spec.name) else {
                throw ForwardCheckError.otherSource(
                    message:
                        "the manifest's source tensor '\(spec.name)' is not in \(source.root); pass the checkpoint the shards were made from"
                )
            }
            let t = try source.tensor(spec.name)
            if t.shape != spec.shape || t.dtype != spec.dtype {
                throw ForwardCheckError.otherSource(
                    message:
                        "source tensor '\(spec.name)' is \(t.dtype.rawValue) \(t.shape) in \(source.root), the manifest says \(spec.dtype.rawValue) \(spec.shape); pass the checkpoint the shards were made from"
                )
            }
        }
    }

    /// The token batch of every DP rank: explicit, or drawn from a seeded SplitMix64 generator.
    func tokenBatches(dp: Int, arch: Architecture) throws -> [[Int]] {
        var batches: [[Int]]
        if let given = options.tokens {
            guard given.count == 1 || given.count == dp else {
                throw ForwardCheckError.badTokens(
                    message: "--tokens gives \(given.count) batches; give one for every rank or one per DP rank (\(dp))")
            }
            batches = given.count == 1 ? Array(repeating: given[0], count: dp) : given
        } else {
            guard options.tokensPerRank > 0 else {
                throw ForwardCheckError.badTokens(message: "--tokens-per-rank must be at least 1, is \(options.tokensPerRank)")
            }
            var state = options.seed
            batches = (0..<dp).map { _ in
                (0..<options.tokensPerRank).map { _ in
                    state &+= 0x9E37_79B9_7F4A_7C15
                    var z = state
                    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                    return Int((z ^ (z >> 31)) % UInt64(arch.vocab))
                }
            }
        }
        for (d, b) in batches.enumerated() {
            guard !b.isEmpty else { throw ForwardCheckError.badTokens(message: "the token batch of DP rank \(d) is empty") }
            if let bad = b.first(where: { $0 >= arch.vocab }) {
                throw ForwardCheckError.badTokens(message: "token id \(bad) (DP rank \(d)) is outside the vocabulary of \(arch.vocab)")
            }
            if let limit = arch.maxPositions, arch.kind == .encoder, b.count > limit {
                throw ForwardCheckError.badTokens(message: "DP rank \(d) has \(b.count) tokens; the model has \(limit) positions")
            }
            if let window = arch.slidingWindow, b.count > window {
                throw ForwardCheckError.badTokens(
                    message:
                        "DP rank \(d) has \(b.count) tokens, more than the sliding_window of \(window); forward-check computes full causal attention, so give at most \(window)"
                )
            }
        }
        return batches
    }

    func compare(rank: Int, dpRank: Int, tpRank: Int, tokens: [Int], dense: Matrix, sharded: Matrix) -> ForwardCheckReport.RankResult {
        var maxAbs: Float = 0
        var scale: Float = 0
        for (a, b) in zip(sharded.data, dense.data) {
            let e = abs(a - b)
            maxAbs = e.isNaN ? .infinity : max(maxAbs, e)
            scale = max(scale, abs(b))
        }
        let rel = maxAbs / max(scale, .leastNormalMagnitude)
        var agree = 0
        for t in 0..<dense.rows {
            let d = dense.rows(t..<t + 1).data
            let s = sharded.rows(t..<t + 1).data
            let dTop = d.indices.max { d[$0] < d[$1] }!
            let sTop = s.indices.max { s[$0] < s[$1] }!
            if dTop == sTop || d[sTop] >= d[dTop] - options.tolerance * scale { agree += 1 }
        }
        let passed = rel <= options.tolerance && agree == dense.rows
        let last = dense.rows - 1
        var problem: String?
        if !passed {
            problem =
                "rank \(rank) (dp \(dpRank), tp \(tpRank)): max relative error \(Self.scientific(rel)) (max absolute \(Self.scientific(maxAbs)))"
                + (rel > options.tolerance ? " exceeds \(Self.scientific(options.tolerance))" : "")
                + "; top-1 agrees at \(agree) of \(dense.rows) positions"
        }
        return ForwardCheckReport.RankResult(
            rank: rank, dpRank: dpRank, tpRank: tpRank, tokens: tokens,
            denseTop5: Self.top5(dense.rows(last..<last + 1).data), shardedTop5: Self.top5(sharded.rows(last..<last + 1).data),
            maxAbsError: Self.finite(maxAbs), maxRelError: Self.finite(rel), top1Agreement: agree, positions: dense.rows,
            passed: passed, problem: problem)
    }

    static func top5(_ row: [Float]) -> [ForwardCheckReport.Top] {
        row.indices.sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }.prefix(5).map { .init(id: $0, value: finite(row[$0])) }
    }

    /// JSON has no NaN or infinity: they are reported as the largest finite float.
    static func finite(_ x: Float) -> Float { x.isFinite ? x : (x < 0 ? -.greatestFiniteMagnitude : .greatestFiniteMagnitude) }

    static func scientific(_ x: Float) -> String { String(format: "%.2e", Double(x)) }
}

/// What can stop a forward check before it compares anything, and layout disagreements it finds.
public enum ForwardCheckError: FineShardError, Equatable {
    /// `--tokens`, `--tokens-per-rank` or a token id that the model cannot take.
    case badTokens(message: String)
    /// The source is not the checkpoint the manifest was made from.
    case otherSource(message: String)
    /// A rank's shard does not have the shape or place vLLM's rank would compute with.
    case layoutDisagrees(rank: Int, tensor: String, message: String)

    public var exitCode: Int32 {
        switch self {
        case .badTokens, .otherSource: 2
        case .layoutDisagrees: 1
        }
    }

    public var description: String {
        switch self {
        case .badTokens(let message), .otherSource(let message): message
        case .layoutDisagrees(let rank, let tensor, let message): "rank \(rank), tensor '\(tensor)': \(message)"
        }
    }
}
