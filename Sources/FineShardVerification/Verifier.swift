import Dispatch
import FineShardExecution
import FineShardFormats
import FineShardOutput
import FineShardSystem
import Foundation
import Synchronization

/// Proves an output folder against its manifest(s) and, optionally, the source (docs/SPEC.md §5, issue 5):
/// file sizes and SHA-256, missing and extra files, missing ranks; with the source, the source
/// files' record, byte-exact reassembly of every source tensor from the shards, coverage, and zero
/// padding. Memory stays bounded: everything is streamed in blocks.
public struct Verifier: Sendable {
    public var folder: String
    public var threads: Int
    public var blockBytes: Int

    public init(folder: String, threads: Int = 1, blockBytes: Int = 4 << 20) {
        self.folder = folder
        self.threads = max(1, threads)
        self.blockBytes = max(blockBytes, 4096)
    }

    func path(_ name: String) -> String { OutputFolder(folder).path(name) }

    /// Runs every check. Bad input (no manifest, a source that is not a checkpoint) throws; a
    /// difference is reported, never thrown.
    public func verify(source: Checkpoint? = nil, progress: @escaping @Sendable (Int, Int) -> Void = { _, _ in }) throws -> VerifyReport {
        let start = Date()
        let parts = try Manifest.load(folder: folder)
        let manifestNames =
            FileManager.default.fileExists(atPath: path(OutputFolder.manifestName))
            ? [OutputFolder.manifestName]
            : parts.map { OutputFolder.partialManifestName(first: $0.ranks.first?.rank ?? 0, last: $0.ranks.last?.rank ?? 0) }
        let (manifest, missingRanks) = try Manifest.combine(parts, requireAllRanks: false)
        var differences =
            missingRanks.isEmpty
            ? []
            : [
                VerifyReport.Difference(
                    kind: .missingRank,
                    message: "ranks \(RankList.describe(missingRanks)) are in no manifest (their shard tasks did not finish)")
            ]
        let coverage = source.map { checkCoverage(manifest, source: $0) }
        let (fileDifferences, contentDifferences, hashed, checked) = checkFiles(
            manifest, source: source.map { ($0, coverage!.bad) }, progress: progress)
        differences += fileDifferences
        differences += extraFiles(manifest)
        if let source {
            differences += checkSourceFiles(manifest, source)
            differences += coverage!.differences
            differences += contentDifferences
        }
        let reassembled = coverage?.count ?? 0
        return VerifyReport(
            folder: folder, manifests: manifestNames, ranks: manifest.ranks.count, filesChecked: checked, bytesHashed: hashed,
            tensorsReassembled: reassembled, sourceChecked: source != nil, differences: differences,
            seconds: Date().timeIntervalSince(start))
    }

    // MARK: - Files

    /// Every file the manifest names, against its size and SHA-256, hashed in parallel. With a
    /// source, each rank file's tensors are compared with it in the same pass
    /// (``hashAndCompare``); the content differences of a file that is missing, truncated or
    /// altered are not reported (its file difference is). Returns the file differences, the
    /// content differences, the bytes hashed and the number of files.
    func checkFiles(
        _ manifest: Manifest, source: (Checkpoint, bad: Set<String>)?, progress: @escaping @Sendable (Int, Int) -> Void
    ) -> ([VerifyReport.Difference], [VerifyReport.Difference], Int, Int) {
        let files: [(Manifest.FileRecord, Int?)] =
            manifest.ranks.flatMap { r in r.files.map { ($0, Optional(r.rank)) } } + manifest.copied.map { ($0, nil) }
        let tensors = Dictionary(grouping: manifest.ranks.flatMap(\.tensors), by: \.file)
        let shards = ShardSet(folder: folder)
        let total = files.reduce(0) { $0 + $1.0.bytes }
        let next = Atomic<Int>(0)
        let done = Atomic<Int>(0)
        let found = Mutex<[Int: VerifyReport.Difference]>([:])
        let content = Mutex<[Int: [Finding]]>([:])
        DispatchQueue.concurrentPerform(iterations: min(threads, max(files.count, 1))) { _ in
            while true {
                let i = next.add(1, ordering: .relaxed).oldValue
                guard i < files.count else { return }
                let (record, rank) = files[i]
                let where_ = rank.map { "rank \($0) file" } ?? "copied file"
                func report(_ kind: VerifyReport.Difference.Kind, _ message: String) {
                    found.withLock { $0[i] = VerifyReport.Difference(kind: kind, message: message, rank: rank, file: record.name) }
                }
                guard let inside = try? OutputFolder(folder).inside(record.name) else {
                    report(.alteredFile, "\(where_) \(record.name) is a symbolic link (fineshard reads only files inside OUT)")
                    continue
                }
                guard let file = try? OpenFile.forReading(inside), let size = try? file.size() else {
                    report(.missingFile, "\(where_) \(record.name) is missing")
                    continue
                }
                guard size == record.bytes else {
                    report(
                        .truncatedFile,
                        "\(where_) \(record.name) has \(size) bytes, the manifest says \(record.bytes)\(size < record.bytes ? " (truncated)" : "")"
                    )
                    continue
                }
                var digest: String?
                var findings: [Finding] = []
                if let (checkpoint, bad) = source, let rank {
                    (digest, findings) = hashAndCompare(
                        file, size: size, name: record.name, rank: rank, tensors: tensors[record.name] ?? [], source: checkpoint,
                        shards: shards, bad: bad)
                } else {
                    digest = try? sha256(of: file)
                }
                progress(done.add(size, ordering: .relaxed).newValue, total)
                if let expected = record.sha256, digest != expected {
                    // An HDF5 file's zstd frame checksums can say where it was altered.
                    let damage = HDF5Reader.firstDamagedChunk(path: path(record.name), name: record.name).map { "; \($0)" } ?? ""
                    report(
                        .alteredFile,
                        "\(where_) \(record.name) has SHA-256 \(digest ?? "unreadable"), the manifest says \(expected) (altered)\(damage)")
                } else {
                    content.withLock { $0[i] = findings }
                }
            }
        }
        let differences = found.withLock { f in f.keys.sorted().map { f[$0]! } }
        let findings = content.withLock { c in c.keys.sorted().flatMap { c[$0]! } }
        return (differences, firstPerSourceTensor(findings), total, files.count)
    }

    /// Files in the folder that no manifest names, other than the manifests themselves and
    /// fineshard's own temporary and journal files.
    func extraFiles(_ manifest: Manifest) -> [VerifyReport.Difference] {
        let named = Set(manifest.ranks.flatMap { $0.files.map(\.name) } + manifest.copied.map(\.name))
        guard let walker = FileManager.default.enumerator(atPath: folder) else { return [] }
        var extra: [String] = []
        while let item = walker.nextObject() as? String {
            if OutputFolder.isJournal(item) { continue }
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path(item), isDirectory: &isDirectory), !isDirectory.boolValue else { continue }
            if named.contains(item) || OutputFolder.isManifestName(item) || OutputFolder.isTemporary(item) { continue }
            extra.append(item)
        }
        return extra.sorted().map {
            VerifyReport.Difference(kind: .extraFile, message: "\($0) is in the folder but in no manifest (extra)", file: $0)
        }
    }

    func checkSourceFiles(_ manifest: Manifest, _ source: Checkpoint) -> [VerifyReport.Difference] {
        var out: [VerifyReport.Difference] = []
        let actual = Dictionary(uniqueKeysWithValues: source.files.map { ($0.name, $0) })
        for record in manifest.source.files {
            guard let file = actual[record.name] else {
                out.append(
                    .init(
                        kind: .sourceFile, message: "source file \(record.name) of the manifest is not in the source checkpoint",
                        file: record.name))
                continue
            }
            if file.bytes != record.bytes {
                out.append(
                    .init(
                        kind: .sourceFile, message: "source file \(record.name) has \(file.bytes) bytes, the manifest says \(record.bytes)",
                        file: record.name))
            } else if let expected = record.sha256, let digest = try? sha256(of: try OpenFile.forReading(source.path(of: record.name))),
                digest != expected
            {
                out.append(
                    .init(
                        kind: .sourceFile, message: "source file \(record.name) has SHA-256 \(digest), the manifest says \(expected)",
                        file: record.name))
            }
        }
        return out
    }
}
