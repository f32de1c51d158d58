import Foundation
import Testing

@testable import FineShard

/// A source tensor for planning: only its name, type and shape matter.
func source(_ name: String, _ shape: [Int], _ dtype: DType = .bf16) -> TensorInfo {
    TensorInfo(name: name, dtype: dtype, shape: shape, file: "x.safetensors", offset: 0)
}

/// The shape of a Llama-family model small enough to check element by element.
struct LlamaShape: CustomStringConvertible {
    var heads: Int
    var kvHeads: Int
    var headDim: Int
    var hidden: Int
    var intermediate: Int
    var vocab: Int
    var layers = 1
    var tied = false
    var qkvBias = false
    /// W8A8 per-channel (`weight_scale`, `weight_offset`, `deq_scale`, `quant_bias`) and per-tensor
    /// (`input_scale`, `input_offset`) parameters on every linear layer.
    var w8a8 = false
    /// Whether `config.json` states `head_dim` and `num_key_value_heads` (otherwise derived).
    var explicitHeadFacts = true

    var description: String {
        "heads \(heads), kv \(kvHeads), head_dim \(headDim), hidden \(hidden), intermediate \(intermediate), vocab \(vocab), layers \(layers)"
            + (tied ? ", tied" : "") + (qkvBias ? ", qkv bias" : "") + (w8a8 ? ", w8a8" : "")
    }

    var config: ModelConfig {
        var c = ModelConfig()
        c.modelType = "llama"
        c.architectures = ["LlamaForCausalLM"]
        c.hiddenSize = hidden
        c.numAttentionHeads = heads
        c.numKeyValueHeads = explicitHeadFacts ? kvHeads : nil
        c.headDim = explicitHeadFacts ? headDim : nil
        c.intermediateSize = intermediate
        c.vocabSize = vocab
        c.numHiddenLayers = layers
        c.tieWordEmbeddings = tied
        return c
    }

    /// Linear layers of one decoder layer: module, output rows, input columns.
    var linears: [(String, Int, Int)] {
        [
            ("self_attn.q_proj", heads * headDim, hidden), ("self_attn.k_proj", kvHeads * headDim, hidden),
            ("self_attn.v_proj", kvHeads * headDim, hidden), ("self_attn.o_proj", hidden, heads * headDim),
            ("mlp.gate_proj", intermediate, hidden), ("mlp.up_proj", intermediate, hidden),
            ("mlp.down_proj", hidden, intermediate),
        ]
    }

    var tensors: [TensorInfo] {
        var out = [source("model.embed_tokens.weight", [vocab, hidden]), source("model.norm.weight", [hidden])]
        if !tied { out.append(source("lm_head.weight", [vocab, hidden])) }
        for l in 0..<layers {
            let p = "model.layers.\(l)."
            out += [source(p + "input_layernorm.weight", [hidden]), source(p + "post_attention_layernorm.weight", [hidden])]
            for (module, rows, cols) in linears {
                out.append(source(p + module + ".weight", [rows, cols], w8a8 ? .i8 : .bf16))
                if qkvBias, ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"].contains(module) {
                    out.append(source(p + module + ".bias", [rows]))
                }
                if w8a8 {
                    out += [
                        source(p + module + ".weight_scale", [rows, 1], .f32), source(p + module + ".weight_offset", [rows, 1], .f32),
                        source(p + module + ".deq_scale", [rows], .i64), source(p + module + ".quant_bias", [rows], .i32),
                        source(p + module + ".input_scale", [1], .f32), source(p + module + ".input_offset", [1], .f32),
                    ]
                }
            }
        }
        return out
    }
}

/// A small DeepSeek-V3 layout: layer 0 dense, layer 1 MoE with `experts` routed experts, MLA
/// attention, and an MTP layer 2 with its own embedding and shared head.
struct DeepSeekShape {
    var hidden = 16
    var heads = 4
    var qLoraRank = 8
    var kvLoraRank = 8
    var nope = 4
    var rope = 2
    var vHeadDim = 4
    var intermediate = 16
    var moeIntermediate = 8
    var experts = 8
    var vocab = 100

    var config: ModelConfig {
        var c = ModelConfig()
        c.modelType = "deepseek_v3"
        c.architectures = ["DeepseekV3ForCausalLM"]
        c.hiddenSize = hidden
        c.numAttentionHeads = heads
        c.numKeyValueHeads = heads
        c.intermediateSize = intermediate
        c.moeIntermediateSize = moeIntermediate
        c.vocabSize = vocab
        c.numHiddenLayers = 2
        c.firstKDenseReplace = 1
        c.nRoutedExperts = experts
        c.nSharedExperts = 1
        c.qLoraRank = qLoraRank
        c.kvLoraRank = kvLoraRank
        c.qkNopeHeadDim = nope
        c.qkRopeHeadDim = rope
        c.vHeadDim = vHeadDim
        c.numNextnPredictLayers = 1
        c.tieWordEmbeddings = false
        return c
    }

    func attention(_ p: String) -> [TensorInfo] {
        [
            source(p + "self_attn.q_a_proj.weight", [qLoraRank, hidden]), source(p + "self_attn.q_a_layernorm.weight", [qLoraRank]),
            source(p + "self_attn.q_b_proj.weight", [heads * (nope + rope), qLoraRank]),
            source(p + "self_attn.kv_a_proj_with_mqa.weight", [kvLoraRank + rope, hidden]),
            source(p + "self_attn.kv_a_layernorm.weight", [kvLoraRank]),
            source(p + "self_attn.kv_b_proj.weight", [heads * (nope + vHeadDim), kvLoraRank]),
            source(p + "self_attn.o_proj.weight", [hidden, heads * vHeadDim]),
            source(p + "input_layernorm.weight", [hidden]), source(p + "post_attention_layernorm.weight", [hidden]),
        ]
    }

    func moe(_ p: String) -> [TensorInfo] {
        var out = [
            source(p + "mlp.gate.weight", [experts, hidden], .f32), source(p + "mlp.gate.e_score_correction_bias", [experts], .f32),
            source(p + "mlp.shared_experts.gate_proj.weight", [moeIntermediate, hidden]),
            source(p + "mlp.shared_experts.up_proj.weight", [moeIntermediate, hidden]),
            source(p + "mlp.shared_experts.down_proj.weight", [hidden, moeIntermediate]),
        ]
        for e in 0..<experts {
            out += [
                source(p + "mlp.experts.\(e).gate_proj.weight", [moeIntermediate, hidden]),
                source(p + "mlp.experts.\(e).up_proj.weight", [moeIntermediate, hidden]),
                source(p + "mlp.experts.\(e).down_proj.weight", [hidden, moeIntermediate]),
            ]
        }
        return out
    }

    var tensors: [TensorInfo] {
        var out = [
            source("model.embed_tokens.weight", [vocab, hidden]), source("model.norm.weight", [hidden]),
            source("lm_head.weight", [vocab, hidden]),
        ]
        out += attention("model.layers.0.")
        out += [
            source("model.layers.0.mlp.gate_proj.weight", [intermediate, hidden]),
            source("model.layers.0.mlp.up_proj.weight", [intermediate, hidden]),
            source("model.layers.0.mlp.down_proj.weight", [hidden, intermediate]),
        ]
        out += attention("model.layers.1.") + moe("model.layers.1.")
        let mtp = "model.layers.2."
        out += attention(mtp) + moe(mtp)
        out += [
            source(mtp + "embed_tokens.weight", [vocab, hidden]), source(mtp + "shared_head.head.weight", [vocab, hidden]),
            source(mtp + "shared_head.norm.weight", [hidden]), source(mtp + "enorm.weight", [hidden]),
            source(mtp + "hnorm.weight", [hidden]), source(mtp + "eh_proj.weight", [hidden, 2 * hidden]),
        ]
        return out
    }
}

/// GPT-2 (`Conv1D` weights `[in, out]`, fused `c_attn`) without an lm_head tensor (tied).
func gpt2Model(hidden: Int = 8, heads: Int = 2, vocab: Int = 100, inner: Int = 32) -> ([TensorInfo], ModelConfig) {
    var c = ModelConfig()
    c.modelType = "gpt2"
    c.architectures = ["GPT2LMHeadModel"]
    c.nEmbd = hidden
    c.nHead = heads
    c.nLayer = 1
    c.nInner = inner
    c.vocabSize = vocab
    let p = "h.0."
    let tensors = [
        source("wte.weight", [vocab, hidden]), source("wpe.weight", [16, hidden]),
        source("ln_f.weight", [hidden]), source("ln_f.bias", [hidden]),
        source(p + "ln_1.weight", [hidden]), source(p + "ln_1.bias", [hidden]),
        source(p + "attn.bias", [1, 1, 16, 16]),
        source(p + "attn.c_attn.weight", [hidden, 3 * hidden]), source(p + "attn.c_attn.bias", [3 * hidden]),
        source(p + "attn.c_proj.weight", [hidden, hidden]), source(p + "attn.c_proj.bias", [hidden]),
        source(p + "ln_2.weight", [hidden]), source(p + "ln_2.bias", [hidden]),
        source(p + "mlp.c_fc.weight", [hidden, inner]), source(p + "mlp.c_fc.bias", [inner]),
        source(p + "mlp.c_proj.weight", [inner, hidden]), source(p + "mlp.c_proj.bias", [hidden]),
    ]
    return (tensors, c)
}

/// A BERT encoder layer as sentence-transformers stores it (no `bert.` prefix, no lm_head).
func bertModel(hidden: Int = 8, heads: Int = 2, vocab: Int = 100, intermediate: Int = 16) -> ([TensorInfo], ModelConfig) {
    var c = ModelConfig()
    c.modelType = "bert"
    c.architectures = ["BertModel"]
    c.hiddenSize = hidden
    c.numAttentionHeads = heads
    c.intermediateSize = intermediate
    c.vocabSize = vocab
    c.numHiddenLayers = 1
    let p = "encoder.layer.0."
    var tensors = [
        source("embeddings.word_embeddings.weight", [vocab, hidden], .f32),
        source("embeddings.position_embeddings.weight", [32, hidden], .f32),
        source("embeddings.token_type_embeddings.weight", [2, hidden], .f32),
        source("embeddings.LayerNorm.weight", [hidden], .f32), source("embeddings.LayerNorm.bias", [hidden], .f32),
        source("embeddings.position_ids", [1, 32], .i64),
        source("pooler.dense.weight", [hidden, hidden], .f32), source("pooler.dense.bias", [hidden], .f32),
    ]
    for (module, rows, cols) in [
        ("attention.self.query", hidden, hidden), ("attention.self.key", hidden, hidden), ("attention.self.value", hidden, hidden),
        ("attention.output.dense", hidden, hidden), ("intermediate.dense", intermediate, hidden), ("output.dense", hidden, intermediate),
    ] {
        tensors += [source(p + module + ".weight", [rows, cols], .f32), source(p + module + ".bias", [rows], .f32)]
    }
    for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
        tensors += [source(p + norm + ".weight", [hidden], .f32), source(p + norm + ".bias", [hidden], .f32)]
    }
    return (tensors, c)
}

// MARK: - Checking a plan element by element

/// What an output tensor of one rank must hold according to docs/SPEC.md §4: its shape, and along dimension
/// `dim` which source tensor and coordinate each output coordinate comes from (nil: zero padding);
/// every other dimension is copied whole.
struct ExpectedTensor {
    var shape: [Int]
    var dim: Int
    var rows: [(String, Int)?]
    /// A constant with no source (vLLM's attention scales): one fill piece of this value.
    var fill: Double? = nil

    static func whole(_ name: String, _ shape: [Int]) -> ExpectedTensor {
        ExpectedTensor(shape: shape, dim: 0, rows: (0..<shape[0]).map { (name, $0) })
    }
}

/// The source element behind every element of one output tensor, from its pieces; records every
/// violation of the piece invariants (inside both shapes, no overlaps).
struct Provenance {
    /// Per output element (row-major): the source tensor and its flat element index, or nil.
    var elements: [(String, Int)?]
    var violations: [String]

    init(_ tensor: PlannedTensor, sources: [String: TensorInfo]) {
        let count = tensor.shape.reduce(1, *)
        elements = Array(repeating: nil, count: count)
        violations = []
        for piece in tensor.pieces {
            guard let src = sources[piece.source] else {
                violations.append("\(tensor.name): piece from unknown source '\(piece.source)'")
                continue
            }
            let ranges = piece.region.ranges
            guard ranges.count == src.shape.count, piece.at.count == tensor.shape.count, ranges.count == tensor.shape.count else {
                violations.append(
                    "\(tensor.name): piece of '\(piece.source)' has rank \(ranges.count)/\(piece.at.count), tensors \(src.shape)/\(tensor.shape)"
                )
                continue
            }
            var inside = true
            for d in ranges.indices {
                if ranges[d].lowerBound < 0 || ranges[d].upperBound > src.shape[d] {
                    violations.append("\(tensor.name): piece range \(ranges[d]) outside '\(piece.source)' \(src.shape) in dim \(d)")
                    inside = false
                }
                if piece.at[d] < 0 || piece.at[d] + ranges[d].count > tensor.shape[d] {
                    violations.append(
                        "\(tensor.name): piece at \(piece.at) + \(piece.region.shape) outside output \(tensor.shape) in dim \(d)")
                    inside = false
                }
            }
            guard inside, piece.region.elementCount > 0 else { continue }
            forEachIndex(ranges) { index in
                var srcFlat = 0
                var outFlat = 0
                for d in index.indices {
                    srcFlat = srcFlat * src.shape[d] + index[d]
                    outFlat = outFlat * tensor.shape[d] + (index[d] - ranges[d].lowerBound + piece.at[d])
                }
                if elements[outFlat] != nil {
                    violations.append("\(tensor.name): pieces overlap at output element \(outFlat)")
                }
                elements[outFlat] = (piece.source, srcFlat)
            }
        }
    }
}

/// Calls `body` with every multi-index of a region, in row-major order.
func forEachIndex(_ ranges: [Range<Int>], _ body: ([Int]) -> Void) {
    guard !ranges.contains(where: \.isEmpty) else { return }
    var index = ranges.map(\.lowerBound)
    while true {
        body(index)
        var d = ranges.count - 1
        while d >= 0 {
            index[d] += 1
            if index[d] < ranges[d].upperBound { break }
            index[d] = ranges[d].lowerBound
            d -= 1
        }
        if d < 0 { return }
    }
}

/// Compares one rank's plan with what docs/SPEC.md §4 says it must hold; returns every difference.
func differences(_ rank: RankPlan, expected: [String: ExpectedTensor], sources: [String: TensorInfo]) -> [String] {
    var out: [String] = []
    let actualNames = Set(rank.tensors.map(\.name))
    for missing in Set(expected.keys).subtracting(actualNames).sorted() { out.append("rank \(rank.rank): missing \(missing)") }
    for extra in actualNames.subtracting(expected.keys).sorted() { out.append("rank \(rank.rank): unexpected \(extra)") }
    for tensor in rank.tensors {
        guard let want = expected[tensor.name] else { continue }
        guard tensor.shape == want.shape else {
            out.append("rank \(rank.rank): \(tensor.name) has shape \(tensor.shape), SPEC says \(want.shape)")
            continue
        }
        if let fill = want.fill {
            if tensor.dtype != .f32 || tensor.pieces != [Piece(fill: fill, shape: want.shape, at: want.shape.map { _ in 0 })] {
                out.append("rank \(rank.rank): \(tensor.name) is \(tensor.dtype) \(tensor.pieces), expected one F32 fill piece of \(fill)")
            }
            continue
        }
        let provenance = Provenance(tensor, sources: sources)
        out += provenance.violations.map { "rank \(rank.rank): \($0)" }
        var wrong = 0
        var first = ""
        forEachIndex(want.shape.map { 0..<$0 }) { index in
            var outFlat = 0
            for d in index.indices { outFlat = outFlat * want.shape[d] + index[d] }
            var expectedElement: (String, Int)?
            if let (name, row) = want.rows[index[want.dim]], let src = sources[name] {
                var srcIndex = index
                srcIndex[want.dim] = row
                var flat = 0
                for d in srcIndex.indices { flat = flat * src.shape[d] + srcIndex[d] }
                expectedElement = (name, flat)
            }
            let actual = provenance.elements[outFlat]
            if actual?.0 != expectedElement?.0 || actual?.1 != expectedElement?.1 {
                if wrong == 0 {
                    first =
                        "element \(index) is \(actual.map { "\($0.0)[\($0.1)]" } ?? "zero"), SPEC says \(expectedElement.map { "\($0.0)[\($0.1)]" } ?? "zero")"
                }
                wrong += 1
            }
        }
        if wrong > 0 { out.append("rank \(rank.rank): \(tensor.name): \(wrong) wrong elements; first: \(first)") }
    }
    return out
}

/// How many times every element of `source` appears in output `output` over each group of ranks.
/// Returns a description of each element whose count is not `copies`.
func coverageDifferences(
    _ plan: ShardPlan, source: TensorInfo, output: String, groups: [[Int]], copies: Int, rankPlans: [RankPlan]
) -> [String] {
    var out: [String] = []
    for group in groups {
        var counts = [Int](repeating: 0, count: source.elementCount)
        for r in group {
            guard let tensor = rankPlans[r].tensors.first(where: { $0.name == output }) else { continue }
            for piece in tensor.pieces where piece.source == source.name {
                forEachIndex(piece.region.ranges) { index in
                    var flat = 0
                    for d in index.indices { flat = flat * source.shape[d] + index[d] }
                    if flat < counts.count { counts[flat] += 1 }
                }
            }
        }
        if let bad = counts.firstIndex(where: { $0 != copies }) {
            out.append(
                "'\(source.name)' → '\(output)' over ranks \(group): element \(bad) appears \(counts[bad]) times, SPEC says \(copies)")
        }
    }
    return out
}
