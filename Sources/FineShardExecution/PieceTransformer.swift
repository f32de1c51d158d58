import FineShardFormats
import FineShardOutput
import FineShardPlanning

/// Carries out a piece's ``PieceTransform`` for a region: reads the source bytes (and the scale blocks
/// that cover them) through a ``PieceReader`` into its own reusable scratch space and writes the
/// output's BF16 bytes. `shard` uses it while assembling, `verify --source` to recompute what a shard
/// must hold. One thread uses it at a time (each ``TensorAssembler`` has its own; the executor's pool
/// hands an assembler to one worker at a time), hence `@unchecked Sendable`.
package final class PieceTransformer: @unchecked Sendable {
    private var source: [UInt8] = []
    private var scaleBytes: [UInt8] = []
    private var scales: [Float] = []

    package init() {}

    /// Writes `transform` of `region` of source tensor `name` into `buffer` (the region's elements in BF16).
    package func read(
        _ transform: PieceTransform, source name: String, region: Region, reader: any PieceReader,
        into buffer: UnsafeMutableRawBufferPointer
    ) throws {
        let count = region.elementCount
        guard count > 0 else { return }
        let sourceBytes = count * transform.sourceDType.size
        if source.count < sourceBytes { source = [UInt8](repeating: 0, count: sourceBytes) }
        try source.withUnsafeMutableBytes {
            try reader.read(name, region: region, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<sourceBytes]))
        }
        switch transform {
        case .cast(let from):
            source.withUnsafeBytes { BF16Cast.cast($0, from: from, count: count, into: buffer) }
        case .fp8BlockDequant(_, let scale, let scaleDType, let block):
            guard region.ranges.count == 2 else {
                throw ManifestError.invalid(
                    file: Manifest.fileName,
                    message: "fp8_block_dequant of '\(name)' reads 2-D weights; the piece's region \(region.shape) is not 2-D")
            }
            let (rows, cols) = (region.ranges[0], region.ranges[1])
            let blocks = Region([
                rows.lowerBound / block[0]..<(rows.upperBound + block[0] - 1) / block[0],
                cols.lowerBound / block[1]..<(cols.upperBound + block[1] - 1) / block[1],
            ])
            try readScales(scale, dtype: scaleDType, region: blocks, reader: reader)
            source.withUnsafeBytes { w in
                scales.withUnsafeBufferPointer { s in
                    BF16Cast.dequantizeFP8Blocks(
                        UnsafeRawBufferPointer(rebasing: w[0..<sourceBytes]), rows: rows.count, cols: cols.count,
                        origin: (rows.lowerBound, cols.lowerBound), block: (block[0], block[1]), scales: s,
                        scaleColumns: blocks.ranges[1].count, into: buffer)
                }
            }
        }
    }

    /// The scale blocks of `region`, widened to Float32 (exact from F32, BF16, F16).
    private func readScales(_ name: String, dtype: DType, region: Region, reader: any PieceReader) throws {
        let count = region.elementCount
        if scales.count < count { scales = [Float](repeating: 0, count: count) }
        let bytes = count * dtype.size
        if scaleBytes.count < bytes { scaleBytes = [UInt8](repeating: 0, count: bytes) }
        try scaleBytes.withUnsafeMutableBytes {
            try reader.read(name, region: region, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<bytes]))
        }
        scaleBytes.withUnsafeBytes { raw in
            scales.withUnsafeMutableBufferPointer { dtype.toFloat32(raw.baseAddress!, count: count, into: $0.baseAddress!) }
        }
    }
}
