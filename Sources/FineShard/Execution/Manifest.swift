import Foundation

/// `OUT/manifest.json` (SPEC §5): the executed plan plus hashes. From it alone an independent
/// program can rebuild every source tensor from the shards.
public struct Manifest: Codable, Sendable, Equatable {
    public static let schemaName = "fineshard.manifest/1"
    public static let fileName = "manifest.json"

    public struct Tool: Codable, Sendable, Equatable {
        public var name: String
        public var version: String
    }

    /// A file and its hash; `sha256` is nil when it was not computed.
    public struct FileRecord: Codable, Sendable, Equatable, Hashable {
        public var name: String
        public var bytes: Int
        public var sha256: String?
    }

    public struct Source: Codable, Sendable, Equatable {
        public var format: CheckpointFormat
        public var files: [FileRecord]
        public var model: ModelFacts
        /// Every source tensor's name, dtype and shape (what reassembly rebuilds).
        public var tensors: [TensorSpec]
    }

    public struct Rank: Codable, Sendable, Equatable {
        public var rank: Int
        public var dpRank: Int
        public var tpRank: Int
        public var files: [FileRecord]
        public var tensors: [PlannedTensor]

        enum CodingKeys: String, CodingKey {
            case rank, files, tensors
            case dpRank = "dp_rank"
            case tpRank = "tp_rank"
        }
    }

    public var schema: String
    public var tool: Tool
    public var planFingerprint: String
    public var source: Source
    public var parallel: ParallelConfig
    public var ranks: [Rank]
    public var copied: [FileRecord]

    enum CodingKeys: String, CodingKey {
        case schema, tool, source, parallel, ranks, copied
        case planFingerprint = "plan_fingerprint"
    }

    /// The partial manifest name of a `--ranks` run covering `first...last`.
    public static func partialName(first: Int, last: Int) -> String { "manifest.ranks-\(first)-\(last).json" }

    public static func isManifestName(_ name: String) -> Bool {
        name == fileName || (name.hasPrefix("manifest.ranks-") && name.hasSuffix(".json"))
    }

    /// Canonical bytes: sorted keys, so equal manifests are byte-identical.
    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return try encoder.encode(self) + Data("\n".utf8)
    }

    /// Writes the manifest to `path` atomically (temporary name, fsync, rename).
    public func write(to path: String) throws {
        try writeAtomically(Array(try encoded()), to: path, durable: true)
    }

    /// Reads a manifest; a missing, unreadable or malformed one is bad input naming the file.
    public static func read(_ path: String) throws -> Manifest {
        let file = try OpenFile.forReading(path)
        let bytes = try file.read(count: try file.size(), at: 0)
        do {
            let manifest = try JSONDecoder().decode(Manifest.self, from: Data(bytes))
            guard manifest.schema == schemaName else {
                throw ManifestError.invalid(file: path, message: "schema is '\(manifest.schema)', expected '\(schemaName)'")
            }
            return manifest
        } catch let error as DecodingError {
            throw ManifestError.invalid(file: path, message: "\(error)")
        }
    }
}

/// What can be wrong with manifests and output folders.
public enum ManifestError: FineShardError, Equatable {
    case invalid(file: String, message: String)
    /// An output folder holds work from another source or other options.
    case fingerprintMismatch(file: String, differences: [String])
    /// Output files exist and neither --resume nor --force was given.
    case outputExists(files: [String])
    /// Partial manifests that do not combine.
    case cannotCombine(message: String)
    /// Not enough room for the output.
    case noSpace(folder: String, needed: Int, available: Int)

    public var exitCode: Int32 {
        switch self {
        case .noSpace: 3
        default: 2
        }
    }

    public var description: String {
        switch self {
        case .invalid(let file, let message): "\(file): not a valid fineshard manifest: \(message)"
        case .fingerprintMismatch(let file, let differences):
            "\(file) was made from another source or with other options (plan fingerprints differ): " + differences.joined(separator: "; ")
        case .outputExists(let files):
            "the output folder already holds \(files.count) file(s) of the ranks being written (\(files.prefix(3).joined(separator: ", "))\(files.count > 3 ? ", …" : "")); pass --resume to finish an interrupted run or --force to rewrite them"
        case .cannotCombine(let message): "cannot combine partial manifests: \(message)"
        case .noSpace(let folder, let needed, let available):
            "\(folder): not enough free space: the output needs \(needed) bytes, \(available) are available"
        }
    }
}

/// Writes `bytes` to `path` through a temporary name and a rename; `durable` adds an fsync before
/// the rename (the manifest). Journal entries and copied files skip it: the executor syncs the
/// output's filesystem once before it writes the manifest, and `--resume` re-hashes what a
/// journal entry claims.
func writeAtomically(_ bytes: [UInt8], to path: String, durable: Bool = false) throws {
    let temp = temporaryPath(for: path)
    TemporaryFiles.shared.register(temp)
    defer { TemporaryFiles.shared.unregister(temp) }
    do {
        let file = try OpenFile.forWriting(temp)
        try bytes.withUnsafeBytes { try file.write($0, at: 0) }
        if durable { try file.sync() }
    } catch {
        unlink(temp)
        throw error
    }
    guard rename(temp, path) == 0 else {
        let reason = OpenFile.errorText(errno)
        unlink(temp)
        throw CheckpointError.io(file: path, operation: "rename", reason: reason)
    }
}
