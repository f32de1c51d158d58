import FineShard
import Foundation

/// `plan --ranks R`: what those ranks hold, tensor by tensor (all ranks of DeepSeek-R1 would be
/// ~230k entries, so only the ranks asked for).
struct RankContents: Encodable {
    struct Tensor: Encodable {
        var name: String
        var dtype: DType
        var shape: [Int]
        var bytes: Int
        var file: String
    }

    var rank: Int
    var dpRank: Int
    var tpRank: Int
    var files: [String]
    var bytes: Int
    var tensors: [Tensor]

    enum CodingKeys: String, CodingKey {
        case rank, files, bytes, tensors
        case dpRank = "dp_rank"
        case tpRank = "tp_rank"
    }

    init(_ r: RankPlan) {
        rank = r.rank
        dpRank = r.dpRank
        tpRank = r.tpRank
        files = r.files
        bytes = r.byteCount
        tensors = r.tensors.map { Tensor(name: $0.name, dtype: $0.dtype, shape: $0.shape, bytes: $0.byteCount, file: $0.file) }
    }

    var text: String {
        let header =
            "rank \(rank) (dp \(dpRank), tp \(tpRank)): \(tensors.count) tensors, \(TextReport.bytes(bytes)) in \(files.joined(separator: ", "))\n"
        let rows = tensors.map { t in
            [t.name, t.dtype.rawValue, "[" + t.shape.map(String.init).joined(separator: ", ") + "]", String(t.bytes), t.file]
        }
        return header + TextReport.table(["name", "dtype", "shape", "bytes", "file"], rows)
    }
}

/// `plan --json`: the report, plus `ranks` when `--ranks` is given; one object.
struct PlanJSON: Encodable {
    var report: PlanReport
    var ranks: [RankContents]?

    enum Extra: String, CodingKey { case ranks }

    func encode(to encoder: any Encoder) throws {
        try report.encode(to: encoder)
        if let ranks {
            var container = encoder.container(keyedBy: Extra.self)
            try container.encode(ranks, forKey: .ranks)
        }
    }
}
