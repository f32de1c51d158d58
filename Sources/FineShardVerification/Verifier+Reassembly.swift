import Crypto
import FineShardExecution
import FineShardFormats
import FineShardOutput
import FineShardPlanning
import FineShardSystem
import Foundation

extension Verifier {
    struct Holder {
        var rank: Int
        var tensor: PlannedTensor
        var piece: Piece
    }

    /// The manifest-only part of `--source`: every source tensor must be in the source as recorded,
    /// and each output tensor family's pieces must tile it. Returns the differences and the number
    /// of source tensors the byte comparison (``hashAndCompare``) covers; `bad` are the source
    /// tensors it must skip.
    func checkCoverage(_ manifest: Manifest, source: Checkpoint) -> (differences: [VerifyReport.Difference], count: Int, bad: Set<String>) {
        var differences: [VerifyReport.Difference] = []
        var planned: [String: [Holder]] = [:]
        for r in manifest.ranks {
            for t in r.tensors {
                for p in t.pieces where p.fill == nil { planned[p.source, default: []].append(Holder(rank: r.rank, tensor: t, piece: p)) }
            }
        }
        var count = 0
        var bad = Set(planned.keys)
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
            bad.remove(spec.name)
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
            count += 1
        }
        return (differences, count, bad)
    }

    /// Keeps the first byte difference of each source tensor (in rank order): the comparison
    /// "stops" at the first, as docs/SPEC.md says, though every file is read once anyway.
    func firstPerSourceTensor(_ differences: [Finding]) -> [VerifyReport.Difference] {
        var seen = Set<String>()
        return differences.filter { f in f.source.map { seen.insert($0).inserted } ?? true }.map(\.difference)
    }

    /// A difference and, for one in a source tensor's bytes, that tensor's name.
    struct Finding {
        var source: String?
        var difference: VerifyReport.Difference
    }

    /// One pass over a rank's shard file: hashes every byte in file order while comparing each of
    /// the file's tensors with what the manifest's pieces make of the source (the same assembly
    /// `shard` does, so padding must be zero and fill pieces hold their constant). Returns the
    /// file's SHA-256 (nil when unreadable) and the differences, in the manifest's tensor order.
    /// A file whose tensors are not laid out one after another (HDF5) is hashed on its own and its
    /// tensors read through the shard reader.
    func hashAndCompare(
        _ file: OpenFile, size: Int, name: String, rank: Int, tensors: [PlannedTensor], source: Checkpoint, shards: ShardSet,
        bad: Set<String>
    ) -> (String?, [Finding]) {
        var found: [(Int, Finding)] = []
        var usable: [(index: Int, tensor: PlannedTensor, stored: TensorInfo)] = []
        for (i, t) in tensors.enumerated() {
            do {
                let stored = try shards.tensor(file: name, name: t.name)
                guard stored.dtype == t.dtype, stored.shape == t.shape else {
                    found.append(
                        (
                            i,
                            Finding(
                                difference: .init(
                                    kind: .tensorMismatch,
                                    message:
                                        "rank \(rank) \(t.file): tensor '\(t.name)' is \(stored.dtype.rawValue) \(stored.shape), the manifest says \(t.dtype.rawValue) \(t.shape)",
                                    rank: rank, file: t.file, tensor: t.name))
                        ))
                    continue
                }
                if !t.pieces.contains(where: { $0.fill == nil && bad.contains($0.source) }) { usable.append((i, t, stored)) }
            } catch {
                found.append(
                    (
                        i,
                        Finding(
                            difference: .init(
                                kind: .unreadableShard, message: "rank \(rank) \(t.file): cannot read tensor '\(t.name)': \(error)",
                                rank: rank, file: t.file, tensor: t.name))
                    ))
            }
        }
        // Streams when the tensors lie one after another in the file (safetensors).
        usable.sort { ($0.stored.offset ?? 0, $0.index) < ($1.stored.offset ?? 0, $1.index) }
        var streaming = usable.allSatisfy { $0.stored.offset != nil }
        var end = 0
        for u in usable where streaming {
            streaming = u.stored.offset! >= end
            end = u.stored.offset! + u.tensor.byteCount
        }
        streaming = streaming && end <= size
        var hasher = SHA256()
        var position = 0
        var actual = [UInt8]()
        /// Hashes the file's bytes up to `offset` that no tensor comparison read (header, gaps).
        func hash(upTo offset: Int) throws {
            while position < offset {
                let n = min(offset - position, blockBytes)
                if actual.count < n { actual = [UInt8](repeating: 0, count: n) }
                try actual.withUnsafeMutableBytes { b in
                    let slice = UnsafeMutableRawBufferPointer(rebasing: b[0..<n])
                    try file.read(into: slice, at: position)
                    hasher.update(bufferPointer: UnsafeRawBufferPointer(slice))
                }
                position += n
            }
        }
        var assembler = TensorAssembler(reader: source, blockBytes: blockBytes)
        for (index, t, stored) in usable {
            let rowBytes = t.shape.dropFirst().reduce(1, *) * t.dtype.size
            var done = 0
            var reported = Set<Int>()
            do {
                try assembler.assemble(t) { expected in
                    let n = expected.count
                    if streaming { try hash(upTo: stored.offset! + done) }
                    if actual.count < n { actual = [UInt8](repeating: 0, count: n) }
                    try actual.withUnsafeMutableBytes { b in
                        let slice = UnsafeMutableRawBufferPointer(rebasing: b[0..<n])
                        if streaming {
                            try file.read(into: slice, at: position)
                            hasher.update(bufferPointer: UnsafeRawBufferPointer(slice))
                            position += n
                        } else {
                            var rows = Region(whole: t.shape)
                            if !t.shape.isEmpty { rows.ranges[0] = done / rowBytes..<(done + n) / rowBytes }
                            try shards.read(ShardSet.TensorKey(file: name, name: t.name), region: rows, into: slice)
                        }
                    }
                    let same = actual.withUnsafeBytes { memcmp(expected.baseAddress!, $0.baseAddress!, n) == 0 }
                    if !same {
                        let firstRow = t.shape.isEmpty ? 0 : done / rowBytes
                        for d in locate(
                            t, rank: rank, stored: stored, firstRow: firstRow, expected: expected, actual: actual, reported: &reported)
                        {
                            found.append((index, d))
                        }
                    }
                    done += n
                }
            } catch {
                found.append(
                    (
                        index,
                        Finding(
                            difference: .init(
                                kind: .unreadableShard, message: "rank \(rank) \(t.file): cannot read '\(t.name)': \(error)", rank: rank,
                                file: t.file, tensor: t.name))
                    ))
            }
        }
        let digest: String?
        if streaming {
            digest = (try? hash(upTo: size)).map { hasher.finalize().hexString }
        } else {
            digest = try? sha256(of: file)
        }
        return (digest, found.enumerated().sorted { ($0.element.0, $0.offset) < ($1.element.0, $1.offset) }.map(\.element.1))
    }

    /// Where a block of `t` (output rows from `firstRow`) differs from what it should hold: the first
    /// difference of each piece not yet `reported` (source data or a fill constant), and the first
    /// non-zero padding element.
    func locate(
        _ t: PlannedTensor, rank: Int, stored: TensorInfo, firstRow: Int, expected: UnsafeRawBufferPointer, actual: [UInt8],
        reported: inout Set<Int>
    ) -> [Finding] {
        let size = t.dtype.size
        let rows = t.shape.isEmpty ? 1 : expected.count / max(t.shape.dropFirst().reduce(1, *) * size, 1)
        let blockShape = t.shape.isEmpty ? [] : [rows] + t.shape.dropFirst()
        var out: [Finding] = []
        func report(_ kind: VerifyReport.Difference.Kind, _ message: String, source: String? = nil, offset: Int? = nil) {
            out.append(
                Finding(
                    source: source,
                    difference: .init(kind: kind, message: message, rank: rank, file: t.file, tensor: t.name, offset: offset)))
        }
        /// Output coordinates of the block's element `e`.
        func index(_ e: Int) -> [Int] {
            var i = coordinates(e, in: Region(whole: blockShape))
            if !i.isEmpty { i[0] += firstRow }
            return i
        }
        let boxes = t.pieces.map(\.box)
        for (k, (p, box)) in zip(t.pieces, boxes).enumerated() where !reported.contains(k) {
            var target = box
            if !box.ranges.isEmpty {
                let lo = max(firstRow, box.ranges[0].lowerBound)
                let hi = min(firstRow + rows, box.ranges[0].upperBound)
                guard lo < hi else { continue }
                target.ranges[0] = lo - firstRow..<hi - firstRow
            }
            let (runLength, _) = target.runs(in: blockShape, elementSize: size)
            var first: Int?
            actual.withUnsafeBytes { a in
                target.forEachRun(in: blockShape, elementSize: size) { offset in
                    guard first == nil, memcmp(expected.baseAddress! + offset, a.baseAddress! + offset, runLength) != 0 else { return }
                    first = offset + (0..<runLength).first { expected[offset + $0] != a[offset + $0] }!
                }
            }
            guard let byte = first else { continue }
            reported.insert(k)
            let outputIndex = index(byte / size)
            if let fill = p.fill {
                report(
                    .tensorBytes,
                    "rank \(rank) \(t.file): tensor '\(t.name)' should hold the constant \(fill) (no source data) but differs at \(outputIndex)"
                )
                continue
            }
            let inBox = zip(zip(outputIndex, box.ranges.map(\.lowerBound)), strides(box.shape)).reduce(0) { $0 + ($1.0.0 - $1.0.1) * $1.1 }
            let linear = zip(outputIndex, strides(t.shape)).reduce(0) { $0 + $1.0 * $1.1 }
            let offset = stored.offset.map { $0 + linear * size + byte % size }
            report(
                .tensorBytes,
                "source tensor '\(p.source)' differs in rank \(rank) \(t.file), tensor '\(t.name)': first difference at source index \(coordinates(inBox, in: p.region)), shard index \(outputIndex)"
                    + (offset.map { ", file offset \($0)" } ?? ""), source: p.source, offset: offset)
        }
        // Elements no piece covers (vocab padding) are zero in `expected`.
        let padding = -1
        guard !reported.contains(padding), t.pieces.reduce(0, { $0 + $1.box.elementCount }) < t.shape.reduce(1, *) else { return out }
        for e in 0..<expected.count / size where (0..<size).contains(where: { expected[e * size + $0] != actual[e * size + $0] }) {
            let i = index(e)
            if boxes.contains(where: { box in zip(i, box.ranges).allSatisfy { $1.contains($0) } }) { continue }
            reported.insert(padding)
            report(
                .padding, "rank \(rank) \(t.file): tensor '\(t.name)' has a non-zero padding element at \(i), where no source data belongs")
            break
        }
        return out
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
