import FineShardFormats
import FineShardModel
import FineShardPlanning
import Foundation

extension ForwardChecker.Architecture {
    /// Multi-head latent attention (DeepSeek-V2/V3, `DeepseekV3Attention` in `modeling_deepseek_v3.py`):
    /// queries from `q_a_proj` → `q_a_layernorm` → `q_b_proj` (or one `q_proj` when `q_lora_rank` is
    /// null), a compressed key/value latent from `kv_a_proj_with_mqa` (its last `qk_rope_head_dim`
    /// columns are one rotary key shared by every head) → `kv_a_layernorm` → `kv_b_proj`, which gives
    /// every head its non-rotary key and its value. RoPE rotates only the `qk_rope_head_dim` part.
    struct MLA: Sendable {
        var qLoraRank: Int?
        var kvLoraRank: Int
        var nopeDim: Int
        var ropeDim: Int
        var valueDim: Int
        /// DeepSeek rotates interleaved pairs: always in V2 (complex `freqs_cis`), with
        /// `rope_interleave` (transformers' default: true) in V3; otherwise `rotate_half`.
        var interleaved: Bool
        /// The softmax scale: `qk_head_dim^-0.5`, times `mscale²` for YaRN (`yarn_apply_mscale`).
        var scale: Float = 1

        var qkDim: Int { nopeDim + ropeDim }

        static func recognize(_ config: Config, model: Model) throws -> MLA? {
            guard model.facts.family == .deepseek else { return nil }
            func need(_ value: Int?, _ field: String) throws -> Int {
                guard let value, value > 0 else {
                    throw ModelError.missingFact(field: field, neededFor: "MLA attention in the forward check")
                }
                return value
            }
            let v2 = config.modelType == "deepseek_v2" || model.facts.architecture.hasPrefix("DeepseekV2")
            return MLA(
                qLoraRank: config.qLoraRank, kvLoraRank: try need(config.kvLoraRank, "kv_lora_rank"),
                nopeDim: try need(config.qkNopeHeadDim, "qk_nope_head_dim"), ropeDim: try need(config.qkRopeHeadDim, "qk_rope_head_dim"),
                valueDim: try need(config.vHeadDim, "v_head_dim"), interleaved: v2 || config.ropeInterleave != false)
        }

        /// `yarn_apply_mscale`: with a scaled rope type and a non-zero `mscale_all_dim`, the softmax
        /// scale is multiplied by `(0.1 · mscale_all_dim · ln(factor) + 1)²` (for factor > 1).
        func softmaxScale(_ config: Config) -> Float {
            var scale = pow(Double(qkDim), -0.5)
            let p = ForwardChecker.Architecture.ropeParameters(config)
            if p["rope_type"] != .string("default"), case .number(let all)? = p["mscale_all_dim"], all != 0,
                case .number(let factor)? = p["factor"]
            {
                let m = factor <= 1 ? 1 : 0.1 * all * log(factor) + 1
                scale *= m * m
            }
            return Float(scale)
        }
    }
}

extension ForwardChecker.Simulation {
    /// MLA on one rank: its `heads / TP` heads, as vLLM's `DeepseekV2MLAAttention` splits `q_b_proj`
    /// (or `q_proj`) and `kv_b_proj` by heads on the global TP group (`ColumnParallelLinear`), while
    /// `q_a_proj`, `kv_a_proj_with_mqa` and the two a-layernorms are replicated. Returns
    /// `[T, localHeads · v_head_dim]`, the input of the row-parallel `o_proj`.
    func attendMLA(rank r: Int, layer l: Int, _ h: Matrix, _ mla: ForwardChecker.Architecture.MLA) throws -> Matrix {
        let tp = topology.tp
        let heads = arch.heads / tp
        let first = topology.tpRank(r) * heads
        let qk = mla.qkDim
        var q: Matrix
        var qTensors: [String]
        if let rank = mla.qLoraRank {
            var a = Kernels.linear(h, weight: try matrix(arch.name(l, .qA), rank: r, rows: rank, cols: arch.hidden), threads: threads)
            Kernels.rmsNorm(&a, weight: try required(arch.name(l, .qANorm), rank: r, count: rank), eps: arch.eps)
            q = Kernels.linear(a, weight: try matrix(arch.name(l, .qB), rank: r, rows: heads * qk, cols: rank), threads: threads)
            qTensors = [arch.name(l, .qA), arch.name(l, .qANorm), arch.name(l, .qB)]
        } else {
            q = Kernels.linear(h, weight: try matrix(arch.name(l, .q), rank: r, rows: heads * qk, cols: arch.hidden), threads: threads)
            qTensors = [arch.name(l, .q)]
        }
        record(.query, layer: l, rank: r, tensors: qTensors, rows: rowIDs[r], columnOffset: first * qk, q)

        let latent = Kernels.linear(
            h, weight: try matrix(arch.name(l, .kvA), rank: r, rows: mla.kvLoraRank + mla.ropeDim, cols: arch.hidden), threads: threads)
        var kvNope = latent.columns(0..<mla.kvLoraRank)
        var kRot = latent.columns(mla.kvLoraRank..<mla.kvLoraRank + mla.ropeDim)
        Kernels.rmsNorm(&kvNope, weight: try required(arch.name(l, .kvANorm), rank: r, count: mla.kvLoraRank), eps: arch.eps)
        let perHead = mla.nopeDim + mla.valueDim
        let kv = Kernels.linear(
            kvNope, weight: try matrix(arch.name(l, .kvB), rank: r, rows: heads * perHead, cols: mla.kvLoraRank), threads: threads)
        record(
            .keyValue, layer: l, rank: r, tensors: [arch.name(l, .kvA), arch.name(l, .kvANorm), arch.name(l, .kvB)],
            rows: rowIDs[r], columnOffset: first * perHead, kv)

        let positions = segments[r].flatMap { 0..<$0 }
        Kernels.rope(
            &q, heads: heads, headDim: mla.ropeDim, positions: positions, invFreq: arch.invFreq, stride: qk, offset: mla.nopeDim,
            interleaved: mla.interleaved, scale: arch.ropeScale)
        Kernels.rope(
            &kRot, heads: 1, headDim: mla.ropeDim, positions: positions, invFreq: arch.invFreq, interleaved: mla.interleaved,
            scale: arch.ropeScale)
        // Every head's key: its own non-rotary part from kv_b_proj, then the shared rotary key.
        var k = Matrix(rows: h.rows, cols: heads * qk)
        var v = Matrix(rows: h.rows, cols: heads * mla.valueDim)
        for t in 0..<h.rows {
            for head in 0..<heads {
                let src = t * kv.cols + head * perHead
                let kBase = t * k.cols + head * qk
                k.data.replaceSubrange(kBase..<kBase + mla.nopeDim, with: kv.data[src..<src + mla.nopeDim])
                k.data.replaceSubrange(
                    kBase + mla.nopeDim..<kBase + qk, with: kRot.data[t * mla.ropeDim..<(t + 1) * mla.ropeDim])
                let vBase = t * v.cols + head * mla.valueDim
                v.data.replaceSubrange(vBase..<vBase + mla.valueDim, with: kv.data[src + mla.nopeDim..<src + perHead])
            }
        }
        return Kernels.attention(
            q: q, k: k, v: v, heads: heads, kvHeads: heads, headDim: qk, valueDim: mla.valueDim, scale: mla.scale,
            segments: segments[r], causal: true)
    }
}
