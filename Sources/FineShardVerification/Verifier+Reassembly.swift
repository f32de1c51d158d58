import FineShardExecution
import FineShardFormats
import FineShardOutput
import FineShardPlanning
import Foundation

extension Verifier {
    struct Holder {
        var rank: Int
        var tensor: PlannedTensor
        var piece: Piece
    }

    /// Rebuilds every source tensor from the shards using only the manifest's pieces and compares
    /// bytes; checks coverage and zero padding. Files already found broken are skipped.
    func reassemble(_ manifest: Manifest, source: Checkpoint, skipping broken: Set<String>) -> ([VerifyReport.Difference], Int) {
        let shards = ShardSet(folder: folder)
        var differences: [VerifyReport.Difference] = []
        var holders: [String: [Holder]] = [:]
        var usable: [(Int, PlannedTensor)] = []
        // Coverage is a property of the manifest alone: every piece counts, readable or not.
        var planned: [String: [Holder]] = [:]
        for r in manifest.ranks {
            for t in r.tensors {
                for p in t.pieces where p.fill == nil { planned[p.source, default: []].append(Holder(rank: r.rank, tensor: t, piece: p)) }
            }
        }
        for r in manifest.ranks {
            for t in r.tensors where !broken.contains(t.file) {
                do {
                    let stored = try shards.tensor(file: t.file, name: t.name)
                    guard stored.dtype == t.dtype, stored.shape == t.shape else {
                        differences.append(
                            .init(
                                kind: .tensorMismatch,
                                message:
                                    "rank \(r.rank) \(t.file): tensor '\(t.name)' is \(stored.dtype.rawValue) \(stored.shape), the manifest says \(t.dtype.rawValue) \(t.shape)",
                                rank: r.rank, file: t.file, tensor: t.name))
                        continue
                    }
                } catch {
                    differences.append(
                        .init(
                            kind: .unreadableShard, message: "rank \(r.rank) \(t.file): cannot read tensor '\(t.name)': \(error)",
                            rank: r.rank, file: t.file, tensor: t.name))
                    continue
                }
                usable.append((r.rank, t))
                for p in t.pieces where p.fill == nil { holders[p.source, default: []].append(Holder(rank: r.rank, tensor: t, piece: p)) }
            }
        }
        var count = 0
        let scales = manifest.dequantizationScales
        for spec in manifest.source.tensors {
            guard let info = try? source.tensor(spec.name), info.dtype == spec.dtype, info.shape == spec.shape else {
                differences.append(
                    .init(
                        kind: .sourceFile,
                        message:
                            "source tensor '\(spec.name)' (\(spec.dtype.rawValue) \(spec.shape)) is not in the source checkpoint as recorded",
                        tensor: spec.name))
                continue
            }
            let pieces = holders[spec.name] ?? []
            // Each output tensor family cuts the source on its own (a tied lm_head is cut from the
            // embedding table with the lm_head group), so each must tile it.
            let families = Dictionary(grouping: planned[spec.name] ?? [], by: \.tensor.name)
            if families.isEmpty, !scales.contains(spec.name), let problem = coverageProblem(spec, []) {
                differences.append(.init(kind: .coverage, message: problem, tensor: spec.name))
            }
            for (output, family) in families.sorted(by: { $0.key < $1.key }) {
                if let problem = coverageProblem(spec, family.map(\.piece.region)) {
                    differences.append(.init(kind: .coverage, message: problem + " (as '\(output)')", tensor: spec.name))
                }
            }
            for h in pieces {
                if let d = compare(h, source: info, sourceCheckpoint: source, shards: shards) {
                    differences.append(d)
                    break
                }
            }
            count += 1
        }
        for (rank, t) in usable {
            if let d = checkPadding(rank: rank, tensor: t, shards: shards) { differences.append(d) }
            if let d = checkFills(rank: rank, tensor: t, shards: shards) { differences.append(d) }
        }
        return (differences, count)
    }

    /// Distinct piece regions (replicas collapse) must tile the tensor: pairwise disjoint and
    /// together as large as the tensor.
    func coverageProblem(_ spec: TensorSpec, _ regions: [Region]) -> String? {
        let distinct = Array(Set(regions)).sorted { $0.ranges.map(\.lowerBound).lexicographicallyPrecedes($1.ranges.map(\.lowerBound)) }
        let total = spec.shape.reduce(1, *)
        if distinct.isEmpty { return total == 0 ? nil : "source tensor '\(spec.name)' \(spec.shape) is in no shard" }
        for (i, a) in distinct.enumerated() {
            for b in distinct[(i + 1)...] where zip(a.ranges, b.ranges).allSatisfy({ $0.overlaps($1) }) {
                return "source tensor '\(spec.name)': shards hold overlapping but different regions \(describe(a)) and \(describe(b))"
            }
        }
        let covered = distinct.reduce(0) { $0 + $1.elementCount }
        if covered != total {
            return "source tensor '\(spec.name)' \(spec.shape): the shards cover \(covered) of its \(total) elements"
        }
        return nil
    }

    func describe(_ r: Region) -> String { "[" + r.ranges.map { "\($0.lowerBound):\($0.upperBound)" }.joined(separator: ", ") + "]" }

    /// Compares one piece's bytes in its shard with the source, in blocks of source rows.
    func compare(_ h: Holder, source info: TensorInfo, sourceCheckpoint: Checkpoint, shards: ShardSet) -> VerifyReport.Difference? {
        let size = h.piece.transform == nil ? info.dtype.size : h.tensor.dtype.size
        let transformer = PieceTransformer()
        let region = h.piece.region
        guard region.elementCount > 0 else { return nil }
        let rowElements = region.ranges.dropFirst().reduce(1) { $0 * $1.count }
        let rowsPerBlock = max(1, blockBytes / max(rowElements * size, 1))
        let rows = region.ranges.first?.count ?? 1
        var expected = [UInt8]()
        var actual = [UInt8]()
        var r0 = 0
        while r0 < max(rows, 1) {
            let r1 = region.ranges.isEmpty ? 1 : min(rows, r0 + rowsPerBlock)
            var sub = region
            var target = h.piece.box
            if !region.ranges.isEmpty {
                // The source's dimension 0 is the box's first dimension past the unit ones of a stacked output.
                let d = target.ranges.count - region.ranges.count
                sub.ranges[0] = region.ranges[0].lowerBound + r0..<region.ranges[0].lowerBound + r1
                target.ranges[d] = target.ranges[d].lowerBound + r0..<target.ranges[d].lowerBound + r1
            }
            let bytes = sub.elementCount * size
            if expected.count < bytes {
                expected = [UInt8](repeating: 0, count: bytes)
                actual = [UInt8](repeating: 0, count: bytes)
            }
            do {
                try expected.withUnsafeMutableBytes {
                    let into = UnsafeMutableRawBufferPointer(rebasing: $0[0..<bytes])
                    // A transformed piece holds the cast recomputed from the source bytes (docs/SPEC.md §5).
                    if let transform = h.piece.transform {
                        try transformer.read(transform, source: info.name, region: sub, reader: sourceCheckpoint, into: into)
                    } else {
                        try sourceCheckpoint.read(info, region: sub, into: into)
                    }
                }
                try actual.withUnsafeMutableBytes {
                    try shards.read(
                        ShardSet.TensorKey(file: h.tensor.file, name: h.tensor.name), region: target,
                        into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<bytes]))
                }
            } catch {
                return .init(
                    kind: .unreadableShard, message: "rank \(h.rank) \(h.tensor.file): cannot read '\(h.tensor.name)': \(error)",
                    rank: h.rank, file: h.tensor.file, tensor: h.tensor.name)
            }
            let same = expected.withUnsafeBytes { e in actual.withUnsafeBytes { a in memcmp(e.baseAddress!, a.baseAddress!, bytes) == 0 } }
            if !same, let k = (0..<bytes).first(where: { expected[$0] != actual[$0] }) {
                let element = k / size
                let sourceIndex = coordinates(element, in: sub)
                let outputIndex = coordinates(element, in: target)
                let linear = zip(outputIndex, strides(h.tensor.shape)).reduce(0) { $0 + $1.0 * $1.1 }
                let stored = try? shards.tensor(file: h.tensor.file, name: h.tensor.name)
                let offset = stored?.offset.map { $0 + linear * size + k % size }
                return .init(
                    kind: .tensorBytes,
                    message:
                        "source tensor '\(info.name)' differs in rank \(h.rank) \(h.tensor.file), tensor '\(h.tensor.name)': first difference at source index \(sourceIndex), shard index \(outputIndex)"
                        + (offset.map { ", file offset \($0)" } ?? ""),
                    rank: h.rank, file: h.tensor.file, tensor: h.tensor.name, offset: offset)
            }
            r0 = r1
        }
        return nil
    }

    /// A fill piece's box must hold its constant (the attention scales of `--layout vllm`).
    func checkFills(rank: Int, tensor t: PlannedTensor, shards: ShardSet) -> VerifyReport.Difference? {
        for p in t.pieces where p.fill != nil {
            let box = p.box
            guard let element = p.fillElement(t.dtype), box.elementCount > 0 else {
                return .init(
                    kind: .tensorMismatch,
                    message: "rank \(rank) \(t.file): tensor '\(t.name)' has a fill piece of dtype \(t.dtype.rawValue)",
                    rank: rank, file: t.file, tensor: t.name)
            }
            var block = [UInt8](repeating: 0, count: box.elementCount * element.count)
            do {
                try block.withUnsafeMutableBytes { try shards.read(ShardSet.TensorKey(file: t.file, name: t.name), region: box, into: $0) }
            } catch {
                return .init(
                    kind: .unreadableShard, message: "rank \(rank) \(t.file): cannot read '\(t.name)': \(error)", rank: rank, file: t.file,
                    tensor: t.name)
            }
            if let k = block.indices.first(where: { block[$0] != element[$0 % element.count] }) {
                return .init(
                    kind: .tensorBytes,
                    message:
                        "rank \(rank) \(t.file): tensor '\(t.name)' should hold the constant \(p.fill!) (no source data) but differs at \(coordinates(k / element.count, in: box))",
                    rank: rank, file: t.file, tensor: t.name)
            }
        }
        return nil
    }

    /// Output elements no piece covers (vocab padding) must be zero.
    func checkPadding(rank: Int, tensor t: PlannedTensor, shards: ShardSet) -> VerifyReport.Difference? {
        let covered = t.pieces.reduce(0) { $0 + $1.region.elementCount }
        let total = t.shape.reduce(1, *)
        guard covered < total, !t.shape.isEmpty else { return nil }
        let size = t.dtype.size
        let rowElements = t.shape.dropFirst().reduce(1, *)
        let rowsPerBlock = max(1, blockBytes / max(rowElements * size, 1))
        let boxes = t.pieces.map(\.box.ranges)
        // Rows inside a piece that spans whole rows hold source data only: skip them.
        let fullRows = boxes.filter { box in zip(box.dropFirst(), t.shape.dropFirst()).allSatisfy { $0 == 0..<$1 } }.map { $0[0] }
        var r0 = 0
        while r0 < t.shape[0] {
            if let covering = fullRows.first(where: { $0.contains(r0) }) {
                r0 = covering.upperBound
                continue
            }
            let nextCovered = fullRows.map(\.lowerBound).filter { $0 > r0 }.min() ?? t.shape[0]
            let r1 = min(nextCovered, r0 + rowsPerBlock)
            var region = Region(whole: t.shape)
            region.ranges[0] = r0..<r1
            var block = [UInt8](repeating: 0, count: region.elementCount * size)
            do {
                try block.withUnsafeMutableBytes {
                    try shards.read(ShardSet.TensorKey(file: t.file, name: t.name), region: region, into: $0)
                }
            } catch {
                return .init(
                    kind: .unreadableShard, message: "rank \(rank) \(t.file): cannot read '\(t.name)': \(error)", rank: rank, file: t.file,
                    tensor: t.name)
            }
            for e in 0..<region.elementCount {
                let index = coordinates(e, in: region)
                if boxes.contains(where: { box in zip(index, box).allSatisfy { $1.contains($0) } }) { continue }
                if block[e * size..<(e + 1) * size].contains(where: { $0 != 0 }) {
                    return .init(
                        kind: .padding,
                        message:
                            "rank \(rank) \(t.file): tensor '\(t.name)' has a non-zero padding element at \(index), where no source data belongs",
                        rank: rank, file: t.file, tensor: t.name)
                }
            }
            r0 = r1
        }
        return nil
    }

    func coordinates(_ element: Int, in region: Region) -> [Int] {
        var rest = element
        var index = [Int](repeating: 0, count: region.ranges.count)
        for d in stride(from: region.ranges.count - 1, through: 0, by: -1) {
            let n = region.ranges[d].count
            index[d] = region.ranges[d].lowerBound + rest % n
            rest /= n
        }
        return index
    }

    func strides(_ shape: [Int]) -> [Int] {
        var s = [Int](repeating: 1, count: shape.count)
        for d in stride(from: shape.count - 2, through: 0, by: -1) { s[d] = s[d + 1] * shape[d + 1] }
        return s
    }
}
