import FineShardModel

/// What `fineshard plan` reports: per-rank bytes and the per-component memory table of the
/// seed document, for any model. Encoded as-is for `--json`.
public struct PlanReport: Codable, Sendable {
    /// One row of the memory table: a component's bytes per rank without and with its
    /// fine-grained TP, and the saving (the seed's "Memory Savings" column).
    public struct ComponentRow: Codable, Sendable {
        public var component: Component
        public var groupSize: Int
        public var collective: String
        public var bytesPerRankWithout: Int
        public var bytesPerRankWith: Int
        public var saving: Int

        enum CodingKeys: String, CodingKey {
            case component, collective, saving
            case groupSize = "group_size"
            case bytesPerRankWithout = "bytes_per_rank_without"
            case bytesPerRankWith = "bytes_per_rank_with"
        }
    }

    public var fingerprint: String
    public var model: ModelFacts
    public var parallel: ParallelConfig
    public var worldSize: Int
    public var sourceBytes: Int
    public var bytesPerRank: [Int]
    public var totalOutputBytes: Int
    public var components: [ComponentRow]
    public var unknownTensors: [String]
    public var warnings: [String]
    public var notes: [String]

    enum CodingKeys: String, CodingKey {
        case fingerprint, model, parallel, components, warnings, notes
        case worldSize = "world_size"
        case sourceBytes = "source_bytes"
        case bytesPerRank = "bytes_per_rank"
        case totalOutputBytes = "total_output_bytes"
        case unknownTensors = "unknown_tensors"
    }

    /// The collective vllm-ascend runs for a component on its own group (`ops/linear_op.py`,
    /// `ops/vocab_parallel_embedding.py`, `AscendLogitsProcessor`).
    public static func collective(_ c: Component, fineGrained: Bool, tp: Int) -> String {
        guard fineGrained else { return tp > 1 ? "all-reduce (global TP)" : "none" }
        switch c {
        case .embedding: return "all-gather ids, reduce-scatter"
        case .lmHead: return "all-gather hidden, all-to-all logits"
        case .oProj: return "all-to-all, reduce-scatter"
        case .mlp: return "all-gather, reduce-scatter"
        }
    }

    public init(_ plan: ShardPlan) {
        fingerprint = plan.fingerprint
        model = plan.model
        parallel = plan.parallel
        worldSize = plan.topology.worldSize
        sourceBytes = plan.sources.reduce(0) { $0 + $1.byteCount }
        bytesPerRank = plan.bytesPerRank()
        totalOutputBytes = bytesPerRank.reduce(0, +)
        components = Component.allCases.map { c in
            let plain = plan.topology.followingTP(c)
            let with = plan.bytesPerRank(of: c).max() ?? 0
            let before = plan.bytesPerRank(topology: plain, of: c).max() ?? 0
            return ComponentRow(
                component: c, groupSize: plan.topology.size(.fineGrained(c)),
                collective: Self.collective(c, fineGrained: plan.topology.isFineGrained(c), tp: plan.parallel.tp),
                bytesPerRankWithout: before, bytesPerRankWith: with, saving: before - with)
        }
        unknownTensors = plan.unknown
        warnings = plan.warnings
        notes = plan.notes
    }
}
