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

    public static let folder = ".fineshard"

    static func path(_ output: String, rank: Int) -> String {
        (output as NSString).appendingPathComponent("\(folder)/rank-\(rank).json")
    }

    func write(_ output: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try FileManager.default.createDirectory(
            atPath: (output as NSString).appendingPathComponent(Self.folder), withIntermediateDirectories: true)
        try writeAtomically(Array(try encoder.encode(self)), to: Self.path(output, rank: rank.rank))
    }

    /// Every journal entry in `output`.
    static func all(_ output: String) -> [JournalEntry] {
        let folder = (output as NSString).appendingPathComponent(Self.folder)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        return names.filter { $0.hasPrefix("rank-") && $0.hasSuffix(".json") }.sorted().compactMap {
            FileManager.default.contents(atPath: (folder as NSString).appendingPathComponent($0))
                .flatMap { try? JSONDecoder().decode(JournalEntry.self, from: $0) }
        }
    }
}

/// Names what differs between the configuration an output folder was made with and this one.
func describeDifferences(
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
    check("--max-file-size", old.maxFileSize, new.maxFileSize)
    let a = oldSources.map { "\($0.name) (\($0.bytes) bytes)" }
    let b = newSources.map { "\($0.name) (\($0.bytes) bytes)" }
    if a != b { out.append("source files were \(a.joined(separator: ", ")), now \(b.joined(separator: ", "))") }
    if out.isEmpty { out.append("the source tensors or the model facts differ") }
    return out
}
