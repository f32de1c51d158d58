import Crypto
import Dispatch
import FineShardFormats
import FineShardModel
import FineShardOutput
import FineShardPlanning
import FineShardSystem
import Foundation
import Synchronization

/// Carries a ``ShardPlan`` out: writes every planned rank's files, journals each finished rank,
/// copies the non-weight files and writes the manifest last. Decides nothing about the layout.
public final class ShardExecutor: @unchecked Sendable {
    let checkpoint: Checkpoint
    let plan: ShardPlan
    let options: ShardOptions
    let fingerprint: String
    /// Called with the bytes written so far and the total, from worker threads.
    let progress: @Sendable (Int, Int) -> Void

    public init(
        checkpoint: Checkpoint, plan: ShardPlan, options: ShardOptions, progress: @escaping @Sendable (Int, Int) -> Void = { _, _ in }
    ) {
        self.checkpoint = checkpoint
        self.plan = plan
        self.options = options
        self.fingerprint = plan.fingerprint
        self.progress = progress
    }

    var out: String { options.output }
    var folder: OutputFolder { OutputFolder(out) }
    func path(_ name: String) -> String { folder.path(name) }

    var sourceRecords: [Manifest.FileRecord] { checkpoint.files.map { Manifest.FileRecord(name: $0.name, bytes: $0.bytes, sha256: nil) } }

    /// Runs the plan. Throws bad-input errors before anything is written.
    public func run() throws -> ShardSummary {
        let start = Date()
        let readBefore = checkpoint.bytesRead
        let ranks = options.ranks ?? Array(0..<plan.topology.worldSize)
        try prepareOutputFolder()
        let rankPlans = ranks.map { plan.rank($0) }
        let (toWrite, skipped) = try checkExistingWork(rankPlans)
        try checkFreeSpace(toWrite)

        let sourceHashes = SourceHasher(checkpoint: checkpoint, enabled: options.hashSources && options.ranks == nil)
        var records = Dictionary(uniqueKeysWithValues: skipped.map { ($0.rank.rank, $0.rank) })
        for record in try write(toWrite) { records[record.rank] = record }
        let copied = try copyNonWeightFiles()
        let hashes = try sourceHashes.wait()
        // A source rewritten underneath leaves shards that match neither version: no manifest, and
        // no journal entries that --resume would trust.
        do {
            try checkpoint.checkUnchanged()
        } catch {
            for r in toWrite { removeFile(JournalEntry.path(out, rank: r.rank)) }
            throw error
        }

        let manifest = Manifest(
            schema: Manifest.schemaName, tool: .init(name: "fineshard", version: FineShard.version), planFingerprint: fingerprint,
            source: .init(
                format: checkpoint.format,
                files: checkpoint.files.map { Manifest.FileRecord(name: $0.name, bytes: $0.bytes, sha256: hashes[$0.name]) },
                model: plan.model, tensors: plan.sources.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) }),
            parallel: plan.parallel, ranks: ranks.map { records[$0]! }, copied: copied)
        // The shard files reach the disk before a manifest that describes them (one syncfs
        // instead of an fsync per file, which serializes the workers on writeback).
        if options.sync { try OpenFile.syncFilesystem(holding: out) }
        let name =
            options.ranks == nil ? OutputFolder.manifestName : OutputFolder.partialManifestName(first: ranks.first!, last: ranks.last!)
        try manifest.write(to: path(name))

        let seconds = Date().timeIntervalSince(start)
        let written = toWrite.reduce(0) { $0 + $1.byteCount }
        return ShardSummary(
            ranksWritten: toWrite.map(\.rank), ranksSkipped: skipped.map(\.rank.rank),
            files: manifest.ranks.reduce(0) { $0 + $1.files.count }, bytesWritten: written,
            bytesRead: checkpoint.bytesRead - readBefore, seconds: seconds,
            throughputBytesPerSecond: seconds > 0 ? Double(written) / seconds : 0, peakRSSBytes: peakRSS(), manifest: path(name))
    }

    // MARK: - Before writing

    func prepareOutputFolder() throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: out, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw PlanError.badOption(option: "-o", message: "'\(out)' exists and is not a folder") }
        } else {
            do {
                try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            } catch {
                throw PlanError.badOption(
                    option: "-o", message: "cannot create the output folder '\(out)': \((error as NSError).localizedDescription)")
            }
        }
        if let reason = FileSystem.whyNotWritable(out) {
            throw PlanError.badOption(option: "-o", message: "the output folder '\(out)' is not writable (\(reason))")
        }
    }

    /// Refuses an output folder made from another source or with other options, refuses to
    /// overwrite without `--resume` or `--force`, and finds the ranks `--resume` may skip.
    func checkExistingWork(_ ranks: [RankPlan]) throws -> (write: [RankPlan], skip: [JournalEntry]) {
        // Journal entries and manifests are read once; everything below decides from these.
        let journal = JournalEntry.all(out)
        let journaled = Dictionary(journal.map { ($0.rank.rank, $0) }, uniquingKeysWith: { first, _ in first })
        let manifests = manifestNames().map { ($0, try? Manifest.read(path($0))) }
        if options.resume {
            if let other = journal.first(where: { $0.planFingerprint != fingerprint }) {
                throw ManifestError.fingerprintMismatch(
                    file: JournalEntry.path(out, rank: other.rank.rank),
                    differences: describeDifferences(
                        old: other.parallel, oldSources: other.sourceFiles, new: plan.parallel, newSources: sourceRecords))
            }
            for case (let name, let m?) in manifests where m.planFingerprint != fingerprint {
                throw ManifestError.fingerprintMismatch(
                    file: path(name),
                    differences: describeDifferences(
                        old: m.parallel, oldSources: m.source.files, new: plan.parallel, newSources: sourceRecords))
            }
        } else if !options.force {
            let existing =
                ranks.flatMap { r in r.files.filter { FileManager.default.fileExists(atPath: path($0)) } }
                + ranks.filter { journaled[$0.rank] != nil }.map { OutputFolder.journalEntryName(rank: $0.rank) }
            if !existing.isEmpty { throw ManifestError.outputExists(files: existing) }
        }
        // The manifests these ranks appear in are about to be out of date: remove them first, so
        // an interrupted run never leaves a manifest that describes files being rewritten.
        let writing = Set(ranks.map(\.rank))
        for (name, m) in manifests {
            let stale = name == OutputFolder.manifestName || m?.ranks.contains { writing.contains($0.rank) } ?? true
            if stale { removeFile(path(name)) }
        }
        removeStaleTemporaries(of: ranks)
        var write: [RankPlan] = []
        var skip: [JournalEntry] = []
        for r in ranks {
            // An entry is trusted only for what this plan writes (its names and tensors): OUT may come from elsewhere.
            if options.resume, let entry = journaled[r.rank], entry.planFingerprint == fingerprint,
                entry.rank.files.map(\.name) == r.files, entry.rank.tensors == r.tensors, filesMatch(entry.rank.files)
            {
                skip.append(entry)
            } else {
                removeFile(JournalEntry.path(out, rank: r.rank))
                write.append(r)
            }
        }
        return (write, skip)
    }

    /// Removes the temporary files a killed run left for these ranks' files: a rank is written
    /// by one process at a time, so any temporary of its files now is stale.
    func removeStaleTemporaries(of ranks: [RankPlan]) {
        let names = Set(ranks.flatMap(\.files))
        for entry in folder.contents() {
            guard let file = OutputFolder.fileOfTemporary(entry), names.contains(file) else { continue }
            removeFile(path(entry))
        }
    }

    func manifestNames() -> [String] { folder.manifestNames() }

    /// True when every file exists with its recorded size and SHA-256.
    func filesMatch(_ files: [Manifest.FileRecord]) -> Bool {
        files.allSatisfy { record in
            guard let file = try? OpenFile.forReading(path(record.name)), (try? file.size()) == record.bytes else { return false }
            return (try? sha256(of: file)) == record.sha256
        }
    }

    func checkFreeSpace(_ ranks: [RankPlan]) throws {
        let needed = ranks.reduce(0) { $0 + $1.byteCount }
        guard let available = FileSystem.availableBytes(at: out) else { return }
        if needed > available { throw ManifestError.noSpace(folder: out, needed: needed, available: available) }
    }

    // MARK: - Writing

    /// Writes the files of `ranks` with a ``BlockScheduler``. Files that list the same tensors
    /// (name, dtype, shape; every rank's part p in an all-DP run) form a group written in step: a
    /// tensor whose pieces are the same in several files of the group (replicated) is read once and
    /// each block goes to all of them. The output does not depend on the thread count.
    func write(_ ranks: [RankPlan]) throws -> [Manifest.Rank] {
        let jobs = ranks.flatMap { r in
            r.files.map { f in
                BlockScheduler.Job(
                    rank: r.rank, file: f, path: path(f),
                    tensors: Dictionary(uniqueKeysWithValues: r.tensors.filter { $0.file == f }.map { ($0.name, $0) }))
            }
        }
        // At most 64 files of a group are open at once.
        let groups = Dictionary(grouping: jobs.indices) { i in jobs[i].tensors.values.map(\.spec).sorted { $0.name < $1.name } }
            .values.sorted { $0[0] < $1[0] }
            .flatMap { members in stride(from: 0, to: members.count, by: 64).map { Array(members[$0..<min($0 + 64, members.count)]) } }
            .map { $0.map { jobs[$0] } }
        let total = ranks.reduce(0) { $0 + $1.byteCount }
        let state = Mutex<(results: [String: (WrittenFile, [String: String])], remaining: [Int: Int])>(
            ([:], Dictionary(uniqueKeysWithValues: ranks.map { ($0.rank, $0.files.count) })))
        let byRank = Dictionary(uniqueKeysWithValues: ranks.map { ($0.rank, $0) })
        let threads = max(1, options.threads)
        let widest = groups.map(\.count).max() ?? 1
        // Blocks of 1 MiB stay in cache between the read, the hashes and the write.
        let blockBytes = max(1 << 16, min(1 << 20, options.memoryBudget / threads / 16))
        let bufferBytes = min(8 << 20, max(1 << 16, options.memoryBudget / max(threads, widest) / 4))
        let format = plan.parallel.format
        let scheduler = BlockScheduler(
            jobs: groups, reader: checkpoint, blockBytes: blockBytes, maxBlocks: min(16, options.memoryBudget / 8 / blockBytes),
            threads: threads,
            makeWriter: { [options] job in
                let specs = job.tensors.values.map(\.spec)
                return format == .hdf5
                    ? try HDF5Writer(
                        path: job.path, tensors: specs, compressionLevel: options.compressionLevel, workers: threads,
                        batchBytes: bufferBytes)
                    : try SafetensorsWriter(path: job.path, tensors: specs, bufferSize: bufferBytes)
            },
            finished: { [self] members, written in
                for (job, file) in zip(members, written) {
                    let finishedRank: Bool = state.withLock {
                        $0.results[job.file] = file
                        $0.remaining[job.rank]! -= 1
                        return $0.remaining[job.rank] == 0
                    }
                    guard finishedRank else { continue }
                    let r = byRank[job.rank]!
                    let files = state.withLock { s in r.files.map { s.results[$0]! } }
                    try JournalEntry(
                        planFingerprint: fingerprint, parallel: plan.parallel, sourceFiles: sourceRecords, rank: record(r, files)
                    )
                    .write(out)
                }
            },
            progress: { [progress] in progress($0, total) })
        try scheduler.run()
        let results = state.withLock { $0.results }
        return ranks.map { r in record(r, r.files.map { results[$0]! }) }
    }

    func record(_ r: RankPlan, _ files: [(WrittenFile, tensorSHA256: [String: String])]) -> Manifest.Rank {
        Manifest.Rank(
            rank: r.rank, dpRank: r.dpRank, tpRank: r.tpRank,
            files: zip(r.files, files).map { Manifest.FileRecord(name: $0, bytes: $1.0.bytes, sha256: $1.0.sha256, tensorSHA256: $1.1) },
            tensors: r.tensors)
    }

    /// Copies the source folder's non-weight files (config, tokenizer, `1_Pooling/`…) with their
    /// structure, each through a temporary name; identical content makes a repeat idempotent.
    func copyNonWeightFiles() throws -> [Manifest.FileRecord] {
        try checkpoint.nonWeightFiles.map { name in
            let source = try OpenFile.forReading(checkpoint.path(of: name))
            var bytes = try source.read(count: try source.size(), at: 0)
            if name == "config.json", plan.dropsQuantizationConfig,
                let rewritten = try ModelConfig.removingQuantizationConfig(bytes, file: checkpoint.path(of: name))
            {
                bytes = rewritten
            }
            let target = path(name)
            try FileManager.default.createDirectory(
                atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try writeAtomically(bytes, to: target)
            return Manifest.FileRecord(name: name, bytes: bytes.count, sha256: sha256(of: bytes))
        }
    }
}

/// Hashes the source files on a background thread while the ranks are written.
final class SourceHasher: @unchecked Sendable {
    private let group = DispatchGroup()
    private let result = Mutex<([String: String], (any Error)?)>(([:], nil))

    init(checkpoint: Checkpoint, enabled: Bool) {
        guard enabled else { return }
        let files = checkpoint.files.map { ($0.name, checkpoint.path(of: $0.name)) }
        DispatchQueue.global().async(group: group) { [self] in
            do {
                for (name, path) in files {
                    let digest = try sha256(of: try OpenFile.forReading(path))
                    self.result.withLock { $0.0[name] = digest }
                }
            } catch {
                self.result.withLock { $0.1 = error }
            }
        }
    }

    func wait() throws -> [String: String] {
        group.wait()
        let (hashes, error) = result.withLock { $0 }
        if let error { throw error }
        return hashes
    }
}
