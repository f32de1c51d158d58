import FineShardFormats
import FineShardModel
import FineShardPlanning
import FineShardSystem
import Foundation

/// `OUT/manifest.json` (docs/SPEC.md §5): the executed plan plus hashes. From it alone an independent
/// program can rebuild every source tensor from the shards.
public struct Manifest: Codable, Sendable, Equatable {
    public static let schemaName = "fineshard.manifest/1"
    public static let fileName = OutputFolder.manifestName

    public struct Tool: Codable, Sendable, Equatable {
        public var name: String
        public var version: String

        package init(name: String, version: String) {
            self.name = name
            self.version = version
        }
    }

    /// A file and its hash; `sha256` is nil when it was not computed. A rank file also records the
    /// SHA-256 of each tensor's data (row-major, little-endian: the bytes a reader gets, in either
    /// format), so that a reader of some tensors checks exactly what it reads; nil in manifests
    /// written before it existed.
    public struct FileRecord: Codable, Sendable, Equatable, Hashable {
        public var name: String
        public var bytes: Int
        public var sha256: String?
        public var tensorSHA256: [String: String]?

        enum CodingKeys: String, CodingKey {
            case name, bytes, sha256
            case tensorSHA256 = "tensor_sha256"
        }

        package init(name: String, bytes: Int, sha256: String?, tensorSHA256: [String: String]? = nil) {
            self.name = name
            self.bytes = bytes
            self.sha256 = sha256
            self.tensorSHA256 = tensorSHA256
        }
    }

    public struct Source: Codable, Sendable, Equatable {
        public var format: CheckpointFormat
        public var files: [FileRecord]
        public var model: ModelFacts
        /// Every source tensor's name, dtype and shape (what reassembly rebuilds).
        public var tensors: [TensorSpec]

        package init(format: CheckpointFormat, files: [FileRecord], model: ModelFacts, tensors: [TensorSpec]) {
            self.format = format
            self.files = files
            self.model = model
            self.tensors = tensors
        }
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

        package init(rank: Int, dpRank: Int, tpRank: Int, files: [FileRecord], tensors: [PlannedTensor]) {
            self.rank = rank
            self.dpRank = dpRank
            self.tpRank = tpRank
            self.files = files
            self.tensors = tensors
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

    /// Reads and validates a manifest (``validate(file:complete:)``; `manifest.json` must list every
    /// rank); a missing, unreadable, malformed or invalid one is bad input naming the file and field.
    public static func read(_ path: String) throws -> Manifest {
        let file = try OpenFile.forReading(path)
        let bytes = try file.read(count: try file.size(), at: 0)
        let manifest = try decode(bytes, file: path)
        try manifest.validate(file: path, complete: (path as NSString).lastPathComponent == fileName)
        return manifest
    }

    /// Decodes a manifest's JSON (not yet validated); malformed JSON is bad input naming `file`.
    package static func decode(_ bytes: [UInt8], file: String) throws -> Manifest {
        do {
            return try JSONDecoder().decode(Manifest.self, from: Data(bytes))
        } catch let error as DecodingError {
            throw ManifestError.invalid(file: file, message: "\(error)")
        }
    }

    package init(
        schema: String, tool: Tool, planFingerprint: String, source: Source, parallel: ParallelConfig, ranks: [Rank], copied: [FileRecord]
    ) {
        self.schema = schema
        self.tool = tool
        self.planFingerprint = planFingerprint
        self.source = source
        self.parallel = parallel
        self.ranks = ranks
        self.copied = copied
    }
}

/// What can be wrong with manifests and output folders.
public enum ManifestError: FineShardError, Equatable {
    case invalid(file: String, message: String)
    /// An output folder holds work from another source or other options.
    case fingerprintMismatch(file: String, differences: [String])
    /// Output files exist and neither --resume nor --force was given.
    case outputExists(files: [String])
    /// Partial manifests that do not combine (or do not make a whole model for `merge`).
    case cannotCombine(CombineProblem)
    /// Not enough room for the output.
    case noSpace(folder: String, needed: Int, available: Int)
    /// A shard file (or one of its tensors) is not what the manifest records: its hash, size or
    /// header differs. A difference, as `verify` reports it (exit 1).
    case shardDiffers(file: String, tensor: String?, message: String)

    public var exitCode: Int32 {
        switch self {
        case .noSpace: 3
        case .shardDiffers: 1
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
        case .cannotCombine(let problem): "cannot combine partial manifests: \(problem)"
        case .noSpace(let folder, let needed, let available):
            "\(folder): not enough free space: the output needs \(needed) bytes, \(available) are available"
        case .shardDiffers(let file, let tensor, let message):
            "\(file)\(tensor.map { ", tensor '\($0)'" } ?? ""): \(message); the shards are not what the manifest records (run fineshard verify)"
        }
    }
}

/// Why partial manifests do not combine, with the ranks, fingerprints or tensor concerned.
public enum CombineProblem: Sendable, Equatable, CustomStringConvertible {
    case noParts
    /// Two parts come from different plans (their fingerprints).
    case fingerprintsDiffer(String, String)
    case copiedFilesDiffer
    /// Parts with one fingerprint that record different values of `field` (`parallel`, `source.…`).
    case partsDisagree(field: String)
    case rankInSeveralParts(rank: Int)
    /// Ranks no part covers; `merge` needs every rank, `manifest combine` says to run their tasks.
    case ranksMissing([Int], forMerge: Bool)
    /// The pieces of the shards do not add up to a source tensor.
    case tensorNotCovered(tensor: String)

    public var description: String {
        switch self {
        case .noParts: "no partial manifests"
        case .fingerprintsDiffer(let a, let b):
            "plan fingerprints differ (\(a.prefix(12))… vs \(b.prefix(12))…): the parts come from different sources or options"
        case .copiedFilesDiffer: "the parts list different copied non-weight files"
        case .partsDisagree(let field): "the parts share one plan fingerprint but record different \(field)"
        case .rankInSeveralParts(let rank): "rank \(rank) is in more than one partial manifest"
        case .ranksMissing(let ranks, forMerge: true): "ranks \(RankList.describe(ranks)) are missing; merge needs every rank"
        case .ranksMissing(let ranks, forMerge: false):
            "ranks \(RankList.describe(ranks)) are in no partial manifest; run their shard tasks first"
        case .tensorNotCovered(let tensor): "the shards do not cover source tensor '\(tensor)' exactly; run verify --source"
        }
    }
}
