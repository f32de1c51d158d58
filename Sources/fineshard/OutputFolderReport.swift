import FineShard
import Foundation

/// What `fineshard inspect OUT` reports about an output folder of `shard` (or a partial fan-out):
/// its ranks, parallel configuration, files, bytes per rank and the source it came from. Encoded
/// as-is for `--json` (snake_case keys, docs/JSON.md).
struct OutputFolderReport: Encodable {
    struct File: Encodable {
        var name: String
        var bytes: Int
    }

    struct Rank: Encodable {
        var rank: Int
        var dpRank: Int
        var tpRank: Int
        var files: [File]
        var bytes: Int
        var tensorCount: Int

        enum CodingKeys: String, CodingKey {
            case rank, files, bytes
            case dpRank = "dp_rank"
            case tpRank = "tp_rank"
            case tensorCount = "tensor_count"
        }
    }

    struct Source: Encodable {
        var format: CheckpointFormat
        var architecture: String
        var files: [File]
        var bytes: Int
        var tensorCount: Int

        enum CodingKeys: String, CodingKey {
            case format, architecture, files, bytes
            case tensorCount = "tensor_count"
        }
    }

    let kind = "fineshard_output"
    var folder: String
    var manifests: [String]
    var toolVersion: String
    var planFingerprint: String
    var parallel: ParallelConfig
    var worldSize: Int
    var ranksMissing: [Int]
    var ranks: [Rank]
    var copied: [File]
    var totalBytes: Int
    var source: Source

    enum CodingKeys: String, CodingKey {
        case kind, folder, manifests, parallel, ranks, copied, source
        case toolVersion = "tool_version"
        case planFingerprint = "plan_fingerprint"
        case worldSize = "world_size"
        case ranksMissing = "ranks_missing"
        case totalBytes = "total_bytes"
    }

    init(folder: String) throws {
        let (manifest, missing) = try Manifest.combine(try Manifest.load(folder: folder), requireAllRanks: false)
        self.folder = folder
        manifests = OutputFolder(folder).manifestNames()
        if manifests.contains(OutputFolder.manifestName) { manifests = [OutputFolder.manifestName] }
        toolVersion = manifest.tool.version
        planFingerprint = manifest.planFingerprint
        parallel = manifest.parallel
        worldSize = manifest.parallel.worldSize
        ranksMissing = missing
        ranks = manifest.ranks.map { r in
            Rank(
                rank: r.rank, dpRank: r.dpRank, tpRank: r.tpRank, files: r.files.map { File(name: $0.name, bytes: $0.bytes) },
                bytes: r.files.reduce(0) { $0 + $1.bytes }, tensorCount: r.tensors.count)
        }
        copied = manifest.copied.map { File(name: $0.name, bytes: $0.bytes) }
        totalBytes = ranks.reduce(0) { $0 + $1.bytes } + copied.reduce(0) { $0 + $1.bytes }
        source = Source(
            format: manifest.source.format, architecture: manifest.source.model.architecture,
            files: manifest.source.files.map { File(name: $0.name, bytes: $0.bytes) },
            bytes: manifest.source.files.reduce(0) { $0 + $1.bytes }, tensorCount: manifest.source.tensors.count)
    }

    /// The text view.
    var text: String {
        let p = parallel
        var fine: [String] = []
        for (name, size) in [
            ("embedding", p.finegrained.embedding), ("lm_head", p.finegrained.lmHead), ("o_proj", p.finegrained.oProj),
            ("mlp", p.finegrained.mlp),
        ]
        where size > 0 {
            fine.append("\(name) \(size)")
        }
        var lines = [
            "\(folder): fineshard output folder (\(manifests.joined(separator: ", ")); fineshard \(toolVersion))",
            "parallel: dp \(p.dp), tp \(p.tp)\(p.expertParallel ? ", expert parallel" : "")"
                + (fine.isEmpty ? "" : ", fine-grained TP: " + fine.joined(separator: ", "))
                + "; layout \(p.layout.rawValue), format \(p.format.rawValue)",
            "ranks: \(ranks.count) of \(worldSize)"
                + (ranksMissing.isEmpty ? "" : " (missing \(RankList.describe(ranksMissing)): a partial fan-out)"),
            "source: \(source.architecture), \(source.format.rawValue), \(source.tensorCount) tensors, \(source.files.count) file(s), \(TextReport.bytes(source.bytes))",
            "total: \(TextReport.bytes(totalBytes)) in \(ranks.reduce(0) { $0 + $1.files.count } + copied.count) files",
            "",
            "rank  dp  tp  tensors  bytes       files",
        ]
        for r in ranks {
            lines.append(
                "\(pad(r.rank, 4))  \(pad(r.dpRank, 2))  \(pad(r.tpRank, 2))  \(pad(r.tensorCount, 7))  "
                    + TextReport.bytes(r.bytes).padding(toLength: 10, withPad: " ", startingAt: 0) + "  "
                    + r.files.map(\.name).joined(separator: ", "))
        }
        if !copied.isEmpty { lines.append("copied: " + copied.map(\.name).joined(separator: ", ")) }
        return lines.joined(separator: "\n")
    }

    private func pad(_ n: Int, _ width: Int) -> String {
        let s = String(n)
        return String(repeating: " ", count: max(0, width - s.count)) + s
    }
}
