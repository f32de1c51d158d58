import FineShardFormats
import FineShardModel
import FineShardOutput
import FineShardPlanning
import FineShardSystem
import Foundation
import Synchronization

extension ForwardChecker {
    /// Parses `--layers`: comma-separated layer indices or inclusive ranges (`0,3,60`, `0-2,60`); the
    /// result is sorted and without repeats. Anything else (a sign, a word, an empty item, a range that
    /// runs backwards) is bad input naming the option.
    public static func parseLayers(_ text: String) throws -> [Int] {
        var layers = Set<Int>()
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let s = item.trimmingCharacters(in: .whitespaces)
            let bounds = s.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            let digits = bounds.allSatisfy { !$0.isEmpty && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }
            guard digits, let first = Int(bounds[0]), let last = Int(bounds.last!), first <= last, last - first < 1 << 20 else {
                throw LayerCheckError.badLayers(
                    message: "'\(s)' in --layers is not a layer index or a range of them (give e.g. --layers 0,3,60 or --layers 0-2,60)")
            }
            layers.formUnion(first...last)
        }
        return layers.sorted()
    }

    /// The per-layer mode (`forward-check --layers`), for checkpoints far larger than memory: each
    /// selected layer runs densely from the source and as the ranks run it from their shards (the
    /// collectives, heads on TP, the fine-grained groups and EP dispatch / combine simulated as in
    /// ``run(source:)``), on the same input hidden states, and the two outputs are compared. Only the
    /// selected layers' tensors are read, and of an MoE layer only the experts the routing picks for the
    /// test tokens; every tensor read is counted (``LayerCheckReport/Layer/sourceBytesRead``).
    ///
    /// The input of layer `l` is, in this order of preference:
    /// - layer 0: the embedding of the tokens (only their rows of the table are read) — the real input;
    /// - when layer `l − 1` is selected too: its dense output, so `--layers 0-60` feeds every layer
    ///   what the full dense pass would and its routing sees real activations;
    /// - otherwise seeded random rows (normal, scaled to an RMS of exactly 1; seed `--seed` + `l`): the
    ///   real input would need every earlier layer, which this mode exists not to read. The layer starts
    ///   with an RMSNorm, so unit-RMS rows exercise every weight column at the scale the layer computes
    ///   at; what they miss is the outlier structure of real activations (margins of the routing and
    ///   sizes of the residual differ from a real run, the layout check does not).
    ///
    /// Both passes get the same input, so a layer's difference is its own, not one carried in from the
    /// layers before it. Every rank's output rows are compared with the dense rows of its DP batch (max
    /// |sharded − dense| / max |dense|), every module on the way as in the full mode (the first module
    /// that differs is named with its rank and tensors), and the routing of MoE layers is settled as in
    /// the full mode (near-ties reported, not failed).
    ///
    /// Hashes: every shard tensor read is checked against the SHA-256 the manifest records for it
    /// before it is used (a tensor read in part is hashed whole), so a corrupted shard stops the check
    /// (exit 1) naming file and tensor. A manifest written before tensor hashes existed has none: the
    /// report says so (``LayerCheckReport/hashes``) and names the files; `fineshard verify OUT` checks them.
    public func runLayers(_ selected: [Int], source: Checkpoint) throws -> LayerCheckReport {
        let start = Date()
        let ioStart = Self.processBytesRead()
        let (manifest, _) = try Manifest.combine(try Manifest.load(folder: folder), requireAllRanks: true)
        try checkSource(source, manifest: manifest)
        let config = try source.config.map { try ModelConfig.decode($0, file: source.path(of: "config.json")) }
        let model = try Model.recognize(source.tensors, config: config)
        let arch = try Architecture.recognize(source, model: model)
        guard !selected.isEmpty else { throw LayerCheckError.badLayers(message: "--layers names no layer") }
        if let bad = selected.first(where: { $0 < 0 || $0 >= arch.layers }) {
            throw LayerCheckError.badLayers(
                message:
                    "layer \(bad) in --layers is out of range: \(arch.name) in \(source.root) has \(arch.layers) layers (0–\(arch.layers - 1))"
            )
        }
        let parallel = manifest.parallel
        let topology = RankTopology(dp: parallel.dp, tp: parallel.tp, finegrained: parallel.finegrained)
        let batches = try tokenBatches(dp: parallel.dp, arch: arch)
        let offsets = batches.reduce(into: [0]) { $0.append($0.last! + $1.count) }

        let sourceMeter = ReadMeter()
        let shardMeter = ReadMeter()
        let sourceWeights = MeteredWeights(inner: SourceWeights(checkpoint: source, bf16: manifest.transformedSources), meter: sourceMeter)
        { name, _ in
            try source.tensor(name).dtype.size
        }
        let shards = ShardWeights(folder: folder, manifest: manifest)
        let shardWeights = MeteredWeights(inner: shards, meter: shardMeter) { name, rank in shards.tensors[rank][name]?.dtype.size ?? 4 }
        let pad = parallel.vocabPadding
        func dense(_ trace: Trace) -> Simulation {
            Simulation(
                arch: arch, weights: sourceWeights, topology: RankTopology(dp: 1, tp: 1, finegrained: FineGrainedConfig()),
                paddedVocab: arch.vocab, tokens: [batches.flatMap { $0 }], segments: [batches.map(\.count)],
                rowIDs: [batches.enumerated().flatMap { d, b in b.indices.map { RowID(batch: d, position: $0) } }],
                expertParallel: false, threads: options.threads, trace: trace, reference: nil, tieTolerance: options.tolerance)
        }
        func sharded(_ trace: Trace, reference: Trace) -> Simulation {
            Simulation(
                arch: arch, weights: shardWeights, topology: topology, paddedVocab: (arch.vocab + pad - 1) / pad * pad,
                tokens: (0..<topology.worldSize).map { batches[topology.dpRank($0)] },
                segments: (0..<topology.worldSize).map { [batches[topology.dpRank($0)].count] },
                rowIDs: (0..<topology.worldSize).map { r in
                    batches[topology.dpRank(r)].indices.map { RowID(batch: topology.dpRank(r), position: $0) }
                },
                expertParallel: parallel.expertParallel, threads: options.threads, trace: trace, reference: reference,
                tieTolerance: options.tolerance)
        }

        var results: [LayerCheckReport.Layer] = []
        var touched = Set<String>()
        var previous: (layer: Int, output: Matrix)?
        for l in selected {
            let layerStart = Date()
            sourceMeter.reset()
            shardMeter.reset()
            let input: Matrix
            let inputKind: LayerCheckReport.Input
            if l == 0 {
                input = try dense(Trace()).embed()[0]
                inputKind = .embedding
            } else if let p = previous, p.layer == l - 1 {
                input = p.output
                inputKind = .previousLayer
            } else {
                input = Self.randomRows(rows: offsets.last!, cols: arch.hidden, seed: options.seed &+ UInt64(l))
                inputKind = .random
            }
            let denseTrace = Trace()
            let denseOutput = try dense(denseTrace).layer(l, [input])[0]
            let shardedTrace = Trace()
            let batchRows = { (r: Int) in offsets[topology.dpRank(r)]..<offsets[topology.dpRank(r) + 1] }
            let shardedOutput = try sharded(shardedTrace, reference: denseTrace).layer(
                l, (0..<topology.worldSize).map { input.rows(batchRows($0)) })
            previous = (l, denseOutput)

            var ranks: [LayerCheckReport.RankResult] = []
            for r in 0..<topology.worldSize {
                let d = denseOutput.rows(batchRows(r))
                var maxAbs: Float = 0
                var scale: Float = 0
                for (a, b) in zip(shardedOutput[r].data, d.data) {
                    let e = abs(a - b)
                    maxAbs = e.isNaN ? .infinity : max(maxAbs, e)
                    scale = max(scale, abs(b))
                }
                let rel = maxAbs / max(scale, .leastNormalMagnitude)
                ranks.append(
                    .init(
                        rank: r, dpRank: topology.dpRank(r), tpRank: topology.tpRank(r), maxAbsError: Self.finite(maxAbs),
                        maxRelError: Self.finite(rel), passed: rel <= options.tolerance))
            }
            var differences = shardedTrace.differences(from: denseTrace, tolerance: options.tolerance)
            if let first = differences.map(\.stage).min() { differences = differences.filter { $0.stage == first } }

            var routing: LayerCheckReport.Routing?
            if let moe = arch.moe, moe.sparseLayers.contains(l) {
                let choices = shardedTrace.routing
                let selectedExperts = Set((denseTrace.choices[l] ?? [:]).values.flatMap(\.experts))
                let prefix = moe.prefix(l) + "experts."
                func experts(_ meter: ReadMeter) -> (experts: [Int], tensors: Int) {
                    let names = meter.reads.map(\.name).filter { $0.hasPrefix(prefix) }
                    let ids = Set(names.compactMap { Int($0.dropFirst(prefix.count).prefix { $0 != "." }) })
                    return (ids.sorted(), names.count)
                }
                let (fromSource, sourceTensors) = experts(sourceMeter)
                let (fromShards, shardTensors) = experts(shardMeter)
                let differing = choices.filter { $0.outcome == .differs }
                for (r, mine) in Dictionary(grouping: differing, by: \.rank).sorted(by: { $0.key < $1.key }) {
                    ranks[r].passed = false
                    differences.append(
                        ForwardCheckReport.Difference(
                            rank: r, layer: l,
                            module:
                                "routing (\(mine.count) of \(choices.filter { $0.rank == r }.count) tokens choose other experts than the dense pass, margins ≥ \(Self.scientific(options.tolerance)))",
                            tensors: [moe.router(l)] + (moe.correctionBias ? [moe.bias(l)] : []), maxRelError: 1,
                            stage: Stage.router.rawValue))
                }
                routing = LayerCheckReport.Routing(
                    choices: choices.count, ties: choices.filter { $0.outcome == .tie }.count, differences: differing.count,
                    minMargin: choices.map(\.margin).min(), experts: moe.experts, expertsSelected: selectedExperts.sorted(),
                    expertsReadFromSource: fromSource, expertTensorsReadFromSource: sourceTensors, expertsReadFromShards: fromShards,
                    expertTensorsReadFromShards: shardTensors, detail: choices)
            }
            for read in shardMeter.reads { if let file = shards.tensors[read.rank][read.name]?.file { touched.insert(file) } }
            let worst = ranks.max { $0.maxRelError < $1.maxRelError }!
            results.append(
                LayerCheckReport.Layer(
                    layer: l, kind: routing == nil ? "dense" : "moe", input: inputKind, maxRelError: worst.maxRelError,
                    worstRank: worst.rank, ranks: ranks, routing: routing, firstDifferences: differences,
                    sourceBytesRead: sourceMeter.bytes, sourceTensorsRead: sourceMeter.reads.count, shardBytesRead: shardMeter.bytes,
                    shardTensorsRead: shardMeter.reads.count, seconds: Date().timeIntervalSince(layerStart),
                    passed: ranks.allSatisfy(\.passed) && differences.isEmpty))
        }

        let fileBytes = manifest.ranks.flatMap(\.files).filter { touched.contains($0.name) }.reduce(0) { $0 + $1.bytes }
        let allBytes = manifest.ranks.flatMap(\.files).reduce(0) { $0 + $1.bytes }
        let recorded = manifest.ranks.allSatisfy { $0.files.allSatisfy { $0.tensorSHA256 != nil } }
        let (hashedTensors, hashedBytes) = shards.hashChecks
        let hashes = LayerCheckReport.Hashes(
            checked: recorded, filesTouched: touched.count, touchedFileBytes: fileBytes, shardFileBytes: allBytes,
            note: recorded
                ? "checked: the SHA-256 of each of the \(hashedTensors) shard tensors read (\(hashedBytes) bytes hashed; a tensor read in part, such as the embedding rows of the tokens, is hashed whole)"
                : "not checked: this manifest records one SHA-256 per shard file, not per tensor (it was written before fineshard recorded tensor hashes), so the tensors read cannot be checked without reading the \(touched.count) files they are in whole (\(fileBytes) bytes of \(allBytes)); run `fineshard verify \(folder)` to check the hashes"
        )
        let io = Self.processBytesRead().map { $0 - (ioStart ?? 0) }
        return LayerCheckReport(
            folder: folder, architecture: arch.name, dp: parallel.dp, tp: parallel.tp, expertParallel: parallel.expertParallel,
            finegrained: parallel.finegrained, tolerance: options.tolerance, tokens: batches, layers: results, hashes: hashes,
            sourceBytesRead: results.reduce(0) { $0 + $1.sourceBytesRead }, shardBytesRead: results.reduce(0) { $0 + $1.shardBytesRead },
            processBytesRead: io, ok: results.allSatisfy(\.passed), seconds: Date().timeIntervalSince(start), peakRSSBytes: peakRSS())
    }

    /// `rows` rows of `cols` normal values (SplitMix64 + Box–Muller), each scaled to an RMS of exactly 1.
    static func randomRows(rows: Int, cols: Int, seed: UInt64) -> Matrix {
        var state = seed
        func uniform() -> Double {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return (Double((z ^ (z >> 31)) >> 11) + 0.5) / Double(1 << 53)
        }
        var m = Matrix(rows: rows, cols: cols)
        for r in 0..<rows {
            var sum: Double = 0
            for c in 0..<cols {
                let v = (-2 * log(uniform())).squareRoot() * cos(2 * .pi * uniform())
                m.data[r * cols + c] = Float(v)
                sum += v * v
            }
            let norm = Float((sum / Double(cols)).squareRoot())
            for c in 0..<cols { m.data[r * cols + c] /= norm }
        }
        return m
    }

    /// Bytes this process has read through read(2) / pread(2) so far (`rchar` of /proc/self/io: page
    /// cache hits included); nil where there is no /proc.
    static func processBytesRead() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/io", encoding: .utf8) else { return nil }
        let line = text.split(separator: "\n").first { $0.hasPrefix("rchar:") }
        return line.flatMap { Int($0.dropFirst("rchar:".count).trimmingCharacters(in: .whitespaces)) }
    }

    /// Counts the tensor bytes a pass reads (as stored: int8 is 1 byte an element), and which tensors.
    final class ReadMeter: Sendable {
        struct Read: Hashable {
            var rank: Int
            var name: String
        }
        private let state = Mutex<(bytes: Int, reads: Set<Read>)>((0, []))

        var bytes: Int { state.withLock { $0.bytes } }
        var reads: Set<Read> { state.withLock { $0.reads } }

        func add(_ name: String, rank: Int, bytes: Int) {
            state.withLock {
                $0.bytes += bytes
                $0.reads.insert(Read(rank: rank, name: name))
            }
        }

        func reset() { state.withLock { $0 = (0, []) } }
    }

    /// Weights that count what is read from them.
    struct MeteredWeights: Weights {
        let inner: any Weights
        let meter: ReadMeter
        /// The stored size of one element of tensor `name` on `rank`.
        let elementSize: @Sendable (_ name: String, _ rank: Int) throws -> Int

        func shape(_ name: String, rank: Int) throws -> [Int]? { try inner.shape(name, rank: rank) }

        func read(_ name: String, rank: Int, rows: Range<Int>?) throws -> [Float] {
            let values = try inner.read(name, rank: rank, rows: rows)
            meter.add(name, rank: rank, bytes: values.count * (try elementSize(name, rank)))
            return values
        }

        func readBF16(_ name: String, rank: Int, rows: Range<Int>?) throws -> [UInt16]? {
            let values = try inner.readBF16(name, rank: rank, rows: rows)
            if let values { meter.add(name, rank: rank, bytes: values.count * (try elementSize(name, rank))) }
            return values
        }

        func firstSourceRow(_ name: String, rank: Int) -> Int? { inner.firstSourceRow(name, rank: rank) }

        func roundsToBF16(_ name: String) -> Bool { inner.roundsToBF16(name) }
    }
}

/// Bad `--layers` values (exit 2).
public enum LayerCheckError: FineShardError, Equatable {
    case badLayers(message: String)

    public var exitCode: Int32 { 2 }

    public var description: String {
        switch self {
        case .badLayers(let message): message
        }
    }
}
