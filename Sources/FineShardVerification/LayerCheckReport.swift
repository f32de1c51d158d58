import FineShardFormats
import FineShardModel
import FineShardOutput
import FineShardPlanning
import FineShardSystem
import Foundation

/// The result of `forward-check --layers` (``ForwardChecker/runLayers(_:source:)``): per selected layer,
/// every rank's output against the dense layer's on the same input, the routing of an MoE layer, and
/// what was read to get there.
public struct LayerCheckReport: Codable, Sendable {
    /// Where a layer's input hidden states came from.
    public enum Input: String, Codable, Sendable {
        /// The embedding of the tokens (layer 0).
        case embedding
        /// The dense output of the layer before it (selected too).
        case previousLayer = "previous_layer"
        /// Seeded random rows of RMS 1.
        case random
    }

    public struct RankResult: Codable, Sendable {
        public var rank: Int
        public var dpRank: Int
        public var tpRank: Int
        public var maxAbsError: Float
        public var maxRelError: Float
        public var passed: Bool

        enum CodingKeys: String, CodingKey {
            case rank, passed
            case dpRank = "dp_rank"
            case tpRank = "tp_rank"
            case maxAbsError = "max_abs_error"
            case maxRelError = "max_rel_error"
        }
    }

    /// An MoE layer's routing in the sharded pass, and which experts were read.
    public struct Routing: Codable, Sendable {
        public var choices: Int
        public var ties: Int
        public var differences: Int
        public var minMargin: Float?
        /// Routed experts of the layer.
        public var experts: Int
        /// The experts the dense routing picks for the test tokens.
        public var expertsSelected: [Int]
        public var expertsReadFromSource: [Int]
        public var expertTensorsReadFromSource: Int
        public var expertsReadFromShards: [Int]
        /// (rank, tensor) pairs: an expert is read from the one rank that owns it with EP, from every
        /// rank's slice without.
        public var expertTensorsReadFromShards: Int
        public var detail: [ForwardCheckReport.RoutingChoice]

        enum CodingKeys: String, CodingKey {
            case choices, ties, differences, experts, detail
            case minMargin = "min_margin"
            case expertsSelected = "experts_selected"
            case expertsReadFromSource = "experts_read_from_source"
            case expertTensorsReadFromSource = "expert_tensors_read_from_source"
            case expertsReadFromShards = "experts_read_from_shards"
            case expertTensorsReadFromShards = "expert_tensors_read_from_shards"
        }
    }

    public struct Layer: Codable, Sendable {
        public var layer: Int
        /// "dense" or "moe".
        public var kind: String
        public var input: Input
        /// The largest of the ranks' max relative errors, and the rank it is on.
        public var maxRelError: Float
        public var worstRank: Int
        public var ranks: [RankResult]
        public var routing: Routing?
        public var firstDifferences: [ForwardCheckReport.Difference]
        /// Tensor bytes read, as stored (int8 one byte an element), and (rank, tensor) pairs read.
        public var sourceBytesRead: Int
        public var sourceTensorsRead: Int
        public var shardBytesRead: Int
        public var shardTensorsRead: Int
        public var seconds: Double
        public var passed: Bool

        enum CodingKeys: String, CodingKey {
            case layer, kind, input, ranks, routing, seconds, passed
            case maxRelError = "max_rel_error"
            case worstRank = "worst_rank"
            case firstDifferences = "first_differences"
            case sourceBytesRead = "source_bytes_read"
            case sourceTensorsRead = "source_tensors_read"
            case shardBytesRead = "shard_bytes_read"
            case shardTensorsRead = "shard_tensors_read"
        }
    }

    /// What the hash check covered.
    public struct Hashes: Codable, Sendable {
        public var checked: Bool
        /// Shard files the selected layers' tensors are in, and their size.
        public var filesTouched: Int
        public var touchedFileBytes: Int
        public var shardFileBytes: Int
        public var note: String

        enum CodingKeys: String, CodingKey {
            case checked, note
            case filesTouched = "files_touched"
            case touchedFileBytes = "touched_file_bytes"
            case shardFileBytes = "shard_file_bytes"
        }
    }

    public var folder: String
    public var architecture: String
    public var dp: Int
    public var tp: Int
    public var expertParallel: Bool
    public var finegrained: FineGrainedConfig
    public var tolerance: Float
    /// Every DP rank's token ids.
    public var tokens: [[Int]]
    public var layers: [Layer]
    public var hashes: Hashes
    public var sourceBytesRead: Int
    public var shardBytesRead: Int
    /// Everything the process read (`rchar`: headers, the manifest and the tensors), when known.
    public var processBytesRead: Int?
    public var ok: Bool
    public var seconds: Double
    public var peakRSSBytes: Int

    enum CodingKeys: String, CodingKey {
        case folder, architecture, dp, tp, finegrained, tolerance, tokens, layers, hashes, ok, seconds
        case expertParallel = "expert_parallel"
        case sourceBytesRead = "source_bytes_read"
        case shardBytesRead = "shard_bytes_read"
        case processBytesRead = "process_bytes_read"
        case peakRSSBytes = "peak_rss_bytes"
    }

    public var failures: [String] {
        layers.flatMap { l in
            l.ranks.filter { !$0.passed }.map {
                "layer \(l.layer), rank \($0.rank) (dp \($0.dpRank), tp \($0.tpRank)): max relative error \(ForwardChecker.scientific($0.maxRelError))"
            } + l.firstDifferences.map(\.description)
        }
    }
}
