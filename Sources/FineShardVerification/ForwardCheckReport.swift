import FineShardPlanning

/// The result of `forward-check`: for every rank, the tokens it ran, how far its sharded output is
/// from the dense one, and the top-5 entries at the last position of both, so an independent program
/// can check the numbers.
public struct ForwardCheckReport: Codable, Sendable {
    /// One entry of a top-5 list: a token id (logits) or a hidden dimension (encoders) and its value.
    public struct Top: Codable, Sendable, Equatable {
        public var id: Int
        public var value: Float
    }

    public struct RankResult: Codable, Sendable {
        public var rank: Int
        public var dpRank: Int
        public var tpRank: Int
        public var tokens: [Int]
        /// Top-5 of the last position, dense and sharded.
        public var denseTop5: [Top]
        public var shardedTop5: [Top]
        /// Largest |sharded − dense| over every position and column.
        public var maxAbsError: Float
        /// ``maxAbsError`` divided by the largest |dense| value of the rank's output.
        public var maxRelError: Float
        /// Positions whose argmax agrees (a disagreement within the tolerance of a near-tie counts as agreement).
        public var top1Agreement: Int
        public var positions: Int
        public var passed: Bool
        /// Why the rank failed, when it did.
        public var problem: String?
        /// MoE models: the routing choices of the rank's tokens, every layer (each with its margin),
        /// how many differ from the dense pass within the tolerance (ties) and beyond it.
        public var routing: [RoutingChoice]?
        public var routingTies: Int?
        public var routingDifferences: Int?
        /// The smallest margin of the rank's routing choices.
        public var minRoutingMargin: Float?

        enum CodingKeys: String, CodingKey {
            case rank, tokens, positions, passed, problem, routing
            case routingTies = "routing_ties"
            case routingDifferences = "routing_differences"
            case minRoutingMargin = "min_routing_margin"
            case dpRank = "dp_rank"
            case tpRank = "tp_rank"
            case denseTop5 = "dense_top5"
            case shardedTop5 = "sharded_top5"
            case maxAbsError = "max_abs_error"
            case maxRelError = "max_rel_error"
            case top1Agreement = "top1_agreement"
        }
    }

    /// One token's routing choice in one MoE layer of the sharded pass.
    public struct RoutingChoice: Codable, Sendable, Equatable {
        public enum Outcome: String, Codable, Sendable {
            /// The dense pass chose the same experts.
            case same
            /// Other experts, with a margin below the tolerance: a near-tie, not a failure (the
            /// sharded pass continues with the dense choice).
            case tie
            /// Other experts with a margin at or above the tolerance: a failure.
            case differs
        }

        public var rank: Int
        public var layer: Int
        public var position: Int
        /// The experts the rank's router chose, best first.
        public var experts: [Int]
        /// The gap between the last chosen and the first dropped expert (or group) in the scores the
        /// selection compares; a float error below it cannot change the choice.
        public var margin: Float
        public var outcome: Outcome
        /// The dense pass's experts, when they differ.
        public var denseExperts: [Int]?

        enum CodingKeys: String, CodingKey {
            case rank, layer, position, experts, margin, outcome
            case denseExperts = "dense_experts"
        }
    }

    /// The first module where the sharded pass departs from the dense one: the rank that computed it,
    /// the tensors it read there, and the relative error of its output.
    public struct Difference: Codable, Sendable, Equatable {
        public var rank: Int
        public var layer: Int
        public var module: String
        public var tensors: [String]
        public var maxRelError: Float
        /// The module's place in a layer (pass order), for sorting.
        public var stage: Int

        enum CodingKeys: String, CodingKey {
            case rank, layer, module, tensors, stage
            case maxRelError = "max_rel_error"
        }

        public var description: String {
            "rank \(rank), layer \(layer) \(module) (\(tensors.map { "'\($0)'" }.joined(separator: ", "))): relative error \(ForwardChecker.scientific(maxRelError))"
        }
    }

    /// The dense output of one DP rank's token batch, every position (with `--include-dense`).
    public struct DenseOutput: Codable, Sendable {
        public var dpRank: Int
        public var tokens: [Int]
        public var shape: [Int]
        /// Row-major values, `shape[0] × shape[1]`.
        public var values: [Float]

        enum CodingKeys: String, CodingKey {
            case tokens, shape, values
            case dpRank = "dp_rank"
        }
    }

    public var folder: String
    public var architecture: String
    /// What the model's forward pass yields and the ranks are compared on.
    public enum Output: String, Codable, Sendable {
        /// Causal language models.
        case logits
        /// Encoders.
        case lastHiddenState = "last_hidden_state"
    }

    public var output: Output
    public var layout: String
    public var format: String
    public var dp: Int
    public var tp: Int
    public var finegrained: FineGrainedConfig
    public var tolerance: Float
    public var ranks: [RankResult]
    public var dense: [DenseOutput]?
    /// MoE models: routing choices in all, near-ties among them, and choices that differ beyond the tolerance.
    public var routingChoices: Int?
    public var routingTies: Int?
    public var routingDifferences: Int?
    /// The earliest modules (layer, then place in the layer) whose sharded output differs from the dense
    /// one, each naming the rank and tensors; empty when none does.
    public var firstDifferences: [Difference]
    public var ok: Bool
    public var seconds: Double
    /// Peak resident set size of the process (`getrusage` `ru_maxrss`).
    public var peakRSSBytes: Int
    /// Shard tensors whose SHA-256 was checked against the manifest before they were used (every one
    /// read, when the manifest records tensor hashes), and their bytes.
    public var shardTensorsHashed = 0
    public var shardBytesHashed = 0

    enum CodingKeys: String, CodingKey {
        case folder, architecture, output, layout, format, dp, tp, finegrained, tolerance, ranks, dense, ok, seconds
        case peakRSSBytes = "peak_rss_bytes"
        case shardTensorsHashed = "shard_tensors_hashed"
        case shardBytesHashed = "shard_bytes_hashed"
        case routingChoices = "routing_choices"
        case routingTies = "routing_ties"
        case routingDifferences = "routing_differences"
        case firstDifferences = "first_differences"
    }

    /// The failing ranks' problems, then the first differing modules.
    public var failures: [String] { ranks.compactMap(\.problem) + firstDifferences.map(\.description) }
}
