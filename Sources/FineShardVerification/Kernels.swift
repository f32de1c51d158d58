import Dispatch
import Foundation

/// A row-major float32 matrix of activations or weights: `rows` × `cols`.
struct Matrix: Sendable, Equatable {
    var rows: Int
    var cols: Int
    var data: [Float]

    init(rows: Int, cols: Int, data: [Float]) {
        precondition(data.count == rows * cols)
        (self.rows, self.cols, self.data) = (rows, cols, data)
    }

    init(rows: Int, cols: Int) { self.init(rows: rows, cols: cols, data: [Float](repeating: 0, count: rows * cols)) }

    /// Rows `range`, copied.
    func rows(_ range: Range<Int>) -> Matrix {
        Matrix(rows: range.count, cols: cols, data: Array(data[range.lowerBound * cols..<range.upperBound * cols]))
    }

    /// Columns `range` of every row, copied.
    func columns(_ range: Range<Int>) -> Matrix {
        var out = [Float]()
        out.reserveCapacity(rows * range.count)
        for r in 0..<rows { out += data[r * cols + range.lowerBound..<r * cols + range.upperBound] }
        return Matrix(rows: rows, cols: range.count, data: out)
    }

    /// The matrices stacked along rows (an all-gather of row blocks).
    static func stacking(_ parts: [Matrix]) -> Matrix {
        let cols = parts.first?.cols ?? 0
        precondition(parts.allSatisfy { $0.cols == cols })
        return Matrix(rows: parts.reduce(0) { $0 + $1.rows }, cols: cols, data: parts.flatMap(\.data))
    }

    /// The matrices side by side (an all-gather of column blocks).
    static func concatenating(columns parts: [Matrix]) -> Matrix {
        let rows = parts.first?.rows ?? 0
        precondition(parts.allSatisfy { $0.rows == rows })
        var out = [Float]()
        out.reserveCapacity(rows * parts.reduce(0) { $0 + $1.cols })
        for r in 0..<rows { for p in parts { out += p.data[r * p.cols..<(r + 1) * p.cols] } }
        return Matrix(rows: rows, cols: parts.reduce(0) { $0 + $1.cols }, data: out)
    }

    static func += (a: inout Matrix, b: Matrix) {
        precondition(a.rows == b.rows && a.cols == b.cols)
        a.data.withUnsafeMutableBufferPointer { x in
            b.data.withUnsafeBufferPointer { y in for i in 0..<x.count { x[i] += y[i] } }
        }
    }
}

/// Lets a worker of `DispatchQueue.concurrentPerform` write its own disjoint part of a buffer.
private struct SharedPointer<T>: @unchecked Sendable {
    let base: UnsafeMutablePointer<T>
}

/// Lets workers read a buffer nobody writes while they run.
private struct ReadOnlyPointer<T>: @unchecked Sendable {
    let base: UnsafePointer<T>
}

/// The float32 arithmetic of the forward check. Every routine follows the PyTorch / Hugging Face
/// operation named in its comment, computed in float32 as `torch.float32` would.
enum Kernels {
    /// `y = x · Wᵀ (+ b)` for `x` `[T, in]` and `W` `[out, in]` row-major — `torch.nn.functional.linear`,
    /// i.e. vLLM's `UnquantizedLinearMethod.apply`. Each output row of `W` is streamed once against
    /// the (small, cache-resident) token block; output rows are split over `threads` workers.
    static func linear(
        _ x: Matrix, weight w: UnsafeBufferPointer<Float>, outFeatures: Int, bias: [Float]? = nil, threads: Int = 1
    ) -> Matrix {
        let inFeatures = x.cols
        precondition(w.count == outFeatures * inFeatures)
        precondition(bias == nil || bias!.count == outFeatures)
        let tokens = x.rows
        var y = [Float](repeating: 0, count: tokens * outFeatures)
        let block = 64
        let blocks = (outFeatures + block - 1) / block
        y.withUnsafeMutableBufferPointer { yb in
            let out = SharedPointer(base: yb.baseAddress!)
            x.data.withUnsafeBufferPointer { xb in
                let xp = ReadOnlyPointer(base: xb.baseAddress!)
                let wp = ReadOnlyPointer(base: w.baseAddress!)
                DispatchQueue.concurrentPerform(iterations: min(max(threads, 1), blocks)) { worker in
                    var b = worker
                    let step = min(max(threads, 1), blocks)
                    while b < blocks {
                        for o in b * block..<min((b + 1) * block, outFeatures) {
                            let row = wp.base + o * inFeatures
                            let add = bias?[o] ?? 0
                            for t in 0..<tokens {
                                out.base[t * outFeatures + o] = dot(row, xp.base + t * inFeatures, inFeatures) + add
                            }
                        }
                        b += step
                    }
                }
            }
        }
        return Matrix(rows: tokens, cols: outFeatures, data: y)
    }

    static func linear(_ x: Matrix, weight: Matrix, bias: [Float]? = nil, threads: Int = 1) -> Matrix {
        precondition(weight.cols == x.cols, "linear: weight [\(weight.rows), \(weight.cols)] against input [\(x.rows), \(x.cols)]")
        return weight.data.withUnsafeBufferPointer { linear(x, weight: $0, outFeatures: weight.rows, bias: bias, threads: threads) }
    }

    /// A dot product with eight-lane SIMD accumulators (the order of the sum differs from BLAS,
    /// which is why sharded and dense results differ in the last bits).
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc0 = SIMD8<Float>()
        var acc1 = SIMD8<Float>()
        var i = 0
        let ra = UnsafeRawPointer(a)
        let rb = UnsafeRawPointer(b)
        while i + 16 <= n {
            acc0 +=
                ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                * rb.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            acc1 +=
                ra.loadUnaligned(fromByteOffset: i * 4 + 32, as: SIMD8<Float>.self)
                * rb.loadUnaligned(fromByteOffset: i * 4 + 32, as: SIMD8<Float>.self)
            i += 16
        }
        var sum = (acc0 + acc1).sum()
        while i < n {
            sum += a[i] * b[i]
            i += 1
        }
        return sum
    }

    /// Hugging Face `LlamaRMSNorm` (`modeling_llama.py`): `w · x / sqrt(mean(x²) + eps)` per row.
    /// Qwen3's `q_norm`/`k_norm` are the same over each head (rows of `head_dim`).
    static func rmsNorm(_ x: inout Matrix, weight: [Float], eps: Float) {
        precondition(weight.count == x.cols)
        let n = x.cols
        x.data.withUnsafeMutableBufferPointer { d in
            for r in 0..<x.rows {
                let row = d.baseAddress! + r * n
                let meanSquare = dot(row, row, n) / Float(n)
                let scale = 1 / (meanSquare + eps).squareRoot()
                for i in 0..<n { row[i] = weight[i] * (row[i] * scale) }
            }
        }
    }

    /// `torch.nn.LayerNorm` (BERT `BertEmbeddings.LayerNorm`, `BertSelfOutput.LayerNorm`, `BertOutput.LayerNorm`):
    /// biased variance, `(x − mean) / sqrt(var + eps) · w + b` per row.
    static func layerNorm(_ x: inout Matrix, weight: [Float], bias: [Float], eps: Float) {
        precondition(weight.count == x.cols && bias.count == x.cols)
        let n = x.cols
        x.data.withUnsafeMutableBufferPointer { d in
            for r in 0..<x.rows {
                let row = d.baseAddress! + r * n
                var mean: Float = 0
                for i in 0..<n { mean += row[i] }
                mean /= Float(n)
                var variance: Float = 0
                for i in 0..<n { variance += (row[i] - mean) * (row[i] - mean) }
                variance /= Float(n)
                let scale = 1 / (variance + eps).squareRoot()
                for i in 0..<n { row[i] = (row[i] - mean) * scale * weight[i] + bias[i] }
            }
        }
    }

    /// Rotary position embedding in the Hugging Face Llama form (`apply_rotary_pos_emb` with
    /// `rotate_half`, the "neox" style of vLLM's `get_rope(is_neox_style=True)`): for each head, the
    /// pairs `(x[i], x[i + d/2])` rotate by `position · invFreq[i]`. `x` is `[T, heads·d]`;
    /// `positions` gives each row's position.
    static func rope(_ x: inout Matrix, heads: Int, headDim: Int, positions: [Int], invFreq: [Float]) {
        let half = headDim / 2
        precondition(x.cols == heads * headDim && invFreq.count == half && positions.count == x.rows)
        for t in 0..<x.rows {
            // HF computes freqs = position · inv_freq in float32, then cos/sin of that.
            let angles = invFreq.map { Float(positions[t]) * $0 }
            let cosines = angles.map { Float(cos(Double($0))) }
            let sines = angles.map { Float(sin(Double($0))) }
            for h in 0..<heads {
                let base = t * x.cols + h * headDim
                for i in 0..<half {
                    let a = x.data[base + i]
                    let b = x.data[base + i + half]
                    x.data[base + i] = a * cosines[i] - b * sines[i]
                    x.data[base + i + half] = b * cosines[i] + a * sines[i]
                }
            }
        }
    }

    /// Scaled dot-product attention per sequence (`eager_attention_forward` in `modeling_llama.py`,
    /// `BertSelfAttention`): `softmax(q·kᵀ/√d (+ causal mask)) · v`, query head `h` reading kv head
    /// `h / (heads / kvHeads)` (`repeat_kv`). `q` is `[T, heads·d]`, `k`/`v` `[T, kvHeads·d]`;
    /// `segments` are the lengths of the independent sequences stacked in the rows.
    static func attention(q: Matrix, k: Matrix, v: Matrix, heads: Int, kvHeads: Int, headDim: Int, segments: [Int], causal: Bool) -> Matrix
    {
        precondition(q.cols == heads * headDim && k.cols == kvHeads * headDim && v.cols == kvHeads * headDim && heads % kvHeads == 0)
        var out = Matrix(rows: q.rows, cols: q.cols)
        let group = heads / kvHeads
        let scale = 1 / Float(headDim).squareRoot()
        var start = 0
        q.data.withUnsafeBufferPointer { qb in
            k.data.withUnsafeBufferPointer { kb in
                for length in segments {
                    for h in 0..<heads {
                        let kvHead = h / group
                        for i in 0..<length {
                            let qi = qb.baseAddress! + (start + i) * q.cols + h * headDim
                            let visible = causal ? i + 1 : length
                            var scores = (0..<visible).map { j in
                                dot(qi, kb.baseAddress! + (start + j) * k.cols + kvHead * headDim, headDim) * scale
                            }
                            let top = scores.max() ?? 0
                            var total: Float = 0
                            for j in scores.indices {
                                scores[j] = Float(exp(Double(scores[j] - top)))
                                total += scores[j]
                            }
                            let o = (start + i) * out.cols + h * headDim
                            for j in 0..<visible {
                                let p = scores[j] / total
                                let vj = (start + j) * v.cols + kvHead * headDim
                                for e in 0..<headDim { out.data[o + e] += p * v.data[vj + e] }
                            }
                        }
                    }
                    start += length
                }
            }
        }
        return out
    }

    /// SiLU (`torch.nn.functional.silu`, Llama `hidden_act: "silu"`): `x · σ(x)`.
    static func silu(_ x: Float) -> Float { x / (1 + Float(exp(Double(-x)))) }

    /// Exact GELU (`ACT2FN["gelu"]`, BERT `hidden_act: "gelu"`): `x/2 · (1 + erf(x/√2))`.
    static func gelu(_ x: Float) -> Float { Float(0.5 * Double(x) * (1 + erf(Double(x) / 2.0.squareRoot()))) }
}
