import FineShardFormats
import FineShardOutput
import FineShardPlanning
import Foundation

/// Produces an output tensor's bytes, row-major, from its plan pieces, through one bounded
/// buffer: the tensor is built in blocks of whole rows (dimension 0), each block zero-filled
/// where no piece lands (vocab padding). A piece that spans whole rows of the output is read
/// straight into the block; one that does not (a cut of an inner dimension stacked beside
/// others, GPT-2 `c_attn`) is read into scratch space and scattered.
package struct TensorAssembler {
    let reader: any PieceReader
    /// The most bytes one block may hold.
    let blockBytes: Int
    private var block: [UInt8] = []
    private var scratch: [UInt8] = []
    private let transformer = PieceTransformer()
    /// The dtype of the tensor being assembled (the element type of fill pieces).
    private var dtype = DType.u8

    package init(reader: any PieceReader, blockBytes: Int) {
        self.reader = reader
        self.blockBytes = max(blockBytes, 4096)
    }

    /// Calls `sink` with consecutive blocks of `tensor`'s bytes.
    package mutating func assemble(_ tensor: PlannedTensor, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        let shape = tensor.shape
        let size = tensor.dtype.size
        self.dtype = tensor.dtype
        if shape.isEmpty {
            // A scalar: one piece, the whole source.
            try fill(count: size)
            for p in tensor.pieces { try read(p, region: p.region, into: 0, count: size) }
            return try block.withUnsafeBytes { try sink(UnsafeRawBufferPointer(rebasing: $0[0..<size])) }
        }
        let rows = shape[0]
        let rowBytes = shape.dropFirst().reduce(1, *) * size
        guard rows > 0, rowBytes > 0 else { return }
        let rowsPerBlock = max(1, blockBytes / rowBytes)
        var r0 = 0
        while r0 < rows {
            let r1 = min(rows, r0 + rowsPerBlock)
            let count = (r1 - r0) * rowBytes
            // Pieces never overlap, so they fill the block exactly when their rows add up; only
            // a block with padding needs zeroing first.
            // A piece's box is in the output's dimensions; its region may have fewer (a stacked expert:
            // the output's dimension 0 is then a unit dimension of the box) or more (merge reading one back).
            let boxes = tensor.pieces.map(\.box)
            let covered = boxes.reduce(0) { sum, box in
                let rows = max(0, min(r1, box.ranges[0].upperBound) - max(r0, box.ranges[0].lowerBound))
                return sum + rows * box.ranges.dropFirst().reduce(1) { $0 * $1.count }
            }
            try fill(count: count, zero: covered * size != count)
            for (p, box) in zip(tensor.pieces, boxes) {
                let lo = max(r0, box.ranges[0].lowerBound)
                let hi = min(r1, box.ranges[0].upperBound)
                guard lo < hi else { continue }
                var sub = p.region
                let rowDim = p.region.ranges.count - box.ranges.count
                if rowDim >= 0 {
                    let start = p.region.ranges[rowDim].lowerBound + (lo - box.ranges[0].lowerBound)
                    sub.ranges[rowDim] = start..<start + (hi - lo)
                }
                let spansRows = (1..<shape.count).allSatisfy { box.ranges[$0] == 0..<shape[$0] }
                if spansRows {
                    try read(p, region: sub, into: (lo - r0) * rowBytes, count: (hi - lo) * rowBytes)
                } else {
                    var target = box
                    target.ranges[0] = lo - r0..<hi - r0
                    try scatter(p, region: sub, target: target, blockShape: [r1 - r0] + shape.dropFirst(), elementSize: size)
                }
            }
            try block.withUnsafeBytes { try sink(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
            r0 = r1
        }
    }

    private mutating func fill(count: Int, zero: Bool = true) throws {
        if block.count < count { block = [UInt8](repeating: 0, count: count) }
        if zero { block.withUnsafeMutableBytes { _ = memset($0.baseAddress!, 0, count) } }
    }

    private mutating func read(_ piece: Piece, region: Region, into offset: Int, count: Int) throws {
        let (reader, dtype, transformer) = (self.reader, self.dtype, self.transformer)
        try block.withUnsafeMutableBytes { buffer in
            try Self.read(
                piece, region: region, dtype: dtype, reader: reader, transformer: transformer,
                into: UnsafeMutableRawBufferPointer(rebasing: buffer[offset..<offset + count]))
        }
    }

    /// A piece's region from the reader (transformed when the piece says so), or a fill piece's constant repeated.
    private static func read(
        _ piece: Piece, region: Region, dtype: DType, reader: any PieceReader, transformer: PieceTransformer,
        into buffer: UnsafeMutableRawBufferPointer
    ) throws {
        if let transform = piece.transform {
            return try transformer.read(transform, source: piece.source, region: region, reader: reader, into: buffer)
        }
        guard piece.fill != nil else { return try reader.read(piece.source, region: region, into: buffer) }
        guard let element = piece.fillElement(dtype) else {
            throw ManifestError.invalid(file: Manifest.fileName, message: "a fill piece cannot be written as \(dtype.rawValue)")
        }
        for k in 0..<buffer.count { buffer[k] = element[k % element.count] }
    }

    /// Reads `region` packed into scratch space, then copies its innermost rows to their places
    /// `target` in the block (which has `blockShape` and holds output rows from the block's first row).
    private mutating func scatter(
        _ piece: Piece, region: Region, target: Region, blockShape: [Int], elementSize: Int
    ) throws {
        let bytes = region.elementCount * elementSize
        if scratch.count < bytes { scratch = [UInt8](repeating: 0, count: bytes) }
        let (reader, dtype, transformer) = (self.reader, self.dtype, self.transformer)
        try scratch.withUnsafeMutableBytes { buffer in
            try Self.read(
                piece, region: region, dtype: dtype, reader: reader, transformer: transformer,
                into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<bytes]))
        }
        let (runLength, _) = target.runs(in: blockShape, elementSize: elementSize)
        var source = 0
        scratch.withUnsafeBytes { from in
            block.withUnsafeMutableBytes { to in
                target.forEachRun(in: blockShape, elementSize: elementSize) { offset in
                    (to.baseAddress! + offset).copyMemory(from: from.baseAddress! + source, byteCount: runLength)
                    source += runLength
                }
            }
        }
    }
}

/// Reads a region of a named tensor: the source checkpoint when sharding, the shard files when
/// merging back.
package protocol PieceReader: Sendable {
    func read(_ name: String, region: Region, into buffer: UnsafeMutableRawBufferPointer) throws
}

extension Checkpoint: PieceReader {
    package func read(_ name: String, region: Region, into buffer: UnsafeMutableRawBufferPointer) throws {
        try read(try tensor(name), region: region, into: buffer)
    }
}
