import Dispatch
import FineShardFormats
import FineShardOutput
import FineShardPlanning
import FineShardSystem
import Foundation
import Synchronization

/// Writes a dense Hugging Face checkpoint back from shards (the inverse of `shard`): each source
/// tensor is assembled from one copy of every region the manifest's pieces give it, so vocab
/// padding is dropped, fused `vllm` tensors are split back into Hugging Face names, and a tied
/// lm_head (not a source tensor) is not written, nor the `weight_scale_inv` of weights `--dtype bf16` dequantized.
public struct Merger: Sendable {
    public var folder: String
    public var output: String
    public var maxFileSize: Int
    public var blockBytes: Int

    public init(folder: String, output: String, maxFileSize: Int = 5 << 30, blockBytes: Int = 64 << 20) {
        self.folder = folder
        self.output = output
        self.maxFileSize = maxFileSize
        self.blockBytes = blockBytes
    }

    /// The dense tensors as plans over the shards: a piece per distinct source region, reading
    /// the shard tensor's box at `at` into the source position.
    /// A source tensor may feed several output families (a tied lm_head is cut from the embedding
    /// with its own group size); one family is enough, preferably the one that keeps its name.
    static func densePlan(_ manifest: Manifest) -> [PlannedTensor] {
        var family: [String: String] = [:]
        for r in manifest.ranks {
            for t in r.tensors {
                // Fill pieces (constants such as vLLM's attention scales) come from no source tensor.
                for p in t.pieces where p.fill == nil && (family[p.source] == nil || (t.name == p.source && family[p.source] != p.source)) {
                    family[p.source] = t.name
                }
            }
        }
        var pieces: [String: [Region: Piece]] = [:]
        // A dequantized or cast tensor comes back in the dtype its shards hold (`shard --dtype bf16`).
        var dtypes: [String: DType] = [:]
        for r in manifest.ranks {
            for t in r.tensors {
                for p in t.pieces where p.fill == nil && family[p.source] == t.name && pieces[p.source]?[p.region] == nil {
                    if p.transform != nil { dtypes[p.source] = t.dtype }
                    let box = p.box
                    pieces[p.source, default: [:]][p.region] = Piece(
                        source: ShardSet.TensorKey(file: t.file, name: t.name).pieceSource, region: box,
                        at: p.region.ranges.map(\.lowerBound))
                }
            }
        }
        let scales = manifest.dequantizationScales
        return manifest.source.tensors.filter { !scales.contains($0.name) }.map { spec in
            let mine = (pieces[spec.name] ?? [:]).values.sorted { $0.at.lexicographicallyPrecedes($1.at) }
            return PlannedTensor(name: spec.name, file: "", dtype: dtypes[spec.name] ?? spec.dtype, shape: spec.shape, pieces: mine)
        }
    }

    /// Writes `model.safetensors` (or `model-0000i-of-0000n.safetensors` parts with
    /// `model.safetensors.index.json`) and the copied non-weight files into `output`. Every file the
    /// manifest names is checked (size, SHA-256, tensor headers) before anything is written; the
    /// output is written under temporary names and renamed into place only when all of it is done.
    public func merge() throws -> [WrittenFile] {
        let parts = try Manifest.load(folder: folder)
        let (manifest, missing) = try Manifest.combine(parts, requireAllRanks: false)
        guard missing.isEmpty else {
            throw ManifestError.cannotCombine(.ranksMissing(missing, forMerge: true))
        }
        var tensors = Self.densePlan(manifest)
        if let uncovered = tensors.first(where: { t in t.pieces.reduce(0) { $0 + $1.region.elementCount } != t.shape.reduce(1, *) }) {
            throw ManifestError.cannotCombine(.tensorNotCovered(tensor: uncovered.name))
        }
        let shards = ShardSet(folder: folder)
        try Self.checkShards(manifest, shards: shards)
        let copied = try manifest.copied.map { try Self.readCopied($0, from: OutputFolder(folder)) }
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        // Parts in name order, as Hugging Face's save_pretrained shards.
        var groups: [[Int]] = []
        for (i, part) in PartPacking.parts(of: tensors.map(\.byteCount), maxBytes: maxFileSize).enumerated() {
            if part == groups.count { groups.append([]) }
            groups[part].append(i)
        }
        let names =
            groups.count == 1
            ? ["model.safetensors"]
            : groups.indices.map {
                String(format: "model-%05d-of-%05d.safetensors", $0 + 1, groups.count)
            }
        for (g, members) in groups.enumerated() { for i in members { tensors[i].file = names[g] } }
        var assembler = TensorAssembler(reader: shards, blockBytes: blockBytes)
        var written: [WrittenFile] = []
        // Finished files wait under their temporary names until everything is written.
        var staged: [(temporary: String, final: String)] = []
        func stage(_ final: String) -> String {
            let temporary = temporaryPath(for: final)
            TemporaryFiles.shared.register(temporary)
            staged.append((temporary, final))
            return temporary
        }
        do {
            for (g, members) in groups.enumerated() {
                let path = (output as NSString).appendingPathComponent(names[g])
                let writer = try SafetensorsWriter(path: stage(path), tensors: members.map { tensors[$0].spec }, metadata: ["format": "pt"])
                let byName = Dictionary(uniqueKeysWithValues: members.map { (tensors[$0].name, tensors[$0]) })
                do {
                    for spec in writer.order { try assembler.assemble(byName[spec.name]!) { try writer.append($0) } }
                    var file = try writer.finish()
                    file.path = path
                    written.append(file)
                } catch {
                    writer.abort()
                    throw error
                }
            }
            if groups.count > 1 {
                var map: [String: String] = [:]
                for t in tensors { map[t.name] = t.file }
                let index: [String: Any] = ["metadata": ["total_size": tensors.reduce(0) { $0 + $1.byteCount }], "weight_map": map]
                let data = try JSONSerialization.data(withJSONObject: index, options: [.sortedKeys, .prettyPrinted])
                try writeAtomically(Array(data), to: stage((output as NSString).appendingPathComponent(Checkpoint.indexFileName)))
            }
            for (record, bytes) in zip(manifest.copied, copied) {
                let target = (output as NSString).appendingPathComponent(record.name)
                try FileManager.default.createDirectory(
                    atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                try writeAtomically(bytes, to: stage(target))
            }
            for (temporary, final) in staged {
                try moveIntoPlace(temporary, final)
                TemporaryFiles.shared.unregister(temporary)
            }
        } catch {
            for (temporary, _) in staged {
                removeFile(temporary)
                TemporaryFiles.shared.unregister(temporary)
            }
            throw error
        }
        return written
    }

    /// Every rank file against its size and SHA-256 and its tensors against their hashes and the
    /// manifest's dtypes and shapes (files in parallel, each read once): a difference stops the merge
    /// (exit 1) before anything is written.
    static func checkShards(_ manifest: Manifest, shards: ShardSet) throws {
        let files = manifest.ranks.flatMap { r in r.files.map { f in (f, r.tensors.filter { $0.file == f.name }) } }
        let next = Atomic<Int>(0)
        let found = Mutex<[Int: any Error]>([:])
        DispatchQueue.concurrentPerform(iterations: max(1, min(ProcessInfo.processInfo.activeProcessorCount, files.count))) { _ in
            while true {
                let i = next.add(1, ordering: .relaxed).oldValue
                guard i < files.count else { return }
                do { try shards.check(file: files[i].0, tensors: files[i].1) } catch { found.withLock { $0[i] = error } }
            }
        }
        if let (_, error) = found.withLock({ $0.min { $0.key < $1.key } }) { throw error }
    }

    /// A copied non-weight file's bytes, checked against its record (exit 1 when they differ).
    static func readCopied(_ record: Manifest.FileRecord, from folder: OutputFolder) throws -> [UInt8] {
        let file: OpenFile
        do {
            file = try OpenFile.forReading(try folder.inside(record.name))
        } catch {
            throw ManifestError.shardDiffers(file: folder.path(record.name), tensor: nil, message: "copied file cannot be read: \(error)")
        }
        let bytes = try file.read(count: try file.size(), at: 0)
        let digest = sha256(of: bytes)
        guard bytes.count == record.bytes, record.sha256 == nil || digest == record.sha256 else {
            throw ManifestError.shardDiffers(
                file: folder.path(record.name), tensor: nil,
                message:
                    "copied file has \(bytes.count) bytes and SHA-256 \(digest), the manifest says \(record.bytes) and \(record.sha256 ?? "none")"
            )
        }
        return bytes
    }
}
