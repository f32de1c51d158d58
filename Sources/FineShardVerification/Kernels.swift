import CKernels
import Dispatch
import Foundation

/// A row-major float32 matrix of activations or weights: `rows` × `cols`.
package struct Matrix: Sendable, Equatable {
    var rows: Int
    var cols: Int
    package var data: [Float]

    package init(rows: Int, cols: Int, data: [Float]) {
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

/// A linear's weight `[rows, cols]`, row-major: float32, or bfloat16 as the checkpoint stores it (the
/// native kernel widens it in registers, so no float32 copy of the weight is made).
package struct Weight: Sendable {
    package enum Values: Sendable {
        case f32([Float])
        case bf16([UInt16])
    }

    package var rows: Int
    package var cols: Int
    package var values: Values

    package init(_ m: Matrix) { (rows, cols, values) = (m.rows, m.cols, .f32(m.data)) }

    package init(rows: Int, cols: Int, bf16: [UInt16]) {
        precondition(bf16.count == rows * cols)
        (self.rows, self.cols, values) = (rows, cols, .bf16(bf16))
    }

    /// Rows `range`, copied.
    func rows(_ range: Range<Int>) -> Weight {
        let span = range.lowerBound * cols..<range.upperBound * cols
        var out = self
        out.rows = range.count
        switch values {
        case .f32(let v): out.values = .f32(Array(v[span]))
        case .bf16(let v): out.values = .bf16(Array(v[span]))
        }
        return out
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
package enum Kernels {
    /// Which code computes ``linear(_:weight:bias:threads:path:)``.
    package enum Path: Sendable, CaseIterable {
        /// Swift `SIMD4` code for any CPU (baseline x86-64 is SSE2 without FMA).
        case portable
        /// AVX2 + FMA C code (CKernels: eight lanes, fused multiply-add, bf16 weights widened in registers).
        case native
    }

    /// ``Path/native`` where the CPU has AVX2 and FMA, unless the environment sets
    /// `FINESHARD_KERNEL=portable` (to run and test the portable path on such a CPU).
    package static let defaultPath: Path =
        fs_native_kernels() != 0 && ProcessInfo.processInfo.environment["FINESHARD_KERNEL"] != "portable" ? .native : .portable

    /// Whether this CPU can take ``Path/native``.
    package static let nativeAvailable = fs_native_kernels() != 0

    /// `y = x · Wᵀ (+ b)` for `x` `[T, in]` and `W` `[out, in]` row-major — `torch.nn.functional.linear`,
    /// i.e. vLLM's `UnquantizedLinearMethod.apply`. Each output row of `W` is streamed once against
    /// the (small, cache-resident) token block; blocks of 64 output rows are split over `threads`
    /// workers. Every `(t, o)` sum is in a fixed order for a given path and weight type, so a run is
    /// reproducible; the portable and native paths (and f32 and bf16 weights) sum in different orders.
    package static func linear(
        _ x: Matrix, weight: Weight, bias: [Float]? = nil, threads: Int = 1, path: Path = defaultPath
    ) -> Matrix {
        precondition(weight.cols == x.cols, "linear: weight [\(weight.rows), \(weight.cols)] against input [\(x.rows), \(x.cols)]")
        precondition(bias == nil || bias!.count == weight.rows)
        let (tokens, n, outFeatures) = (x.rows, x.cols, weight.rows)
        let path = path == .native && nativeAvailable ? Path.native : .portable
        let input: [Float]
        switch (path, weight.values) {
        case (.native, .bf16):
            input = [Float](unsafeUninitializedCapacity: x.data.count) { b, count in
                x.data.withUnsafeBufferPointer { fs_pair_order($0.baseAddress, b.baseAddress, tokens, n) }
                count = x.data.count
            }
        default: input = x.data
        }
        let floats: [Float]
        switch (path, weight.values) {
        case (_, .f32(let w)): floats = w
        case (.portable, .bf16(let w)):
            floats = [Float](unsafeUninitializedCapacity: w.count) { b, count in
                w.withUnsafeBufferPointer { fs_bf16_to_f32($0.baseAddress, b.baseAddress, w.count) }
                count = w.count
            }
        case (.native, .bf16): floats = []
        }
        let y = [Float](unsafeUninitializedCapacity: tokens * outFeatures) { yb, count in
            count = tokens * outFeatures
            let out = SharedPointer(base: yb.baseAddress ?? UnsafeMutablePointer(bitPattern: 16)!)
            input.withUnsafeBufferPointer { xb in
                let xp = ReadOnlyPointer(base: xb.baseAddress ?? UnsafePointer(bitPattern: 16)!)
                (bias ?? []).withUnsafeBufferPointer { bb in
                    let bp = bias == nil ? nil : bb.baseAddress.map { ReadOnlyPointer(base: $0) }
                    if case (.native, .bf16(let w)) = (path, weight.values) {
                        w.withUnsafeBufferPointer { wb in
                            let wp = ReadOnlyPointer(base: wb.baseAddress ?? UnsafePointer(bitPattern: 16)!)
                            forEachBlock(rows: outFeatures, threads: threads) { r in
                                fs_linear_bf16(xp.base, wp.base, bp?.base, out.base, tokens, n, outFeatures, r.lowerBound, r.upperBound)
                            }
                        }
                        return
                    }
                    floats.withUnsafeBufferPointer { wb in
                        let wp = ReadOnlyPointer(base: wb.baseAddress ?? UnsafePointer(bitPattern: 16)!)
                        forEachBlock(rows: outFeatures, threads: threads) { r in
                            if path == .native {
                                fs_linear_f32(xp.base, wp.base, bp?.base, out.base, tokens, n, outFeatures, r.lowerBound, r.upperBound)
                            } else {
                                tile(
                                    rows: r, tokens: tokens, inFeatures: n, outFeatures: outFeatures, x: xp.base, w: wp.base,
                                    y: out.base, bias: bias)
                            }
                        }
                    }
                }
            }
        }
        return Matrix(rows: tokens, cols: outFeatures, data: y)
    }

    package static func linear(_ x: Matrix, weight: Matrix, bias: [Float]? = nil, threads: Int = 1, path: Path = defaultPath) -> Matrix {
        linear(x, weight: Weight(weight), bias: bias, threads: threads, path: path)
    }

    /// Runs `body` on the blocks of 64 rows of `0..<rows`, spread over `threads` workers.
    private static func forEachBlock(rows: Int, threads: Int, _ body: @Sendable (Range<Int>) -> Void) {
        let block = 64
        let blocks = (rows + block - 1) / block
        let workers = min(max(threads, 1), blocks)
        guard workers > 0 else { return }
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            var b = worker
            while b < blocks {
                body(b * block..<min((b + 1) * block, rows))
                b += workers
            }
        }
    }

    /// `y[t, o] = x[t] · w[o] + bias[o]` for the output rows `rows` and every token: four weight rows
    /// against two tokens at a time, so each loaded vector of `w` and `x` feeds several products
    /// (the register tile of a GEMM micro-kernel); each `(t, o)` sum is still one `dot`'s order over four lanes.
    @inline(__always)
    private static func tile(
        rows: Range<Int>, tokens: Int, inFeatures n: Int, outFeatures: Int, x: UnsafePointer<Float>, w: UnsafePointer<Float>,
        y: UnsafeMutablePointer<Float>, bias: [Float]?
    ) {
        var o = rows.lowerBound
        while o + 4 <= rows.upperBound {
            let w0 = UnsafeRawPointer(w + o * n)
            let w1 = UnsafeRawPointer(w + (o + 1) * n)
            let w2 = UnsafeRawPointer(w + (o + 2) * n)
            let w3 = UnsafeRawPointer(w + (o + 3) * n)
            var t = 0
            while t < tokens {
                let pair = t + 1 < tokens
                let x0 = UnsafeRawPointer(x + t * n)
                let x1 = UnsafeRawPointer(x + (pair ? t + 1 : t) * n)
                var a00 = SIMD4<Float>(), a10 = SIMD4<Float>(), a20 = SIMD4<Float>(), a30 = SIMD4<Float>()
                var a01 = SIMD4<Float>(), a11 = SIMD4<Float>(), a21 = SIMD4<Float>(), a31 = SIMD4<Float>()
                var i = 0
                while i + 4 <= n {
                    let off = i * 4
                    let u = x0.loadUnaligned(fromByteOffset: off, as: SIMD4<Float>.self)
                    let v = x1.loadUnaligned(fromByteOffset: off, as: SIMD4<Float>.self)
                    var r = w0.loadUnaligned(fromByteOffset: off, as: SIMD4<Float>.self)
                    a00 += r * u
                    a01 += r * v
                    r = w1.loadUnaligned(fromByteOffset: off, as: SIMD4<Float>.self)
                    a10 += r * u
                    a11 += r * v
                    r = w2.loadUnaligned(fromByteOffset: off, as: SIMD4<Float>.self)
                    a20 += r * u
                    a21 += r * v
                    r = w3.loadUnaligned(fromByteOffset: off, as: SIMD4<Float>.self)
                    a30 += r * u
                    a31 += r * v
                    i += 4
                }
                var s0 = SIMD4(a00.sum(), a10.sum(), a20.sum(), a30.sum())
                var s1 = SIMD4(a01.sum(), a11.sum(), a21.sum(), a31.sum())
                let x0f = x + t * n
                let x1f = x + (pair ? t + 1 : t) * n
                while i < n {
                    for j in 0..<4 {
                        s0[j] += w[(o + j) * n + i] * x0f[i]
                        s1[j] += w[(o + j) * n + i] * x1f[i]
                    }
                    i += 1
                }
                for j in 0..<4 {
                    let add = bias?[o + j] ?? 0
                    y[t * outFeatures + o + j] = s0[j] + add
                    if pair { y[(t + 1) * outFeatures + o + j] = s1[j] + add }
                }
                t += 2
            }
            o += 4
        }
        while o < rows.upperBound {
            let add = bias?[o] ?? 0
            for t in 0..<tokens { y[t * outFeatures + o] = dot(w + o * n, x + t * n, n) + add }
            o += 1
        }
    }

    /// A dot product with eight-lane SIMD accumulators (the order of the sum differs from BLAS,
    /// which is why sharded and dense results differ in the last bits).
    @inline(__always)
    package static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
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
    /// pairs `(x[i], x[i + d/2])` rotate by `position · invFreq[i]`. `x` is `[T, heads·stride]` and the
    /// rotated part of a head is its `headDim` columns from `offset` (MLA rotates only the last
    /// `qk_rope_head_dim` columns of a query head); `positions` gives each row's position.
    ///
    /// `interleaved` rotates the pairs `(x[2i], x[2i + 1])` instead — DeepSeek's layout
    /// (`apply_rotary_emb` of DeepSeek-V2 on complex pairs, `apply_rotary_pos_emb_interleave` of
    /// DeepSeek-V3 with `rope_interleave`). V3 writes the rotated pairs de-interleaved, V2 in place;
    /// q and k get the same permutation, so their dot products — all attention reads — are equal.
    /// `scale` multiplies cos and sin (YaRN's `attention_factor`, HF `attention_scaling`).
    static func rope(
        _ x: inout Matrix, heads: Int, headDim: Int, positions: [Int], invFreq: [Float], stride: Int? = nil, offset: Int = 0,
        interleaved: Bool = false, scale: Float = 1
    ) {
        let half = headDim / 2
        let stride = stride ?? headDim
        precondition(x.cols == heads * stride && invFreq.count == half && positions.count == x.rows && offset + headDim <= stride)
        for t in 0..<x.rows {
            // HF computes freqs = position · inv_freq in float32, then cos/sin of that (times attention_scaling).
            let angles = invFreq.map { Float(positions[t]) * $0 }
            let cosines = angles.map { Float(cos(Double($0))) * scale }
            let sines = angles.map { Float(sin(Double($0))) * scale }
            for h in 0..<heads {
                let base = t * x.cols + h * stride + offset
                for i in 0..<half {
                    let (ia, ib) = interleaved ? (base + 2 * i, base + 2 * i + 1) : (base + i, base + i + half)
                    let a = x.data[ia]
                    let b = x.data[ib]
                    x.data[ia] = a * cosines[i] - b * sines[i]
                    x.data[ib] = b * cosines[i] + a * sines[i]
                }
            }
        }
    }

    /// Scaled dot-product attention per sequence (`eager_attention_forward` in `modeling_llama.py`,
    /// `BertSelfAttention`): `softmax(q·kᵀ/√d (+ causal mask)) · v`, query head `h` reading kv head
    /// `h / (heads / kvHeads)` (`repeat_kv`). `q` is `[T, heads·d]`, `k`/`v` `[T, kvHeads·d]`;
    /// `segments` are the lengths of the independent sequences stacked in the rows. MLA heads have
    /// values of another width (`valueDim`, `v_head_dim`) and their own softmax `scale`.
    static func attention(
        q: Matrix, k: Matrix, v: Matrix, heads: Int, kvHeads: Int, headDim: Int, valueDim: Int? = nil, scale: Float? = nil,
        segments: [Int], causal: Bool
    ) -> Matrix {
        let valueDim = valueDim ?? headDim
        precondition(q.cols == heads * headDim && k.cols == kvHeads * headDim && v.cols == kvHeads * valueDim && heads % kvHeads == 0)
        var out = Matrix(rows: q.rows, cols: heads * valueDim)
        let group = heads / kvHeads
        let scale = scale ?? 1 / Float(headDim).squareRoot()
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
                            let o = (start + i) * out.cols + h * valueDim
                            for j in 0..<visible {
                                let p = scores[j] / total
                                let vj = (start + j) * v.cols + kvHead * valueDim
                                for e in 0..<valueDim { out.data[o + e] += p * v.data[vj + e] }
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

    /// The logistic sigmoid (`torch.sigmoid`: DeepSeek-V3 router scores, Qwen2-MoE `shared_expert_gate`).
    static func sigmoid(_ x: Float) -> Float { 1 / (1 + Float(exp(Double(-x)))) }

    /// `torch.softmax` over a row, in float32 (max subtracted first).
    static func softmax(_ x: [Float]) -> [Float] {
        let top = x.max() ?? 0
        let e = x.map { Float(exp(Double($0 - top))) }
        let total = e.reduce(0, +)
        return e.map { $0 / total }
    }

    /// Exact GELU (`ACT2FN["gelu"]`, BERT `hidden_act: "gelu"`): `x/2 · (1 + erf(x/√2))`.
    static func gelu(_ x: Float) -> Float { Float(0.5 * Double(x) * (1 + erf(Double(x) / 2.0.squareRoot()))) }
}
