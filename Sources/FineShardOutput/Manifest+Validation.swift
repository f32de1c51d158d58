import FineShardFormats
import FineShardModel
import FineShardPlanning
import FineShardSystem

extension Manifest {
    /// Checks everything a manifest says that can be checked without reading a shard (docs/SPEC.md §5),
    /// before anything in it is used: an output folder may come from someone else, so its manifest is
    /// input like a checkpoint header. Names stay inside OUT, the schema is known, the parallel sizes
    /// are ones the planner accepts, every rank appears once with its own files, and every size, piece
    /// and offset fits its tensor without overflow. `complete`: `manifest.json`, which must list every
    /// rank (a partial manifest lists some). Throws ``ManifestError/invalid(file:message:)`` naming
    /// the field, e.g. `ranks[3].tensors[12].pieces[0].ranges[1]: …`.
    package func validate(file: String, complete: Bool) throws {
        do {
            try ManifestValidation(manifest: self).run(complete: complete)
        } catch let problem as ManifestValidation.Problem {
            throw ManifestError.invalid(file: file, message: "\(problem.field): \(problem.what)")
        }
    }
}

/// The checks of ``Manifest/validate(file:complete:)``; the first problem found is thrown.
struct ManifestValidation {
    struct Problem: Error {
        var field: String
        var what: String
    }

    let manifest: Manifest

    func run(complete: Bool) throws {
        guard manifest.schema == Manifest.schemaName else {
            throw Problem(field: "schema", what: "is '\(manifest.schema)', expected '\(Manifest.schemaName)'")
        }
        let world = try checkParallel()
        let sources = try checkSource()
        let (rankFiles, rankBytes) = try checkRanks(world: world, complete: complete, sources: sources)
        try checkCopied(rankFiles: rankFiles, rankBytes: rankBytes)
    }

    /// The planner's own rules (``ShardPlanner/problems(in:facts:)``); returns DP × TP.
    func checkParallel() throws -> Int {
        let p = manifest.parallel
        if let problem = ShardPlanner.problems(in: p, facts: manifest.source.model).first {
            throw Problem(field: "parallel", what: "not a configuration fineshard writes: \(problem)")
        }
        return p.worldSize
    }

    /// Source files and tensors; returns the source tensors by name.
    func checkSource() throws -> [String: TensorSpec] {
        var names = Set<String>()
        for (i, f) in manifest.source.files.enumerated() {
            let field = "source.files[\(i)]"
            if let problem = RelativePath.canonicalProblem(f.name) { throw Problem(field: field + ".name", what: "'\(f.name)' \(problem)") }
            guard names.insert(f.name).inserted else { throw Problem(field: field + ".name", what: "'\(f.name)' is listed twice") }
            try checkRecord(f, field: field, hashRequired: false)
        }
        var sources: [String: TensorSpec] = [:]
        var total = 0
        for (i, t) in manifest.source.tensors.enumerated() {
            let field = "source.tensors[\(i)]"
            guard sources.updateValue(t, forKey: t.name) == nil else {
                throw Problem(field: field + ".name", what: "source tensor '\(t.name)' is listed twice")
            }
            total = try add(total, try byteCount(t.dtype, t.shape, field: field + ".shape"), field: field, what: "the source tensors")
        }
        return sources
    }

    /// Every rank: its number, files and tensors. Returns the names of all rank files and their total size.
    func checkRanks(world: Int, complete: Bool, sources: [String: TensorSpec]) throws -> (Set<String>, Int) {
        let p = manifest.parallel
        var seen = Set<Int>()
        var fileNames = Set<String>()
        var totals = (files: 0, tensors: 0)
        for (i, r) in manifest.ranks.enumerated() {
            let field = "ranks[\(i)]"
            guard (0..<world).contains(r.rank) else {
                throw Problem(field: field + ".rank", what: "\(r.rank) is not a rank of DP \(p.dp) × TP \(p.tp) (0-\(world - 1))")
            }
            guard seen.insert(r.rank).inserted else { throw Problem(field: field + ".rank", what: "rank \(r.rank) is listed twice") }
            guard r.dpRank == r.rank / p.tp, r.tpRank == r.rank % p.tp else {
                throw Problem(
                    field: field,
                    what:
                        "dp_rank \(r.dpRank) and tp_rank \(r.tpRank) contradict rank \(r.rank) (at TP \(p.tp): \(r.rank / p.tp) and \(r.rank % p.tp))"
                )
            }
            var bytesInFile: [String: Int] = [:]
            for (k, f) in r.files.enumerated() {
                let fileField = "\(field).files[\(k)]"
                if let problem = RelativePath.plainNameProblem(f.name) {
                    throw Problem(field: fileField + ".name", what: "'\(f.name)' is not a plain file name in OUT: it \(problem)")
                }
                let expected = p.fileName(rank: r.rank, part: k)
                guard f.name == expected else {
                    throw Problem(field: fileField + ".name", what: "'\(f.name)' is not the file --file-pattern names (\(expected))")
                }
                guard fileNames.insert(f.name).inserted else {
                    throw Problem(field: fileField + ".name", what: "'\(f.name)' is listed twice")
                }
                try checkRecord(f, field: fileField, hashRequired: true)
                totals.files = try add(totals.files, f.bytes, field: fileField + ".bytes", what: "the files")
                bytesInFile[f.name] = 0
            }
            var tensorNames = Set<String>()
            for (j, t) in r.tensors.enumerated() {
                let tensorField = "\(field).tensors[\(j)]"
                guard tensorNames.insert(t.name).inserted else {
                    throw Problem(field: tensorField + ".name", what: "rank \(r.rank) lists tensor '\(t.name)' twice")
                }
                guard let sum = bytesInFile[t.file] else {
                    throw Problem(field: tensorField + ".file", what: "'\(t.file)' is not one of rank \(r.rank)'s files")
                }
                let bytes = try byteCount(t.dtype, t.shape, field: tensorField + ".shape")
                totals.tensors = try add(totals.tensors, bytes, field: tensorField + ".shape", what: "the ranks' tensors")
                bytesInFile[t.file] = try add(sum, bytes, field: tensorField + ".shape", what: "the tensors of \(t.file)")
                try checkPieces(t, field: tensorField, sources: sources)
            }
            // A safetensors file holds its tensors' bytes uncompressed after an 8-byte length.
            if p.format == .safetensors {
                for (k, f) in r.files.enumerated() where bytesInFile[f.name]! > f.bytes - 8 {
                    throw Problem(
                        field: "\(field).files[\(k)].bytes",
                        what: "\(f.bytes) bytes cannot hold the \(bytesInFile[f.name]!) bytes of the tensors the manifest puts in \(f.name)"
                    )
                }
            }
        }
        if complete, seen.count != world {
            let missing = (0..<world).filter { !seen.contains($0) }
            throw Problem(
                field: "ranks",
                what: "ranks \(RankList.describe(missing)) of DP \(p.dp) × TP \(p.tp) are missing (a full manifest lists every rank)")
        }
        return (fileNames, totals.files)
    }

    /// Each piece inside its source tensor and inside its tensor, no two overlapping.
    func checkPieces(_ t: PlannedTensor, field: String, sources: [String: TensorSpec]) throws {
        var boxes: [(index: Int, box: Region)] = []
        for (k, piece) in t.pieces.enumerated() {
            let pieceField = "\(field).pieces[\(k)]"
            if piece.fill == nil {
                guard let source = sources[piece.source] else {
                    throw Problem(field: pieceField + ".source", what: "no source tensor '\(piece.source)' in source.tensors")
                }
                if let transform = piece.transform {
                    try checkTransform(transform, piece: piece, tensor: t, source: source, field: pieceField, sources: sources)
                } else if source.dtype != t.dtype {
                    throw Problem(
                        field: pieceField + ".source",
                        what: "source tensor '\(source.name)' is \(source.dtype.rawValue), tensor '\(t.name)' is \(t.dtype.rawValue)")
                }
                guard piece.region.ranges.count == source.shape.count else {
                    throw Problem(
                        field: pieceField + ".ranges",
                        what:
                            "has \(piece.region.ranges.count) dimensions, source tensor '\(source.name)' \(source.shape) has \(source.shape.count)"
                    )
                }
                for (d, range) in piece.region.ranges.enumerated() where range.upperBound > source.shape[d] {
                    throw Problem(
                        field: "\(pieceField).ranges[\(d)]",
                        what: "[\(range.lowerBound), \(range.upperBound)] is outside source tensor '\(source.name)' \(source.shape)")
                }
            }
            guard piece.at.count == t.shape.count else {
                throw Problem(
                    field: pieceField + ".at",
                    what: "has \(piece.at.count) entries, tensor '\(t.name)' \(t.shape) has \(t.shape.count) dimensions")
            }
            // The region's extents, with extent 1 in leading dimensions it lacks (a stacked expert).
            let extents = [Int](repeating: 1, count: t.shape.count - piece.region.ranges.count) + piece.region.shape
            for d in t.shape.indices {
                let (end, overflow) = piece.at[d].addingReportingOverflow(extents[d])
                guard piece.at[d] >= 0, !overflow, end <= t.shape[d] else {
                    throw Problem(
                        field: "\(pieceField).at[\(d)]",
                        what:
                            "a piece of extent \(extents[d]) at \(piece.at[d]) does not fit in dimension \(d) of tensor '\(t.name)' \(t.shape)"
                    )
                }
            }
            if piece.box.elementCount > 0 { boxes.append((k, piece.box)) }
        }
        // Sorted by the first dimension, a box can only overlap those that start before it ends there.
        boxes.sort { ($0.box.ranges.first?.lowerBound ?? 0) < ($1.box.ranges.first?.lowerBound ?? 0) }
        for a in boxes.indices {
            for b in boxes.indices.dropFirst(a + 1) {
                if let first = boxes[a].box.ranges.first, boxes[b].box.ranges[0].lowerBound >= first.upperBound { break }
                if zip(boxes[a].box.ranges, boxes[b].box.ranges).allSatisfy({ $0.overlaps($1) }) {
                    let (i, j) = (min(boxes[a].index, boxes[b].index), max(boxes[a].index, boxes[b].index))
                    throw Problem(field: "\(field).pieces[\(j)]", what: "overlaps pieces[\(i)] in tensor '\(t.name)'")
                }
            }
        }
    }

    /// A transformed piece (`shard --dtype bf16`) reads a source tensor of the transform's dtype into a
    /// BF16 tensor; a block dequantization's scale tensor must hold a scale for every block of the region.
    func checkTransform(
        _ transform: PieceTransform, piece: Piece, tensor t: PlannedTensor, source: TensorSpec, field: String, sources: [String: TensorSpec]
    ) throws {
        guard source.dtype == transform.sourceDType, t.dtype == PieceTransform.outputDType else {
            throw Problem(
                field: field + ".transform",
                what:
                    "reads \(transform.sourceDType.rawValue) into \(PieceTransform.outputDType.rawValue), but source tensor '\(source.name)' is \(source.dtype.rawValue) and tensor '\(t.name)' is \(t.dtype.rawValue)"
            )
        }
        guard case .fp8BlockDequant(_, let scaleName, let scaleDType, let block) = transform else { return }
        guard source.shape.count == 2, let scale = sources[scaleName] else {
            throw Problem(
                field: field + ".transform.scale",
                what:
                    "needs a 2-D source tensor and a scale tensor '\(scaleName)' in source.tensors (source tensor '\(source.name)' is \(source.shape))"
            )
        }
        let blocks = zip(source.shape, block).map { ($0 + $1 - 1) / $1 }
        guard scale.dtype == scaleDType, scale.shape == blocks else {
            throw Problem(
                field: field + ".transform.scale",
                what:
                    "scale tensor '\(scaleName)' is \(scale.dtype.rawValue) \(scale.shape); blocks of \(block) over '\(source.name)' \(source.shape) need \(scaleDType.rawValue) \(blocks)"
            )
        }
    }

    /// Copied non-weight files: relative paths in OUT that are no other file's name.
    func checkCopied(rankFiles: Set<String>, rankBytes: Int) throws {
        var names = rankFiles
        var total = rankBytes
        for (i, f) in manifest.copied.enumerated() {
            let field = "copied[\(i)]"
            if let problem = RelativePath.canonicalProblem(f.name) {
                throw Problem(field: field + ".name", what: "'\(f.name)' is not a file inside OUT: it \(problem)")
            }
            if OutputFolder.isManifestName(f.name) || OutputFolder.isJournal(f.name) || OutputFolder.isTemporary(f.name) {
                throw Problem(field: field + ".name", what: "'\(f.name)' is a name fineshard keeps for itself in OUT")
            }
            guard names.insert(f.name).inserted else { throw Problem(field: field + ".name", what: "'\(f.name)' is listed twice") }
            try checkRecord(f, field: field, hashRequired: true)
            total = try add(total, f.bytes, field: field + ".bytes", what: "the files")
        }
    }

    /// A file's size and hash: a size ≥ 0, and 64 lowercase hex digits (required for files fineshard wrote).
    func checkRecord(_ f: Manifest.FileRecord, field: String, hashRequired: Bool) throws {
        guard f.bytes >= 0 else { throw Problem(field: field + ".bytes", what: "\(f.bytes) is negative") }
        guard let hash = f.sha256 else {
            if hashRequired { throw Problem(field: field + ".sha256", what: "is missing: every file fineshard writes is hashed") }
            return
        }
        guard Self.isSHA256(hash) else { throw Problem(field: field + ".sha256", what: "'\(hash)' is not 64 lowercase hex digits") }
        for (name, tensorHash) in f.tensorSHA256 ?? [:] where !Self.isSHA256(tensorHash) {
            throw Problem(field: "\(field).tensor_sha256['\(name)']", what: "'\(tensorHash)' is not 64 lowercase hex digits")
        }
    }

    static func isSHA256(_ text: String) -> Bool {
        text.utf8.count == 64
            && text.utf8.allSatisfy {
                (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0)
            }
    }

    /// A tensor's byte count, refused when a dimension is negative or the product of its non-zero
    /// dimensions and the element size does not fit in 63 bits (so that every partial product does).
    func byteCount(_ dtype: DType, _ shape: [Int], field: String) throws -> Int {
        var product = dtype.size
        for (d, n) in shape.enumerated() {
            guard n >= 0 else { throw Problem(field: "\(field)[\(d)]", what: "\(n) is negative") }
            let (next, overflow) = product.multipliedReportingOverflow(by: max(n, 1))
            guard !overflow else { throw Problem(field: field, what: "\(shape) of \(dtype.rawValue) is more than 2^63 bytes") }
            product = next
        }
        return shape.contains(0) ? 0 : product
    }

    func add(_ a: Int, _ b: Int, field: String, what: String) throws -> Int {
        let (sum, overflow) = a.addingReportingOverflow(b)
        guard !overflow else { throw Problem(field: field, what: "\(what) add up to more than 2^63 bytes") }
        return sum
    }
}

extension Manifest.FileRecord {
    /// Why this file in `folder` cannot be the one recorded, before it is hashed (a symbolic link, missing,
    /// another size), or nil.
    package func presenceProblem(in folder: OutputFolder) -> String? {
        guard let path = try? folder.inside(name) else { return "is a symbolic link (fineshard reads only files inside OUT)" }
        guard let file = try? OpenFile.forReading(path), let size = try? file.size() else { return "is missing" }
        guard size == bytes else { return "has \(size) bytes, the manifest says \(bytes)\(size < bytes ? " (truncated)" : "")" }
        return nil
    }
}
