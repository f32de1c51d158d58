import FineShardSystem
import Foundation

/// OUT, the output folder of `fineshard shard`, and every name in it: the one place that knows
/// them, so shard, verify, merge and forward-check agree. The rank files are named by the plan
/// (`ShardPlan.fileName(rank:part:)`, from `--file-pattern`); everything else in OUT is named here.
public struct OutputFolder: Sendable {
    /// The folder's path.
    public let path: String

    public init(_ path: String) { self.path = path }

    /// The manifest of a run that wrote every rank.
    public static let manifestName = "manifest.json"
    /// The folder of fineshard's own bookkeeping (the journal); it holds nothing else.
    public static let journalFolder = ".fineshard"

    /// The partial manifest name of a `--ranks` run covering `first...last`.
    public static func partialManifestName(first: Int, last: Int) -> String { "manifest.ranks-\(first)-\(last).json" }

    /// True for `manifest.json` and for every partial manifest name.
    public static func isManifestName(_ name: String) -> Bool {
        name == manifestName || (name.hasPrefix("manifest.ranks-") && name.hasSuffix(".json"))
    }

    /// The journal entry of `rank`, relative to OUT.
    public static func journalEntryName(rank: Int) -> String { "\(journalFolder)/rank-\(rank).json" }

    /// True for the journal folder and everything in it.
    public static func isJournal(_ name: String) -> Bool { name == journalFolder || name.hasPrefix(journalFolder + "/") }

    /// True for a temporary file a writer leaves until its file is complete.
    public static func isTemporary(_ name: String) -> Bool { name.hasSuffix(TemporaryFiles.suffix) }

    /// The file a temporary name (`<file>.<pid>.fineshard-tmp`) stands for, or nil for other names.
    public static func fileOfTemporary(_ name: String) -> String? {
        guard isTemporary(name) else { return nil }
        let stem = name.dropLast(TemporaryFiles.suffix.count)
        guard let dot = stem.lastIndex(of: ".") else { return nil }
        return String(stem[..<dot])
    }

    /// The path of `name` inside OUT.
    public func path(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    /// The path of a file a manifest names, for reading: the name is a relative path inside OUT
    /// (validated with the manifest) and no component of it may be a symbolic link, so that a
    /// hostile folder cannot make fineshard read elsewhere through one.
    package func inside(_ name: String) throws -> String {
        var partial = path
        for component in name.split(separator: "/") {
            partial = (partial as NSString).appendingPathComponent(String(component))
            if (try? FileManager.default.attributesOfItem(atPath: partial)[.type] as? FileAttributeType) == .typeSymbolicLink {
                throw SystemError.unreadable(
                    file: partial, reason: "is a symbolic link; fineshard reads only files inside the output folder")
            }
        }
        return partial
    }

    /// The path of `rank`'s journal entry.
    public func journalEntryPath(rank: Int) -> String { path(Self.journalEntryName(rank: rank)) }

    /// Every name directly in OUT (none when it cannot be listed).
    public func contents() -> [String] { (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] }

    /// The manifests in OUT, full and partial, sorted by name.
    public func manifestNames() -> [String] { contents().filter(Self.isManifestName).sorted() }

    /// The partial manifests of a `--ranks` fan-out in OUT, sorted by name.
    public func partialManifestNames() -> [String] { manifestNames().filter { $0 != Self.manifestName } }

    /// The journal entry file names (`rank-<r>.json`) in the journal folder, sorted.
    public func journalEntryNames() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path(Self.journalFolder))) ?? []
        return names.filter { $0.hasPrefix("rank-") && $0.hasSuffix(".json") }.sorted().map { "\(Self.journalFolder)/\($0)" }
    }
}
