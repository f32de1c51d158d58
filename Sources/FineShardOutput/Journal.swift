import FineShardPlanning
import FineShardSystem
import Foundation

/// The record of one finished rank, written atomically to `OUT/.fineshard/rank-<r>.json` as soon
/// as all its files are renamed into place: what `--resume` trusts, and what a partial or full
/// manifest is assembled from. The folder holds fineshard's own files only.
public struct JournalEntry: Codable, Sendable, Equatable {
    public var planFingerprint: String
    public var parallel: ParallelConfig
    public var sourceFiles: [Manifest.FileRecord]
    public var rank: Manifest.Rank

    enum CodingKeys: String, CodingKey {
        case parallel, rank
        case planFingerprint = "plan_fingerprint"
        case sourceFiles = "source_files"
    }

    package static func path(_ output: String, rank: Int) -> String { OutputFolder(output).journalEntryPath(rank: rank) }

    package func write(_ output: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try FileManager.default.createDirectory(
            atPath: OutputFolder(output).path(OutputFolder.journalFolder), withIntermediateDirectories: true)
        try writeAtomically(Array(try encoder.encode(self)), to: Self.path(output, rank: rank.rank))
    }

    /// Every journal entry in `output`.
    package static func all(_ output: String) -> [JournalEntry] {
        let out = OutputFolder(output)
        return out.journalEntryNames().compactMap {
            FileManager.default.contents(atPath: out.path($0))
                .flatMap { try? JSONDecoder().decode(JournalEntry.self, from: $0) }
        }
    }

    package init(planFingerprint: String, parallel: ParallelConfig, sourceFiles: [Manifest.FileRecord], rank: Manifest.Rank) {
        self.planFingerprint = planFingerprint
        self.parallel = parallel
        self.sourceFiles = sourceFiles
        self.rank = rank
    }
}

/// Names what differs between the configuration an output folder was made with and this one.
package func describeDifferences(
    old: ParallelConfig, oldSources: [Manifest.FileRecord], new: ParallelConfig, newSources: [Manifest.FileRecord]
) -> [String] {
    var out: [String] = []
    func check<T: Equatable>(_ name: String, _ a: T, _ b: T) { if a != b { out.append("\(name) was \(a), now \(b)") } }
    check("--dp", old.dp, new.dp)
    check("--tp", old.tp, new.tp)
    check("--enable-expert-parallel", old.expertParallel, new.expertParallel)
    for c in Component.allCases { check("fine-grained \(c.rawValue) size", old.finegrained[c], new.finegrained[c]) }
    check("--vocab-padding", old.vocabPadding, new.vocabPadding)
    check("--layout", old.layout.rawValue, new.layout.rawValue)
    check("--format", old.format.rawValue, new.format.rawValue)
    check("--file-pattern", old.filePattern, new.filePattern)
    check("--dtype", old.dtype?.rawValue ?? "(source dtypes)", new.dtype?.rawValue ?? "(source dtypes)")
    check("--cast-floats", old.castFloats ?? false, new.castFloats ?? false)
    check("--max-file-size", old.maxFileSize, new.maxFileSize)
    let a = oldSources.map { "\($0.name) (\($0.bytes) bytes)" }
    let b = newSources.map { "\($0.name) (\($0.bytes) bytes)" }
    if a != b { out.append("source files were \(a.joined(separator: ", ")), now \(b.joined(separator: ", "))") }
    if out.isEmpty { out.append("the source tensors or the model facts differ") }
    return out
}
