import FineShardExecution
import FineShardFormats
import FineShardOutput
import FineShardPlanning
import Foundation

extension ForwardChecker {
    /// Where a simulated rank reads its weights: the dense source (one rank holding everything) or the
    /// shard files of a manifest. Tensors are read when a stage needs them and released after it, so
    /// memory holds one layer's weights, not the model.
    protocol Weights: Sendable {
        /// The shape of tensor `name` on `rank`, nil when the rank holds no such tensor.
        func shape(_ name: String, rank: Int) throws -> [Int]?
        /// Rows `rows` of dimension 0 (all of it when nil) of `name` on `rank`, as float32.
        func read(_ name: String, rank: Int, rows: Range<Int>?) throws -> [Float]
        /// The source row that row 0 of the rank's tensor holds, from the manifest's pieces; nil when
        /// no piece says (a shard that is all padding, or the dense source).
        func firstSourceRow(_ name: String, rank: Int) -> Int?
        /// Whether the shards hold `name` rounded to BF16 (`shard --dtype bf16`), so the dense pass rounds
        /// it too, after dequantizing.
        func roundsToBF16(_ name: String) -> Bool
    }
}

extension ForwardChecker.Weights {
    /// Reads `name` of `checkpoint` as float32 (DType.toFloat32: bf16, f16, f8 widen exactly).
    static func floats(
        _ checkpoint: Checkpoint, _ info: TensorInfo, rows: Range<Int>?
    ) throws
        -> [Float]
    {
        var region = Region(whole: info.shape)
        if let rows, !region.ranges.isEmpty { region.ranges[0] = rows }
        let count = region.elementCount
        var out = [Float](repeating: 0, count: count)
        guard count > 0 else { return out }
        if info.dtype == .f32 {
            try out.withUnsafeMutableBytes { try checkpoint.read(info, region: region, into: $0) }
            return out
        }
        let raw = UnsafeMutableRawBufferPointer.allocate(
            byteCount: count * info.dtype.size, alignment: 16)
        defer { raw.deallocate() }
        try checkpoint.read(info, region: region, into: raw)
        out.withUnsafeMutableBufferPointer {
            info.dtype.toFloat32(raw.baseAddress!, count: count, into: $0.baseAddress!)
        }
        return out
    }
}

extension ForwardChecker {
    /// The dense source checkpoint as the weights of a single rank.
    struct SourceWeights: Weights {
        let checkpoint: Checkpoint
        /// The source tensors the manifest's pieces transform to BF16 (``Manifest/transformedSources``).
        var bf16: Set<String> = []

        func shape(_ name: String, rank: Int) throws -> [Int]? {
            checkpoint.contains(name) ? try checkpoint.tensor(name).shape : nil
        }

        func read(_ name: String, rank: Int, rows: Range<Int>?) throws -> [Float] {
            var values = try Self.floats(checkpoint, try checkpoint.tensor(name), rows: rows)
            if bf16.contains(name) { roundToBF16(&values) }
            return values
        }

        func firstSourceRow(_ name: String, rank: Int) -> Int? { nil }

        func roundsToBF16(_ name: String) -> Bool { bf16.contains(name) }
    }

    /// The shard files of an output folder, each rank reading only the tensors its manifest entry lists
    /// (never the source).
    struct ShardWeights: Weights {
        let shards: ShardSet
        let tensors: [[String: PlannedTensor]]
        /// Every rank file's record, for its tensor hashes.
        let files: [String: Manifest.FileRecord]

        init(folder: String, manifest: Manifest) {
            shards = ShardSet(folder: folder)
            var byRank = [[String: PlannedTensor]](repeating: [:], count: manifest.ranks.count)
            for r in manifest.ranks {
                byRank[r.rank] = Dictionary(r.tensors.map { ($0.name, $0) }) { a, _ in a }
            }
            tensors = byRank
            files = Dictionary(manifest.ranks.flatMap(\.files).map { ($0.name, $0) }) { a, _ in a }
        }

        func shape(_ name: String, rank: Int) throws -> [Int]? { tensors[rank][name]?.shape }

        func read(_ name: String, rank: Int, rows: Range<Int>?) throws -> [Float] {
            guard let planned = tensors[rank][name] else {
                throw ForwardCheckError.layoutDisagrees(
                    rank: rank, tensor: name, message: "the manifest lists no such tensor for this rank")
            }
            // Header and SHA-256 against the manifest before the tensor is used (exit 1 when they differ).
            try shards.checkOnce(planned, record: files[planned.file])
            let checkpoint = try shards.checkpoint(planned.file)
            return try Self.floats(checkpoint, try checkpoint.tensor(name), rows: rows)
        }

        func firstSourceRow(_ name: String, rank: Int) -> Int? {
            guard let piece = tensors[rank][name]?.pieces.first, let rows = piece.region.ranges.first,
                let at = piece.at.first
            else { return nil }
            return rows.lowerBound - at
        }

        /// Shards hold their values as they are (already BF16 when cast).
        func roundsToBF16(_ name: String) -> Bool { false }
    }
}
