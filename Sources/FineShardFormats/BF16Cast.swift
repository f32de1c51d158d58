/// The arithmetic of `shard --dtype bf16` (docs/SPEC.md §4): FP8 E4M3 block dequantization and F32 / F16
/// casts, written as BF16 bits. The conversions are branch-free element loops the compiler vectorizes;
/// FP8 blocks go through a per-block table of their 256 possible results.
///
/// Rounding is IEEE round to nearest even. NaN becomes the quiet NaN `0x7FC0` with the NaN's sign
/// (`0xFFC0`), as ml_dtypes / Eigen's `bfloat16` do; PyTorch's CPU conversion writes `0x7FC0` whatever the
/// sign, CUDA's `0x7FFF`. Every other value, subnormals and infinities included, is bit for bit what
/// DeepSeek's `weight_dequant` (`float32(w) * s`, stored to a bfloat16 tensor) computes.
public enum BF16Cast {
    /// The BF16 bits of `f`: round to nearest even; NaN → sign | `0x7FC0`.
    @inline(__always)
    public static func bits(_ f: Float) -> UInt16 {
        let u = f.bitPattern
        let rounded = (u &+ 0x7FFF &+ ((u >> 16) & 1)) >> 16
        let nan = (u & 0x7FFF_FFFF) > 0x7F80_0000
        return UInt16(truncatingIfNeeded: nan ? ((u >> 16) & 0x8000) | 0x7FC0 : rounded)
    }

    /// OCP FP8 E4M3FN (PyTorch `float8_e4m3fn`) to Float32, exactly: the 7 magnitude bits placed at the
    /// top of a float32 mantissa and scaled by 2¹²⁰ (which also turns an FP8 subnormal, read as a float32
    /// subnormal, into its value); `S.1111.111` is NaN.
    @inline(__always)
    public static func e4m3(_ byte: UInt8) -> Float {
        let b = UInt32(byte)
        let sign = (b & 0x80) << 24
        let magnitude = Float(bitPattern: (b & 0x7F) << 20) * 0x1p120
        return Float(bitPattern: (b & 0x7F == 0x7F ? 0x7FC0_0000 : magnitude.bitPattern) | sign)
    }

    /// Dequantizes a `rows × cols` region of a 2-D FP8 E4M3 weight whose first element is at
    /// `origin` (row, column) of the weight: `out[r, c] = bf16(w[r, c] × scales[block of (origin + (r, c))])`.
    /// `weight` holds the region packed row-major; `scales` holds the blocks that cover it, packed
    /// row-major as `⌈…⌉` rows of `scaleColumns` from block `(origin.row / block.rows, origin.col / block.cols)`.
    ///
    /// The product depends only on the byte and the block's scale, so each block's part of the region goes
    /// through a 256-entry table of BF16 results, built with the arithmetic above (256 products per block
    /// instead of one per element; a 128 × 128 block has 16,384).
    public static func dequantizeFP8Blocks(
        _ weight: UnsafeRawBufferPointer, rows: Int, cols: Int, origin: (row: Int, col: Int), block: (rows: Int, cols: Int),
        scales: UnsafeBufferPointer<Float>, scaleColumns: Int, into out: UnsafeMutableRawBufferPointer
    ) {
        precondition(weight.count >= rows * cols && out.count >= rows * cols * 2)
        guard rows > 0, cols > 0 else { return }
        let w = weight.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let o = out.baseAddress!.assumingMemoryBound(to: UInt16.self)
        let firstBlockRow = origin.row / block.rows
        let firstBlockCol = origin.col / block.cols
        withUnsafeTemporaryAllocation(of: UInt16.self, capacity: 256) { table in
            var r = 0
            while r < rows {
                let blockRow = (origin.row + r) / block.rows
                let rowEnd = min(rows, (blockRow + 1) * block.rows - origin.row)
                var c = 0
                while c < cols {
                    let blockCol = (origin.col + c) / block.cols
                    let colEnd = min(cols, (blockCol + 1) * block.cols - origin.col)
                    let scale = scales[(blockRow - firstBlockRow) * scaleColumns + blockCol - firstBlockCol]
                    for b in 0..<256 { table[b] = bits(e4m3(UInt8(b)) * scale) }
                    for i in r..<rowEnd {
                        let (from, to) = (w + i * cols, o + i * cols)
                        for j in c..<colEnd { to[j] = table[Int(from[j])] }
                    }
                    c = colEnd
                }
                r = rowEnd
            }
        }
    }

    /// `count` F32 or F16 elements of `source` to BF16 bits in `out`.
    public static func cast(_ source: UnsafeRawBufferPointer, from dtype: DType, count: Int, into out: UnsafeMutableRawBufferPointer) {
        precondition(source.count >= count * dtype.size && out.count >= count * 2)
        let o = out.baseAddress!.assumingMemoryBound(to: UInt16.self)
        switch dtype {
        case .f32:
            let s = source.baseAddress!.assumingMemoryBound(to: UInt32.self)
            for k in 0..<count { o[k] = bits(Float(bitPattern: UInt32(littleEndian: s[k]))) }
        case .f16:
            let s = source.baseAddress!.assumingMemoryBound(to: UInt16.self)
            for k in 0..<count { o[k] = bits(DType.halfToFloat(UInt16(littleEndian: s[k]))) }
        default:
            preconditionFailure("BF16Cast.cast reads F32 or F16, not \(dtype.rawValue)")
        }
    }
}
