import Foundation
import Testing

@testable import FineShard
@testable import FineShardModel

// MARK: - Helpers

func makePlan(_ tensors: [TensorInfo], _ config: ModelConfig?, _ parallel: ParallelConfig) throws -> ShardPlan {
    let model = try Model.recognize(tensors, config: config)
    return try ShardPlanner.plan(sources: tensors, model: model, parallel: parallel)
}

extension ShardPlan {
    /// Output tensor `name` of `rank`; records an issue when the rank does not hold it.
    func tensor(_ name: String, rank r: Int, sourceLocation: SourceLocation = #_sourceLocation) -> PlannedTensor? {
        let t = rank(r).tensors.first { $0.name == name }
        if t == nil { Issue.record("rank \(r) has no tensor '\(name)'", sourceLocation: sourceLocation) }
        return t
    }
}

func piece(_ source: String, _ ranges: [Range<Int>], at: [Int]) -> Piece {
    Piece(source: source, region: Region(ranges), at: at)
}

func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
func lcm(_ a: Int, _ b: Int) -> Int { a / gcd(a, b) * b }
func divisors(_ n: Int) -> [Int] { (1...n).filter { n % $0 == 0 } }

/// Whether `text` mentions the number `n` as a whole word.
func mentions(_ text: String, number n: Int) -> Bool {
    var digits = ""
    for c in text + " " {
        if c.isASCII, c.isNumber {
            digits.append(c)
        } else {
            if digits == String(n) { return true }
            digits = ""
        }
    }
    return false
}

// MARK: - The docs/SPEC.md §4 oracle for the Llama family

/// What docs/SPEC.md §4 says every rank holds for a Llama-family model, written from the SPEC and
/// independent of the planner's rules.
struct LlamaOracle {
    let model: LlamaShape
    let parallel: ParallelConfig
    var tp: Int { parallel.tp }
    var dp: Int { parallel.dp }
    var paddedVocab: Int { (model.vocab + parallel.vocabPadding - 1) / parallel.vocabPadding * parallel.vocabPadding }

    /// Group size and this rank's shard index for a component (nil: the global TP).
    func shard(_ component: Component?, rank: Int) -> (n: Int, i: Int) {
        let g = component.map { parallel.finegrained[$0] } ?? 0
        return g > 0 ? (g, (rank / tp) % g) : (tp, rank % tp)
    }

    /// The groups of ranks that together hold one copy of a tensor cut over `component`.
    func groups(_ component: Component?) -> [[Int]] {
        let g = component.map { parallel.finegrained[$0] } ?? 0
        if g > 0 {
            return (0..<tp).flatMap { t in (0..<dp / g).map { b in (0..<g).map { j in (b * g + j) * tp + t } } }
        }
        return (0..<dp).map { d in (0..<tp).map { d * tp + $0 } }
    }

    var singletons: [[Int]] { (0..<dp * tp).map { [$0] } }

    enum Cut {
        case whole
        case rows(Component?)
        case columns(Component?)
        case kvRows
        case vocab(Component)
    }

    /// How docs/SPEC.md §4 cuts a source tensor, from its name alone.
    func cut(_ name: String) -> Cut {
        if name == "model.embed_tokens.weight" { return .vocab(.embedding) }
        if name == "lm_head.weight" { return .vocab(.lmHead) }
        let suffix = String(name[name.index(after: name.lastIndex(of: ".")!)...])
        let module = name.split(separator: ".").dropLast().suffix(2).joined(separator: ".")
        let followsRows = ["weight", "bias", "weight_scale", "weight_offset", "deq_scale", "quant_bias"].contains(suffix)
        switch module {
        case "self_attn.q_proj": return followsRows ? .rows(nil) : .whole
        case "self_attn.k_proj", "self_attn.v_proj": return followsRows ? (tp > model.kvHeads ? .kvRows : .rows(nil)) : .whole
        case "self_attn.o_proj": return suffix == "weight" ? .columns(.oProj) : .whole
        case "mlp.gate_proj", "mlp.up_proj": return followsRows ? .rows(.mlp) : .whole
        case "mlp.down_proj": return suffix == "weight" ? .columns(.mlp) : .whole
        default: return .whole
        }
    }

    /// The output name and, for a fused vllm tensor, the part index.
    func output(_ name: String) -> (String, Int) {
        guard parallel.layout == .vllm else { return (name, 0) }
        for (from, to, index) in [
            (".self_attn.q_proj.", ".self_attn.qkv_proj.", 0), (".self_attn.k_proj.", ".self_attn.qkv_proj.", 1),
            (".self_attn.v_proj.", ".self_attn.qkv_proj.", 2), (".mlp.gate_proj.", ".mlp.gate_up_proj.", 0),
            (".mlp.up_proj.", ".mlp.gate_up_proj.", 1),
        ] where name.contains(from) {
            return (name.replacingOccurrences(of: from, with: to), index)
        }
        return (name, 0)
    }

    func even(_ name: String, length: Int, _ s: (n: Int, i: Int)) -> [(String, Int)?] {
        let per = length / s.n
        return (0..<per).map { (name, s.i * per + $0) }
    }

    func vocabRows(_ name: String, _ s: (n: Int, i: Int)) -> [(String, Int)?] {
        let per = paddedVocab / s.n
        return (0..<per).map { s.i * per + $0 < model.vocab ? (name, s.i * per + $0) : nil }
    }

    /// One rank's output tensors with the source of every element.
    func expected(rank: Int) -> [String: ExpectedTensor] {
        var parts: [String: [(Int, ExpectedTensor)]] = [:]
        func add(_ name: String, _ index: Int, _ e: ExpectedTensor) { parts[name, default: []].append((index, e)) }
        for t in model.tensors {
            let (out, index) = output(t.name)
            let shape = t.shape
            switch cut(t.name) {
            case .whole:
                add(out, index, .whole(t.name, shape))
            case .rows(let c):
                let rows = even(t.name, length: shape[0], shard(c, rank: rank))
                add(out, index, ExpectedTensor(shape: [rows.count] + shape.dropFirst(), dim: 0, rows: rows))
            case .columns(let c):
                let cols = even(t.name, length: shape[1], shard(c, rank: rank))
                add(out, index, ExpectedTensor(shape: [shape[0], cols.count] + shape.dropFirst(2), dim: 1, rows: cols))
            case .kvRows:
                let head = (rank % tp) / (tp / model.kvHeads)
                let rows = (0..<model.headDim).map { (t.name, head * model.headDim + $0) }
                add(out, index, ExpectedTensor(shape: [rows.count] + shape.dropFirst(), dim: 0, rows: rows))
            case .vocab(let c):
                let rows = vocabRows(t.name, shard(c, rank: rank))
                let e = ExpectedTensor(shape: [rows.count, shape[1]], dim: 0, rows: rows)
                if !(model.tied && parallel.layout == .vllm) { add(out, index, e) }
                if model.tied {
                    let head = vocabRows(t.name, shard(.lmHead, rank: rank))
                    add("lm_head.weight", 0, ExpectedTensor(shape: [head.count, shape[1]], dim: 0, rows: head))
                }
            }
        }
        // vLLM's attention layers hold four 0-d float32 scales, 1.0 without quantized KV.
        for t in model.tensors where parallel.layout == .vllm && t.name.hasSuffix(".self_attn.q_proj.weight") {
            for scale in ["_k_scale", "_v_scale", "_q_scale", "_prob_scale"] {
                add(
                    t.name.replacingOccurrences(of: "q_proj.weight", with: "attn.") + scale, 0,
                    ExpectedTensor(shape: [], dim: 0, rows: [], fill: 1))
            }
        }
        return parts.mapValues { list in
            let sorted = list.sorted { $0.0 < $1.0 }
            var e = sorted[0].1
            for (_, next) in sorted.dropFirst() {
                e.shape[0] += next.shape[0]
                e.rows += next.rows
            }
            return e
        }
    }

    /// For every (source, output) pair: the groups over which each element must appear `copies` times.
    var coverage: [(source: TensorInfo, output: String, groups: [[Int]], copies: Int)] {
        var out: [(TensorInfo, String, [[Int]], Int)] = []
        for t in model.tensors {
            let name = output(t.name).0
            switch cut(t.name) {
            case .whole: out.append((t, name, singletons, 1))
            case .rows(let c), .columns(let c): out.append((t, name, groups(c), 1))
            case .kvRows: out.append((t, name, groups(nil), tp / model.kvHeads))
            case .vocab(let c):
                if !(model.tied && parallel.layout == .vllm) { out.append((t, name, groups(c), 1)) }
                if model.tied { out.append((t, "lm_head.weight", groups(.lmHead), 1)) }
            }
        }
        return out
    }
}

/// A random Llama-family model and parallel configuration that docs/SPEC.md §4 allows.
func randomLegalCase(_ g: inout SeededGenerator) -> (LlamaShape, ParallelConfig) {
    let tp = [1, 1, 2, 2, 4, 8].randomElement(using: &g)!
    let dp = (tp >= 4 ? [1, 2, 3] : [1, 2, 3, 4, 6, 8]).randomElement(using: &g)!
    let kv = (divisors(tp) + [tp, 2 * tp]).randomElement(using: &g)!
    let heads = lcm(kv, tp) * Int.random(in: 1...2, using: &g)
    let headDim = Int.random(in: 1...4, using: &g)
    let natural = Bool.random(using: &g)
    let hidden = natural ? heads * headDim : [4, 6, 8].randomElement(using: &g)!
    var fine = FineGrainedConfig()
    func maybeGroup(_ legal: (Int) -> Bool = { _ in true }) -> Int {
        Bool.random(using: &g) ? 0 : (divisors(dp).filter(legal).randomElement(using: &g) ?? 0)
    }
    fine.embedding = maybeGroup()
    fine.lmHead = maybeGroup()
    fine.mlp = maybeGroup()
    fine.oProj = tp == 1 ? maybeGroup { (heads * headDim) % $0 == 0 } : 0
    let layout: ParallelConfig.Layout = Int.random(in: 0..<4, using: &g) == 0 ? .vllm : .hf
    let tied = Bool.random(using: &g)
    if layout == .vllm, tied { fine.lmHead = fine.embedding }
    let nMLP = fine.mlp > 0 ? fine.mlp : tp
    let n = lcm(fine.embedding > 0 ? fine.embedding : tp, fine.lmHead > 0 ? fine.lmHead : tp)
    let padding = 64 % n == 0 && Bool.random(using: &g) ? 64 : n * [1, 2, 8].randomElement(using: &g)!
    var model = LlamaShape(
        heads: heads, kvHeads: kv, headDim: headDim, hidden: hidden, intermediate: nMLP * Int.random(in: 1...3, using: &g),
        vocab: Int.random(in: 3...130, using: &g), layers: Int.random(in: 1...2, using: &g), tied: tied)
    model.qkvBias = Bool.random(using: &g)
    model.w8a8 = layout == .hf && Int.random(in: 0..<3, using: &g) == 0
    model.explicitHeadFacts = !natural || Bool.random(using: &g)
    return (model, ParallelConfig(dp: dp, tp: tp, finegrained: fine, vocabPadding: padding, layout: layout))
}

// MARK: - Property tests

@Suite("Planner properties over random Llama-family models")
struct PlannerPropertyTests {
    @Test func everySourceElementLandsWhereSpecSaysOnEveryRankOfRandomLegalConfigurations() throws {
        var g = SeededGenerator(seed: 0x5EED_F1E5)
        var failures = 0
        var seen: [String: Int] = [:]
        for n in 0..<300 where failures < 5 {
            let (model, parallel) = randomLegalCase(&g)
            let fine = parallel.finegrained
            for (feature, present) in [
                ("kv heads replicated", parallel.tp > model.kvHeads), ("vllm layout", parallel.layout == .vllm), ("tied", model.tied),
                ("w8a8", model.w8a8), ("padding rows", (model.vocab % parallel.vocabPadding) != 0),
                ("fine-grained with TP > 1", parallel.tp > 1 && fine != FineGrainedConfig()),
                ("o_proj group", fine.oProj > 0), ("embedding and lm_head groups differ", fine.embedding != fine.lmHead),
            ] where present {
                seen[feature, default: 0] += 1
            }
            let what =
                "case \(n): \(model); dp \(parallel.dp), tp \(parallel.tp), \(parallel.finegrained), padding \(parallel.vocabPadding), \(parallel.layout)"
            let plan: ShardPlan
            do {
                plan = try makePlan(model.tensors, model.config, parallel)
            } catch {
                Issue.record("\(what): rejected: \(error)")
                failures += 1
                continue
            }
            let oracle = LlamaOracle(model: model, parallel: parallel)
            let sources = Dictionary(uniqueKeysWithValues: model.tensors.map { ($0.name, $0) })
            let ranks = (0..<parallel.worldSize).map { plan.rank($0) }
            var problems: [String] = []
            for rank in ranks {
                problems += differences(rank, expected: oracle.expected(rank: rank.rank), sources: sources)
            }
            for c in oracle.coverage {
                problems += coverageDifferences(
                    plan, source: c.source, output: c.output, groups: c.groups, copies: c.copies, rankPlans: ranks)
            }
            let bytes = plan.bytesPerRank()
            for rank in ranks where bytes[rank.rank] != rank.byteCount {
                problems.append("rank \(rank.rank): bytesPerRank says \(bytes[rank.rank]), the rank plan holds \(rank.byteCount)")
            }
            if !problems.isEmpty {
                let summary = problems.prefix(8).joined(separator: "\n")
                Issue.record("\(what):\n\(summary)")
                failures += 1
            }
        }
        for feature in [
            "kv heads replicated", "vllm layout", "tied", "w8a8", "padding rows", "fine-grained with TP > 1", "o_proj group",
            "embedding and lm_head groups differ",
        ] {
            #expect(seen[feature, default: 0] >= 10, "only \(seen[feature, default: 0]) cases with \(feature)")
        }
    }

    enum Violation: CaseIterable {
        case groupNotDividingDP, groupLargerThanDP, oProjGroupWithTP, headsNotDivisibleByTP, kvHeadsIncompatibleWithTP,
            paddedVocabNotDivisible
    }

    /// A legal case turned illegal in one way, with the words and numbers the error must name.
    func illegalCase(_ violation: Violation, _ g: inout SeededGenerator) -> (LlamaShape, ParallelConfig, [String], [Int]) {
        var (model, parallel) = randomLegalCase(&g)
        parallel.layout = .hf
        switch violation {
        case .groupNotDividingDP, .groupLargerThanDP:
            parallel.dp = [3, 4, 6, 8].randomElement(using: &g)!
            parallel.tp = 1
            model.heads = model.kvHeads
            parallel.finegrained = FineGrainedConfig()
            let component = Component.allCases.randomElement(using: &g)!
            let bad = (2..<parallel.dp).filter { parallel.dp % $0 != 0 }
            let size =
                violation == .groupNotDividingDP && !bad.isEmpty
                ? bad.randomElement(using: &g)! : parallel.dp + Int.random(in: 1...parallel.dp, using: &g)
            parallel.finegrained[component] = size
            let key = FineGrainedConfig.vllmKeys.first { $0.1 == component }!.0
            return (model, parallel, [key, "--dp"], [size, parallel.dp])
        case .oProjGroupWithTP:
            parallel.tp = [2, 4, 8].randomElement(using: &g)!
            parallel.dp = [1, 2, 4].randomElement(using: &g)!
            parallel.finegrained = FineGrainedConfig(oProj: divisors(parallel.dp).randomElement(using: &g)!)
            model = LlamaShape(heads: 8, kvHeads: 8, headDim: 2, hidden: 16, intermediate: 16, vocab: 128)
            return (model, parallel, ["oproj_tensor_parallel_size", "--tp"], [parallel.finegrained.oProj, parallel.tp])
        case .headsNotDivisibleByTP:
            let tp = [2, 4, 8].randomElement(using: &g)!
            let heads = (1...17).filter { $0 % tp != 0 }.randomElement(using: &g)!
            parallel = ParallelConfig(dp: 1, tp: tp)
            model = LlamaShape(heads: heads, kvHeads: 1, headDim: 2, hidden: 2 * heads, intermediate: 8 * tp, vocab: 64)
            return (model, parallel, ["num_attention_heads", "--tp"], [heads, tp])
        case .kvHeadsIncompatibleWithTP:
            let tp = [2, 4, 8].randomElement(using: &g)!
            let kv = (1...12).filter { tp <= $0 ? $0 % tp != 0 : tp % $0 != 0 }.randomElement(using: &g)!
            let heads = lcm(kv, tp)
            parallel = ParallelConfig(dp: 1, tp: tp)
            model = LlamaShape(heads: heads, kvHeads: kv, headDim: 2, hidden: 2 * heads, intermediate: 8 * tp, vocab: 64)
            return (model, parallel, ["num_key_value_heads", "--tp"], [kv, tp])
        case .paddedVocabNotDivisible:
            parallel.finegrained = FineGrainedConfig()
            parallel.dp = [2, 3, 4, 6].randomElement(using: &g)!
            parallel.tp = 1
            model = LlamaShape(heads: 2, kvHeads: 2, headDim: 2, hidden: 4, intermediate: 4, vocab: 64, tied: Bool.random(using: &g))
            let component: Component = Bool.random(using: &g) ? .embedding : .lmHead
            let n = divisors(parallel.dp).filter { $0 > 1 }.randomElement(using: &g)!
            parallel.finegrained[component] = n
            if n % 2 == 1, Bool.random(using: &g) {
                parallel.vocabPadding = 64
                model.vocab = Int.random(in: 1...200, using: &g)
                while ((model.vocab + 63) / 64 * 64) % n == 0 { model.vocab += 64 }
            } else {
                parallel.vocabPadding = 1
                model.vocab = n * Int.random(in: 1...20, using: &g) + Int.random(in: 1..<n, using: &g)
            }
            let padded = (model.vocab + parallel.vocabPadding - 1) / parallel.vocabPadding * parallel.vocabPadding
            let key = FineGrainedConfig.vllmKeys.first { $0.1 == component }!.0
            return (model, parallel, ["vocab", key], [padded, n])
        }
    }

    @Test func randomIllegalConfigurationsAreRejectedNamingTheOptionAndTheNumbers() throws {
        var g = SeededGenerator(seed: 0xBAD_C0F1)
        var failures = 0
        for n in 0..<240 where failures < 6 {
            let violation = Violation.allCases[n % Violation.allCases.count]
            let (model, parallel, words, numbers) = illegalCase(violation, &g)
            let what =
                "case \(n) \(violation): \(model); dp \(parallel.dp), tp \(parallel.tp), \(parallel.finegrained), padding \(parallel.vocabPadding)"
            do {
                _ = try makePlan(model.tensors, model.config, parallel)
                Issue.record("\(what): accepted")
                failures += 1
            } catch let error as PlanError {
                let text = error.description
                let missingWords = words.filter { !text.contains($0) }
                let missingNumbers = numbers.filter { !mentions(text, number: $0) }
                if !missingWords.isEmpty || !missingNumbers.isEmpty {
                    Issue.record("\(what): message lacks \(missingWords) \(missingNumbers): \(text)")
                    failures += 1
                }
            } catch {
                Issue.record("\(what): rejected with \(type(of: error)), not PlanError: \(error)")
                failures += 1
            }
        }
    }
}

// MARK: - Exact shapes

@Suite("Planner on exact shapes")
struct PlannerExactShapeTests {
    @Test func withTPEightAndTwoKVHeadsRankTHoldsKVHeadTOverFour() throws {
        let model = LlamaShape(heads: 8, kvHeads: 2, headDim: 4, hidden: 32, intermediate: 64, vocab: 128, qkvBias: true)
        let plan = try makePlan(model.tensors, model.config, ParallelConfig(dp: 1, tp: 8))
        for t in 0..<8 {
            let head = t / 4
            for proj in ["k_proj", "v_proj"] {
                let name = "model.layers.0.self_attn.\(proj).weight"
                let w = try #require(plan.tensor(name, rank: t))
                #expect(w.shape == [4, 32])
                #expect(w.pieces == [piece(name, [head * 4..<head * 4 + 4, 0..<32], at: [0, 0])])
                let biasName = "model.layers.0.self_attn.\(proj).bias"
                let b = try #require(plan.tensor(biasName, rank: t))
                #expect(b.pieces == [piece(biasName, [head * 4..<head * 4 + 4], at: [0])])
            }
            let q = try #require(plan.tensor("model.layers.0.self_attn.q_proj.weight", rank: t))
            #expect(q.pieces == [piece("model.layers.0.self_attn.q_proj.weight", [t * 4..<t * 4 + 4, 0..<32], at: [0, 0])])
        }
    }

    @Test func aVocabOfOneThousandIsPaddedToTenTwentyFourAndTheLastShardEndsInZeroRows() throws {
        let model = LlamaShape(heads: 2, kvHeads: 2, headDim: 2, hidden: 4, intermediate: 8, vocab: 1000)
        let plan = try makePlan(model.tensors, model.config, ParallelConfig(dp: 4, finegrained: FineGrainedConfig(embedding: 4, lmHead: 2)))
        for r in 0..<4 {
            let e = try #require(plan.tensor("model.embed_tokens.weight", rank: r))
            #expect(e.shape == [256, 4])
            let stop = min(r * 256 + 256, 1000)
            #expect(e.pieces == [piece("model.embed_tokens.weight", [r * 256..<stop, 0..<4], at: [0, 0])])
            let h = try #require(plan.tensor("lm_head.weight", rank: r))
            #expect(h.shape == [512, 4])
            let i = r % 2
            #expect(h.pieces == [piece("lm_head.weight", [i * 512..<min(i * 512 + 512, 1000), 0..<4], at: [0, 0])])
        }
        // Rank 3's embedding shard: rows 768..<1000 then 24 rows of padding no piece covers.
        let last = try #require(plan.tensor("model.embed_tokens.weight", rank: 3))
        #expect(last.pieces.map(\.region.shape) == [[232, 4]])

        let single = try makePlan(model.tensors, model.config, ParallelConfig(dp: 1))
        let whole = try #require(single.tensor("model.embed_tokens.weight", rank: 0))
        #expect(whole.shape == [1024, 4])
        #expect(whole.pieces == [piece("model.embed_tokens.weight", [0..<1000, 0..<4], at: [0, 0])])
    }

    @Test func aTiedLMHeadIsCutFromTheEmbeddingWithItsOwnGroupSize() throws {
        let model = LlamaShape(heads: 2, kvHeads: 2, headDim: 2, hidden: 4, intermediate: 8, vocab: 256, tied: true)
        let plan = try makePlan(model.tensors, model.config, ParallelConfig(dp: 4, finegrained: FineGrainedConfig(embedding: 2, lmHead: 4)))
        for r in 0..<4 {
            let e = try #require(plan.tensor("model.embed_tokens.weight", rank: r))
            #expect(e.shape == [128, 4])
            #expect(e.pieces == [piece("model.embed_tokens.weight", [(r % 2) * 128..<(r % 2) * 128 + 128, 0..<4], at: [0, 0])])
            let h = try #require(plan.tensor("lm_head.weight", rank: r))
            #expect(h.shape == [64, 4])
            #expect(h.pieces == [piece("model.embed_tokens.weight", [r * 64..<r * 64 + 64, 0..<4], at: [0, 0])])
        }
    }

    @Test func tiedEmbeddingsFalseWithoutAnLMHeadTensorIsAnError() throws {
        var model = LlamaShape(heads: 2, kvHeads: 2, headDim: 2, hidden: 4, intermediate: 8, vocab: 64, tied: true)
        var config = model.config
        config.tieWordEmbeddings = false
        #expect(throws: ModelError.self) { try Model.recognize(model.tensors, config: config) }
        model.tied = false
        #expect(try Model.recognize(model.tensors, config: model.config).facts.tieWordEmbeddings == false)
    }

    @Test func w8a8PerChannelParametersFollowColumnParallelRowsAndStayWholeWithRowParallelWeights() throws {
        var model = LlamaShape(heads: 4, kvHeads: 4, headDim: 2, hidden: 8, intermediate: 16, vocab: 64)
        model.w8a8 = true
        let plan = try makePlan(model.tensors, model.config, ParallelConfig(dp: 2, tp: 2, finegrained: FineGrainedConfig(mlp: 2)))
        let perChannel = ["weight_scale": [1], "weight_offset": [1], "deq_scale": [], "quant_bias": []] as [String: [Int]]
        for r in 0..<4 {
            let t = r % 2
            let i = (r / 2) % 2
            for (suffix, rest) in perChannel {
                let q = "model.layers.0.self_attn.q_proj.\(suffix)"
                #expect(
                    try #require(plan.tensor(q, rank: r)).pieces == [
                        piece(q, [t * 4..<t * 4 + 4] + rest.map { 0..<$0 }, at: [0] + rest.map { _ in 0 })
                    ])
                let gate = "model.layers.0.mlp.gate_proj.\(suffix)"
                #expect(
                    try #require(plan.tensor(gate, rank: r)).pieces == [
                        piece(gate, [i * 8..<i * 8 + 8] + rest.map { 0..<$0 }, at: [0] + rest.map { _ in 0 })
                    ])
                for rowParallel in ["self_attn.o_proj", "mlp.down_proj"] {
                    let name = "model.layers.0.\(rowParallel).\(suffix)"
                    let whole = try #require(plan.tensor(name, rank: r))
                    #expect(whole.shape == [8] + rest)
                    #expect(whole.pieces == [piece(name, [0..<8] + rest.map { 0..<$0 }, at: [0] + rest.map { _ in 0 })])
                }
            }
            for module in ["self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj"] {
                for suffix in ["input_scale", "input_offset"] {
                    let name = "model.layers.0.\(module).\(suffix)"
                    #expect(try #require(plan.tensor(name, rank: r)).pieces == [piece(name, [0..<1], at: [0])])
                }
            }
            let o = "model.layers.0.self_attn.o_proj.weight"
            #expect(try #require(plan.tensor(o, rank: r)).pieces == [piece(o, [0..<8, t * 4..<t * 4 + 4], at: [0, 0])])
        }
    }

    @Test func deepSeekDenseLayersGetTheMLPGroupAndMoELayersFollowExpertAndTPRules() throws {
        let ds = DeepSeekShape()
        let fine = FineGrainedConfig(embedding: 4, lmHead: 2, mlp: 2)
        let ep = try makePlan(ds.tensors, ds.config, ParallelConfig(dp: 4, tp: 2, expertParallel: true, finegrained: fine))
        let flat = try makePlan(ds.tensors, ds.config, ParallelConfig(dp: 4, tp: 2, expertParallel: false, finegrained: fine))
        for r in 0..<8 {
            let t = r % 2
            let d = r / 2
            for plan in [ep, flat] {
                let gate = "model.layers.0.mlp.gate_proj.weight"
                #expect(
                    try #require(plan.tensor(gate, rank: r)).pieces == [piece(gate, [(d % 2) * 8..<(d % 2) * 8 + 8, 0..<16], at: [0, 0])])
                let down = "model.layers.0.mlp.down_proj.weight"
                #expect(
                    try #require(plan.tensor(down, rank: r)).pieces == [piece(down, [0..<16, (d % 2) * 8..<(d % 2) * 8 + 8], at: [0, 0])])
                for layer in [1, 2] {
                    let p = "model.layers.\(layer)."
                    let shared = p + "mlp.shared_experts.gate_proj.weight"
                    #expect(try #require(plan.tensor(shared, rank: r)).pieces == [piece(shared, [t * 4..<t * 4 + 4, 0..<16], at: [0, 0])])
                    let sharedDown = p + "mlp.shared_experts.down_proj.weight"
                    #expect(
                        try #require(plan.tensor(sharedDown, rank: r)).pieces == [
                            piece(sharedDown, [0..<16, t * 4..<t * 4 + 4], at: [0, 0])
                        ])
                    for (name, shape) in [("mlp.gate.weight", [8, 16]), ("mlp.gate.e_score_correction_bias", [8])] {
                        #expect(
                            try #require(plan.tensor(p + name, rank: r)).pieces == [
                                piece(p + name, shape.map { 0..<$0 }, at: shape.map { _ in 0 })
                            ])
                    }
                }
                for layer in [0, 1, 2] {
                    let p = "model.layers.\(layer).self_attn."
                    #expect(
                        try #require(plan.tensor(p + "q_b_proj.weight", rank: r)).pieces == [
                            piece(p + "q_b_proj.weight", [t * 12..<t * 12 + 12, 0..<8], at: [0, 0])
                        ])
                    #expect(
                        try #require(plan.tensor(p + "kv_b_proj.weight", rank: r)).pieces == [
                            piece(p + "kv_b_proj.weight", [t * 16..<t * 16 + 16, 0..<8], at: [0, 0])
                        ])
                    #expect(
                        try #require(plan.tensor(p + "o_proj.weight", rank: r)).pieces == [
                            piece(p + "o_proj.weight", [0..<16, t * 8..<t * 8 + 8], at: [0, 0])
                        ])
                    for (name, shape) in [
                        ("q_a_proj.weight", [8, 16]), ("kv_a_proj_with_mqa.weight", [10, 16]), ("q_a_layernorm.weight", [8]),
                        ("kv_a_layernorm.weight", [8]),
                    ] {
                        #expect(
                            try #require(plan.tensor(p + name, rank: r)).pieces == [
                                piece(p + name, shape.map { 0..<$0 }, at: shape.map { _ in 0 })
                            ])
                    }
                }
                let mtpEmbed = "model.layers.2.embed_tokens.weight"
                #expect(
                    try #require(plan.tensor(mtpEmbed, rank: r)).pieces == [
                        piece(mtpEmbed, [(d % 4) * 32..<min((d % 4) * 32 + 32, 100), 0..<16], at: [0, 0])
                    ])
                let mtpHead = "model.layers.2.shared_head.head.weight"
                #expect(
                    try #require(plan.tensor(mtpHead, rank: r)).pieces == [
                        piece(mtpHead, [(d % 2) * 64..<min((d % 2) * 64 + 64, 100), 0..<16], at: [0, 0])
                    ])
                let eh = "model.layers.2.eh_proj.weight"
                #expect(try #require(plan.tensor(eh, rank: r)).pieces == [piece(eh, [0..<16, 0..<32], at: [0, 0])])
            }
            // Expert parallel: expert e of 8 whole on rank e / (8 / 8).
            let names = Set(ep.rank(r).tensors.map(\.name))
            for layer in [1, 2] {
                for e in 0..<8 {
                    for proj in ["gate_proj", "up_proj", "down_proj"] {
                        let name = "model.layers.\(layer).mlp.experts.\(e).\(proj).weight"
                        #expect(names.contains(name) == (e == r), "\(name) on rank \(r)")
                        if e == r {
                            let shape = proj == "down_proj" ? [16, 8] : [8, 16]
                            #expect(try #require(ep.tensor(name, rank: r)).pieces == [piece(name, shape.map { 0..<$0 }, at: [0, 0])])
                        }
                        // Without expert parallel: every expert split over all 8 ranks.
                        let cut = try #require(flat.tensor(name, rank: r))
                        let ranges = proj == "down_proj" ? [0..<16, r..<r + 1] : [r..<r + 1, 0..<16]
                        #expect(cut.pieces == [piece(name, ranges, at: [0, 0])])
                    }
                }
            }
        }
    }

    @Test func expertParallelWithFourExpertsPerRankGivesContiguousBlocks() throws {
        var ds = DeepSeekShape()
        ds.experts = 16
        let plan = try makePlan(ds.tensors, ds.config, ParallelConfig(dp: 2, tp: 2, expertParallel: true))
        for r in 0..<4 {
            let held = Set(
                plan.rank(r).tensors.compactMap { t -> Int? in
                    guard t.name.hasPrefix("model.layers.1.mlp.experts.") else { return nil }
                    return Int(t.name.split(separator: ".")[5])
                })
            #expect(held == Set(r * 4..<r * 4 + 4))
        }
    }

    func fp8Llama(intermediate: Int) -> ([TensorInfo], ModelConfig) {
        let shape = LlamaShape(heads: 2, kvHeads: 2, headDim: 128, hidden: 256, intermediate: intermediate, vocab: 128)
        var config = shape.config
        var quant = ModelConfig.QuantizationConfig()
        quant.quantMethod = "fp8"
        quant.weightBlockSize = [128, 128]
        config.quantizationConfig = quant
        var tensors: [TensorInfo] = []
        for t in shape.tensors {
            guard t.shape.count == 2, t.name.hasPrefix("model.layers.") else {
                tensors.append(t)
                continue
            }
            tensors.append(source(t.name, t.shape, .f8e4m3))
            let scale = String(t.name.dropLast("weight".count)) + "weight_scale_inv"
            tensors.append(source(scale, t.shape.map { ($0 + 127) / 128 }, .f32))
        }
        return (tensors, config)
    }

    @Test func fp8BlockScalesAreCutInBlockUnitsWhereTheWeightIsCut() throws {
        let (tensors, config) = fp8Llama(intermediate: 512)
        let plan = try makePlan(tensors, config, ParallelConfig(dp: 1, tp: 2))
        for t in 0..<2 {
            let p = "model.layers.0."
            let q = p + "self_attn.q_proj.weight_scale_inv"
            #expect(try #require(plan.tensor(q, rank: t)).pieces == [piece(q, [t..<t + 1, 0..<2], at: [0, 0])])
            let gate = p + "mlp.gate_proj.weight_scale_inv"
            let g = try #require(plan.tensor(gate, rank: t))
            #expect(g.shape == [2, 2])
            #expect(g.pieces == [piece(gate, [2 * t..<2 * t + 2, 0..<2], at: [0, 0])])
            let down = p + "mlp.down_proj.weight_scale_inv"
            #expect(try #require(plan.tensor(down, rank: t)).pieces == [piece(down, [0..<2, 2 * t..<2 * t + 2], at: [0, 0])])
            let o = p + "self_attn.o_proj.weight_scale_inv"
            #expect(try #require(plan.tensor(o, rank: t)).pieces == [piece(o, [0..<2, t..<t + 1], at: [0, 0])])
        }
    }

    @Test func aCutInsideAnFP8BlockIsRejectedNamingTheTensorAndTheWidth() throws {
        let (tensors, config) = fp8Llama(intermediate: 384)
        let error = try #require(throws: PlanError.self) { _ = try makePlan(tensors, config, ParallelConfig(dp: 1, tp: 2)) }
        let text = error.description
        #expect(text.contains("model.layers.0.mlp.gate_proj.weight_scale_inv"), "\(text)")
        #expect(mentions(text, number: 192), "\(text)")
        #expect(mentions(text, number: 128), "\(text)")
    }

    @Test func gpt2Conv1DWeightsAreCutOnTheirTransposedDimensionsAndCAttnPerSegment() throws {
        let (tensors, config) = gpt2Model()
        let plan = try makePlan(tensors, config, ParallelConfig(dp: 1, tp: 2))
        for t in 0..<2 {
            let attn = "h.0.attn.c_attn.weight"
            let w = try #require(plan.tensor(attn, rank: t))
            #expect(w.shape == [8, 12])
            #expect(
                w.pieces == [
                    piece(attn, [0..<8, t * 4..<t * 4 + 4], at: [0, 0]), piece(attn, [0..<8, 8 + t * 4..<8 + t * 4 + 4], at: [0, 4]),
                    piece(attn, [0..<8, 16 + t * 4..<16 + t * 4 + 4], at: [0, 8]),
                ])
            let attnBias = "h.0.attn.c_attn.bias"
            #expect(
                try #require(plan.tensor(attnBias, rank: t)).pieces == [
                    piece(attnBias, [t * 4..<t * 4 + 4], at: [0]), piece(attnBias, [8 + t * 4..<12 + t * 4], at: [4]),
                    piece(attnBias, [16 + t * 4..<20 + t * 4], at: [8]),
                ])
            let proj = "h.0.attn.c_proj.weight"
            #expect(try #require(plan.tensor(proj, rank: t)).pieces == [piece(proj, [t * 4..<t * 4 + 4, 0..<8], at: [0, 0])])
            #expect(try #require(plan.tensor("h.0.attn.c_proj.bias", rank: t)).pieces == [piece("h.0.attn.c_proj.bias", [0..<8], at: [0])])
            let fc = "h.0.mlp.c_fc.weight"
            #expect(try #require(plan.tensor(fc, rank: t)).pieces == [piece(fc, [0..<8, t * 16..<t * 16 + 16], at: [0, 0])])
            #expect(
                try #require(plan.tensor("h.0.mlp.c_fc.bias", rank: t)).pieces == [
                    piece("h.0.mlp.c_fc.bias", [t * 16..<t * 16 + 16], at: [0])
                ])
            let mproj = "h.0.mlp.c_proj.weight"
            #expect(try #require(plan.tensor(mproj, rank: t)).pieces == [piece(mproj, [t * 16..<t * 16 + 16, 0..<8], at: [0, 0])])
            #expect(try #require(plan.tensor("h.0.mlp.c_proj.bias", rank: t)).pieces == [piece("h.0.mlp.c_proj.bias", [0..<8], at: [0])])
            #expect(
                try #require(plan.tensor("wte.weight", rank: t)).pieces == [
                    piece("wte.weight", [t * 64..<min(t * 64 + 64, 100), 0..<8], at: [0, 0])
                ])
            let head = try #require(plan.tensor("lm_head.weight", rank: t))
            #expect(head.pieces == [piece("wte.weight", [t * 64..<min(t * 64 + 64, 100), 0..<8], at: [0, 0])])
            for name in ["wpe.weight", "ln_f.weight", "h.0.ln_1.bias", "h.0.attn.bias"] {
                let whole = try #require(plan.tensor(name, rank: t))
                #expect(whole.pieces == [piece(name, whole.shape.map { 0..<$0 }, at: whole.shape.map { _ in 0 })])
            }
        }
    }

    @Test func bertAttentionOutputIsRowParallelWithItsBiasWholeAndThereIsNoLMHead() throws {
        let (tensors, config) = bertModel()
        let plan = try makePlan(tensors, config, ParallelConfig(dp: 1, tp: 2))
        let p = "encoder.layer.0."
        for t in 0..<2 {
            for module in ["attention.self.query", "attention.self.key", "attention.self.value"] {
                #expect(
                    try #require(plan.tensor(p + module + ".weight", rank: t)).pieces == [
                        piece(p + module + ".weight", [t * 4..<t * 4 + 4, 0..<8], at: [0, 0])
                    ])
                #expect(
                    try #require(plan.tensor(p + module + ".bias", rank: t)).pieces == [
                        piece(p + module + ".bias", [t * 4..<t * 4 + 4], at: [0])
                    ])
            }
            let out = p + "attention.output.dense."
            #expect(
                try #require(plan.tensor(out + "weight", rank: t)).pieces == [
                    piece(out + "weight", [0..<8, t * 4..<t * 4 + 4], at: [0, 0])
                ])
            #expect(try #require(plan.tensor(out + "bias", rank: t)).pieces == [piece(out + "bias", [0..<8], at: [0])])
            let inter = p + "intermediate.dense."
            #expect(
                try #require(plan.tensor(inter + "weight", rank: t)).pieces == [
                    piece(inter + "weight", [t * 8..<t * 8 + 8, 0..<8], at: [0, 0])
                ])
            #expect(try #require(plan.tensor(inter + "bias", rank: t)).pieces == [piece(inter + "bias", [t * 8..<t * 8 + 8], at: [0])])
            let down = p + "output.dense."
            #expect(
                try #require(plan.tensor(down + "weight", rank: t)).pieces == [
                    piece(down + "weight", [0..<8, t * 8..<t * 8 + 8], at: [0, 0])
                ])
            #expect(try #require(plan.tensor(down + "bias", rank: t)).pieces == [piece(down + "bias", [0..<8], at: [0])])
            let words = "embeddings.word_embeddings.weight"
            let w = try #require(plan.tensor(words, rank: t))
            #expect(w.shape == [64, 8])
            #expect(w.pieces == [piece(words, [t * 64..<min(t * 64 + 64, 100), 0..<8], at: [0, 0])])
            for name in [
                "embeddings.position_embeddings.weight", "embeddings.token_type_embeddings.weight", "embeddings.position_ids",
                "pooler.dense.weight",
            ] {
                let whole = try #require(plan.tensor(name, rank: t))
                #expect(whole.pieces == [piece(name, whole.shape.map { 0..<$0 }, at: whole.shape.map { _ in 0 })])
            }
            #expect(!plan.rank(t).tensors.contains { $0.name.contains("lm_head") })
        }
    }

    @Test func theVLLMLayoutFusesQKVAndGateUpWithTheRightOffsets() throws {
        let model = LlamaShape(heads: 4, kvHeads: 2, headDim: 2, hidden: 8, intermediate: 8, vocab: 64, qkvBias: true)
        let plan = try makePlan(model.tensors, model.config, ParallelConfig(dp: 1, tp: 2, layout: .vllm))
        let p = "model.layers.0."
        for t in 0..<2 {
            let qkv = try #require(plan.tensor(p + "self_attn.qkv_proj.weight", rank: t))
            #expect(qkv.shape == [8, 8])
            #expect(
                qkv.pieces == [
                    piece(p + "self_attn.q_proj.weight", [t * 4..<t * 4 + 4, 0..<8], at: [0, 0]),
                    piece(p + "self_attn.k_proj.weight", [t * 2..<t * 2 + 2, 0..<8], at: [4, 0]),
                    piece(p + "self_attn.v_proj.weight", [t * 2..<t * 2 + 2, 0..<8], at: [6, 0]),
                ])
            let bias = try #require(plan.tensor(p + "self_attn.qkv_proj.bias", rank: t))
            #expect(
                bias.pieces == [
                    piece(p + "self_attn.q_proj.bias", [t * 4..<t * 4 + 4], at: [0]),
                    piece(p + "self_attn.k_proj.bias", [t * 2..<t * 2 + 2], at: [4]),
                    piece(p + "self_attn.v_proj.bias", [t * 2..<t * 2 + 2], at: [6]),
                ])
            let gateUp = try #require(plan.tensor(p + "mlp.gate_up_proj.weight", rank: t))
            #expect(gateUp.shape == [8, 8])
            #expect(
                gateUp.pieces == [
                    piece(p + "mlp.gate_proj.weight", [t * 4..<t * 4 + 4, 0..<8], at: [0, 0]),
                    piece(p + "mlp.up_proj.weight", [t * 4..<t * 4 + 4, 0..<8], at: [4, 0]),
                ])
            let names = Set(plan.rank(t).tensors.map(\.name))
            #expect(!names.contains { [".q_proj.", ".k_proj.", ".v_proj.", ".gate_proj.", ".up_proj."].contains(where: $0.contains) })
            #expect(names.contains(p + "self_attn.o_proj.weight") && names.contains(p + "mlp.down_proj.weight"))
        }
    }

    @Test func tiedHeadsInTheVLLMLayoutWriteOnlyLMHeadWeight() throws {
        let model = LlamaShape(heads: 2, kvHeads: 2, headDim: 2, hidden: 4, intermediate: 8, vocab: 100, tied: true)
        let plan = try makePlan(model.tensors, model.config, ParallelConfig(dp: 1, tp: 2, layout: .vllm))
        for t in 0..<2 {
            let names = plan.rank(t).tensors.map(\.name)
            #expect(!names.contains("model.embed_tokens.weight"))
            let head = try #require(plan.tensor("lm_head.weight", rank: t))
            #expect(head.shape == [64, 4])
            #expect(head.pieces == [piece("model.embed_tokens.weight", [t * 64..<min(t * 64 + 64, 100), 0..<4], at: [0, 0])])
        }
        let hf = try makePlan(model.tensors, model.config, ParallelConfig(dp: 1, tp: 2))
        #expect(hf.rank(0).tensors.map(\.name).contains("model.embed_tokens.weight"))
    }

    @Test func tiedHeadsInTheVLLMLayoutNeedTheSameShardOnEveryRankNotJustTheSameGroupSize() throws {
        // One table serves as embedding and lm_head, so every rank must want the same rows for both.
        // Embedding on the global TP (index tp_rank) and lm_head over 2 DP ranks (index dp_rank mod 2)
        // have equal sizes but give rank 1 (dp 0, tp 1) embedding shard 1 and lm_head shard 0.
        let model = LlamaShape(heads: 2, kvHeads: 2, headDim: 2, hidden: 4, intermediate: 8, vocab: 128, tied: true)
        for fine in [FineGrainedConfig(lmHead: 2), FineGrainedConfig(embedding: 2)] {
            let parallel = ParallelConfig(dp: 2, tp: 2, finegrained: fine, layout: .vllm)
            let error = #expect(throws: PlanError.self, "\(fine)") { _ = try makePlan(model.tensors, model.config, parallel) }
            if let error {
                #expect(
                    error.description.contains("lmhead_tensor_parallel_size")
                        || error.description.contains("embedding_tensor_parallel_size"), "\(error)")
            }
        }
        // Same group on both sides: accepted.
        let same = ParallelConfig(dp: 2, tp: 2, finegrained: FineGrainedConfig(embedding: 2, lmHead: 2), layout: .vllm)
        #expect(throws: Never.self) { _ = try makePlan(model.tensors, model.config, same) }
    }

    @Test func aNegativeGroupSizeIsRejectedNamingTheOption() throws {
        let model = LlamaShape(heads: 2, kvHeads: 2, headDim: 2, hidden: 4, intermediate: 8, vocab: 128)
        let parallel = ParallelConfig(dp: 2, finegrained: FineGrainedConfig(mlp: -2))
        let error = #expect(throws: PlanError.self) { _ = try makePlan(model.tensors, model.config, parallel) }
        if let error {
            #expect(error.description.contains("mlp_tensor_parallel_size") && mentions(error.description, number: 2), "\(error)")
        }
    }

    @Test func anLMHeadBiasIsSplitAndPaddedLikeItsWeight() throws {
        let model = LlamaShape(heads: 2, kvHeads: 2, headDim: 2, hidden: 4, intermediate: 8, vocab: 100)
        let tensors = model.tensors + [source("lm_head.bias", [100])]
        let plan = try makePlan(tensors, model.config, ParallelConfig(dp: 2, finegrained: FineGrainedConfig(lmHead: 2)))
        for r in 0..<2 {
            let bias = try #require(plan.tensor("lm_head.bias", rank: r))
            #expect(bias.shape == [64])
            #expect(bias.pieces == [piece("lm_head.bias", [r * 64..<min(r * 64 + 64, 100)], at: [0])])
        }
    }

    @Test func theVLLMLayoutRejectsAnotherArchitectureNamingIt() throws {
        let (tensors, config) = gpt2Model()
        let error = try #require(throws: PlanError.self) { _ = try makePlan(tensors, config, ParallelConfig(dp: 1, tp: 2, layout: .vllm)) }
        #expect(error.description.contains("GPT2LMHeadModel"), "\(error)")
    }
}

// MARK: - --additional-config

@Suite("Parsing --additional-config")
struct AdditionalConfigTests {
    @Test func theSeedsJSONSetsAllFourGroupSizes() throws {
        let json = """
            {
                "finegrained_tp_config": {
                    "embedding_tensor_parallel_size": 8,
                    "lmhead_tensor_parallel_size": 8,
                    "oproj_tensor_parallel_size": 8,
                    "mlp_tensor_parallel_size": 8
                }
            }
            """
        let (config, notes) = try FineGrainedConfig.parse(additionalConfig: json)
        #expect(config == FineGrainedConfig(embedding: 8, lmHead: 8, oProj: 8, mlp: 8))
        #expect(notes.isEmpty)
    }

    @Test func anAbsentSizeStaysZero() throws {
        let json =
            #"{"finegrained_tp_config": {"embedding_tensor_parallel_size": 8, "lmhead_tensor_parallel_size": 8, "mlp_tensor_parallel_size": 8}}"#
        let (config, _) = try FineGrainedConfig.parse(additionalConfig: json)
        #expect(config == FineGrainedConfig(embedding: 8, lmHead: 8, oProj: 0, mlp: 8))
        #expect(try FineGrainedConfig.parse(additionalConfig: "{}").0 == FineGrainedConfig())
    }

    @Test func unknownKeysAreIgnoredWithANoteNamingThem() throws {
        let json =
            #"{"ascend_scheduler_config": {"enabled": true}, "finegrained_tp_config": {"mlp_tensor_parallel_size": 2, "attn_tensor_parallel_size": 4}}"#
        let (config, notes) = try FineGrainedConfig.parse(additionalConfig: json)
        #expect(config == FineGrainedConfig(mlp: 2))
        #expect(notes.count == 2)
        #expect(notes.contains { $0.contains("ascend_scheduler_config") })
        #expect(notes.contains { $0.contains("attn_tensor_parallel_size") })
    }

    @Test(arguments: [
        (#"{"finegrained_tp_config": {"mlp_tensor_parallel_size": -1}}"#, "mlp_tensor_parallel_size"),
        (#"{"finegrained_tp_config": {"mlp_tensor_parallel_size": 2.5}}"#, "mlp_tensor_parallel_size"),
        (#"{"finegrained_tp_config": {"oproj_tensor_parallel_size": "8"}}"#, "oproj_tensor_parallel_size"),
        (#"{"finegrained_tp_config": {"embedding_tensor_parallel_size": true}}"#, "embedding_tensor_parallel_size"),
        (#"{"finegrained_tp_config": {"lmhead_tensor_parallel_size": null}}"#, "lmhead_tensor_parallel_size"),
        (#"{"finegrained_tp_config": 8}"#, "finegrained_tp_config"),
        (#"[1, 2]"#, "JSON object"),
        (#"{"finegrained_tp_config": {"#, "JSON object"),
    ])
    func aBadValueIsRejectedNamingTheKey(json: String, named: String) throws {
        let error = try #require(throws: PlanError.self) { try FineGrainedConfig.parse(additionalConfig: json) }
        guard case .badOption(let option, _) = error else {
            Issue.record("expected badOption, got \(error)")
            return
        }
        #expect(option == "--additional-config")
        #expect(error.description.contains(named), "\(error)")
    }
}

// MARK: - File assignment

@Suite("Assigning output tensors to files")
struct FileAssignmentTests {
    /// Sizes in bytes (F32), in name order: lm_head 512, embed 512, input_layernorm 8, down 32, gate 32,
    /// up 32, post_attention_layernorm 8, k 16, o 16, q 16, v 16, norm 8.
    var tensors: [TensorInfo] {
        let shape = LlamaShape(heads: 1, kvHeads: 1, headDim: 2, hidden: 2, intermediate: 4, vocab: 64)
        return shape.tensors.map { source($0.name, $0.shape, .f32) }
    }

    @Test func tensorsArePackedInNameOrderIntoPartsAndABigTensorStandsAlone() throws {
        let shape = LlamaShape(heads: 1, kvHeads: 1, headDim: 2, hidden: 2, intermediate: 4, vocab: 64)
        let plan = try makePlan(tensors, shape.config, ParallelConfig(dp: 1, maxFileSize: 64))
        let rank = plan.rank(0)
        let p = "model.layers.0."
        let expected: [(String, Int)] = [
            ("lm_head.weight", 0), ("model.embed_tokens.weight", 1),
            (p + "input_layernorm.weight", 2), (p + "mlp.down_proj.weight", 2),
            (p + "mlp.gate_proj.weight", 3), (p + "mlp.up_proj.weight", 3),
            (p + "post_attention_layernorm.weight", 4), (p + "self_attn.k_proj.weight", 4), (p + "self_attn.o_proj.weight", 4),
            (p + "self_attn.q_proj.weight", 4),
            (p + "self_attn.v_proj.weight", 5), ("model.norm.weight", 5),
        ]
        #expect(rank.tensors.map(\.name) == expected.map(\.0))
        #expect(rank.tensors.map(\.file) == expected.map { "model-rank-0-part-\($0.1).safetensors" })
        #expect(rank.files == (0...5).map { "model-rank-0-part-\($0).safetensors" })
    }

    @Test func fileNamesCarryTheGlobalRankAndTheChosenPattern() throws {
        let shape = LlamaShape(heads: 2, kvHeads: 2, headDim: 1, hidden: 2, intermediate: 4, vocab: 64)
        let plan = try makePlan(shape.tensors, shape.config, ParallelConfig(dp: 2, tp: 2))
        #expect(plan.rank(3).files == ["model-rank-3-part-0.safetensors"])
        #expect(plan.rank(3).tensors.allSatisfy { $0.file == "model-rank-3-part-0.safetensors" })
        let custom = try makePlan(
            shape.tensors, shape.config, ParallelConfig(dp: 2, tp: 2, format: .hdf5, filePattern: "dp{dp_rank}-tp{tp_rank}-{part}"))
        #expect(custom.rank(2).files == ["dp1-tp0-0.h5"])
    }
}
