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

        enum CodingKeys: String, CodingKey {
            case rank, tokens, positions, passed, problem
            case dpRank = "dp_rank"
            case tpRank = "tp_rank"
            case denseTop5 = "dense_top5"
            case shardedTop5 = "sharded_top5"
            case maxAbsError = "max_abs_error"
            case maxRelError = "max_rel_error"
            case top1Agreement = "top1_agreement"
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
    public var ok: Bool
    public var seconds: Double
    /// Peak resident set size of the process (`getrusage` `ru_maxrss`).
    public var peakRSSBytes: Int

    enum CodingKeys: String, CodingKey {
        case folder, architecture, output, layout, format, dp, tp, finegrained, tolerance, ranks, dense, ok, seconds
        case peakRSSBytes = "peak_rss_bytes"
    }

    /// The failing ranks' problems.
    public var failures: [String] { ranks.compactMap(\.problem) }
}
