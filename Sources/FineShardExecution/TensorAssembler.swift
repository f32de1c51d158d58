import FineShardFormats
import FineShardOutput
import FineShardPlanning
import FineShardSystem
import Foundation

/// Produces an output tensor's bytes, row-major, from its plan pieces, in blocks of whole rows
/// (dimension 0) of at most ``blockBytes``, each block zero-filled where no piece lands (vocab
/// padding). A piece that spans whole rows of the output is read straight into the block; one
/// that does not (a cut of an inner dimension stacked beside others, GPT-2 `c_attn`) is read into
/// scratch space and scattered. Blocks can be made one at a time (``assemble(_:block:into:)``),
/// which is how `shard` makes each block once for all the files that hold it.
package struct TensorAssembler {
    let reader: any PieceReader
    /// The most bytes one block may hold.
    let blockBytes: Int
    private var block: [UInt8] = []
    private var scratch: [UInt8] = []
    private let transformer = PieceTransformer()

    package init(reader: any PieceReader, blockBytes: Int) {
        self.reader = reader
        self.blockBytes = max(blockBytes, 4096)
    }

    /// How `tensor` is cut: `count` blocks of `rowsPerBlock` rows of `rowBytes` (the last may be
    /// shorter); a scalar is one block of one element, an empty tensor has no block.
    package func blocking(_ tensor: PlannedTensor) -> (rowsPerBlock: Int, rowBytes: Int, count: Int) {
        let shape = tensor.shape
        guard let rows = shape.first else { return (1, tensor.dtype.size, 1) }
        let rowBytes = shape.dropFirst().reduce(1, *) * tensor.dtype.size
        guard rows > 0, rowBytes > 0 else { return (1, rowBytes, 0) }
        let rowsPerBlock = max(1, blockBytes / rowBytes)
        return (rowsPerBlock, rowBytes, (rows + rowsPerBlock - 1) / rowsPerBlock)
    }

    /// The byte count of block `index` of `tensor`.
    package func byteCount(_ tensor: PlannedTensor, block index: Int) -> Int {
        let (rowsPerBlock, rowBytes, _) = blocking(tensor)
        guard let rows = tensor.shape.first else { return rowBytes }
        return (min(rows, (index + 1) * rowsPerBlock) - index * rowsPerBlock) * rowBytes
    }

    /// Calls `sink` with consecutive blocks of `tensor`'s bytes.
    package mutating func assemble(_ tensor: PlannedTensor, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        for k in 0..<blocking(tensor).count {
            let count = byteCount(tensor, block: k)
            var buffer = block
            block = []
            defer { block = buffer }
            if buffer.count < count { buffer = [UInt8](repeating: 0, count: count) }
            try buffer.withUnsafeMutableBytes { b in
                let out = UnsafeMutableRawBufferPointer(rebasing: b[0..<count])
                try assemble(tensor, block: k, into: out)
                try sink(UnsafeRawBufferPointer(out))
            }
        }
    }

    /// Writes block `index` of `tensor` into `buffer` (exactly ``byteCount(_:block:)`` bytes).
    package mutating func assemble(_ tensor: PlannedTensor, block index: Int, into buffer: UnsafeMutableRawBufferPointer) throws {
        let shape = tensor.shape
        let size = tensor.dtype.size
        if shape.isEmpty {
            // A scalar: one piece, the whole source.
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            for p in tensor.pieces { try read(p, dtype: tensor.dtype, region: p.region, into: buffer) }
            return
        }
        let (rowsPerBlock, rowBytes, _) = blocking(tensor)
        let r0 = index * rowsPerBlock
        let r1 = min(shape[0], r0 + rowsPerBlock)
        let count = (r1 - r0) * rowBytes
        precondition(buffer.count == count)
        // Pieces never overlap, so they fill the block exactly when their rows add up; only
        // a block with padding needs zeroing first.
        // A piece's box is in the output's dimensions; its region may have fewer (a stacked expert:
        // the output's dimension 0 is then a unit dimension of the box) or more (merge reading one back).
        let boxes = tensor.pieces.map(\.box)
        let covered = boxes.reduce(0) { sum, box in
            let rows = max(0, min(r1, box.ranges[0].upperBound) - max(r0, box.ranges[0].lowerBound))
            return sum + rows * box.ranges.dropFirst().reduce(1) { $0 * $1.count }
        }
        if covered * size != count { buffer.initializeMemory(as: UInt8.self, repeating: 0) }
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
                let out = UnsafeMutableRawBufferPointer(rebasing: buffer[(lo - r0) * rowBytes..<(hi - r0) * rowBytes])
                try read(p, dtype: tensor.dtype, region: sub, into: out)
            } else {
                var target = box
                target.ranges[0] = lo - r0..<hi - r0
                try scatter(p, dtype: tensor.dtype, region: sub, target: target, blockShape: [r1 - r0] + shape.dropFirst(), into: buffer)
            }
        }
    }

    /// Block `index` of `tensor` as the reader maps it (no copy), when one piece fills the block
    /// with a range of its source's rows as stored; nil when the block must be assembled.
    package func mapped(_ tensor: PlannedTensor, block index: Int) throws -> MappedRegion? {
        let shape = tensor.shape
        let (rowsPerBlock, _, count) = blocking(tensor)
        guard !shape.isEmpty, count > 0 else { return nil }
        let r0 = index * rowsPerBlock
        let r1 = min(shape[0], r0 + rowsPerBlock)
        let touching = tensor.pieces.filter { $0.box.ranges[0].overlaps(r0..<r1) }
        guard touching.count == 1, let p = touching.first, p.transform == nil, p.fill == nil else { return nil }
        let box = p.box
        guard box.ranges[0].lowerBound <= r0, box.ranges[0].upperBound >= r1,
            (1..<shape.count).allSatisfy({ box.ranges[$0] == 0..<shape[$0] })
        else { return nil }
        var sub = p.region
        let rowDim = p.region.ranges.count - box.ranges.count
        guard rowDim >= 0 else { return nil }
        let start = p.region.ranges[rowDim].lowerBound + (r0 - box.ranges[0].lowerBound)
        sub.ranges[rowDim] = start..<start + (r1 - r0)
        return try reader.mapped(p.source, region: sub)
    }

    /// A piece's region from the reader (transformed when the piece says so), or a fill piece's constant repeated.
    private func read(_ piece: Piece, dtype: DType, region: Region, into buffer: UnsafeMutableRawBufferPointer) throws {
        try Self.read(piece, dtype: dtype, region: region, reader: reader, transformer: transformer, into: buffer)
    }

    private static func read(
        _ piece: Piece, dtype: DType, region: Region, reader: any PieceReader, transformer: PieceTransformer,
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
    /// `target` in the block `buffer` (which has `blockShape` and holds output rows from the block's first row).
    private mutating func scatter(
        _ piece: Piece, dtype: DType, region: Region, target: Region, blockShape: [Int], into buffer: UnsafeMutableRawBufferPointer
    ) throws {
        let elementSize = dtype.size
        let bytes = region.elementCount * elementSize
        if scratch.count < bytes { scratch = [UInt8](repeating: 0, count: bytes) }
        let (reader, transformer) = (self.reader, self.transformer)
        try scratch.withUnsafeMutableBytes {
            try Self.read(
                piece, dtype: dtype, region: region, reader: reader, transformer: transformer,
                into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<bytes]))
        }
        let (runLength, _) = target.runs(in: blockShape, elementSize: elementSize)
        var source = 0
        scratch.withUnsafeBytes { from in
            target.forEachRun(in: blockShape, elementSize: elementSize) { offset in
                (buffer.baseAddress! + offset).copyMemory(from: from.baseAddress! + source, byteCount: runLength)
                source += runLength
            }
        }
    }
}

/// Reads a region of a named tensor: the source checkpoint when sharding, the shard files when
/// merging back.
package protocol PieceReader: Sendable {
    func read(_ name: String, region: Region, into buffer: UnsafeMutableRawBufferPointer) throws
    /// The region mapped where it is stored, when the reader can (one run of a safetensors file).
    func mapped(_ name: String, region: Region) throws -> MappedRegion?
}

extension PieceReader {
    package func mapped(_ name: String, region: Region) throws -> MappedRegion? { nil }
}

extension Checkpoint: PieceReader {
    package func read(_ name: String, region: Region, into buffer: UnsafeMutableRawBufferPointer) throws {
        try read(try tensor(name), region: region, into: buffer)
    }

    package func mapped(_ name: String, region: Region) throws -> MappedRegion? { try mapped(try tensor(name), region: region) }
}
