/// Which group a cut is made over.
public enum GroupKind: Hashable, Sendable, Codable {
    /// The global tensor-parallel group (size TP, index `tp_rank`).
    case tensorParallel
    /// A fine-grained component group of size G (`dp_rank mod G`), or the global TP when G = 0.
    case fineGrained(Component)
    /// All DP × TP ranks: vLLM flattens MoE tensor parallelism over DP (`FusedMoEParallelConfig`).
    case flattened
}

/// The rank grid of an all-DP / TP deployment (pipeline parallel = 1): global rank
/// `r = dp_rank · TP + tp_rank`.
///
/// Fine-grained groups follow vllm-ascend `init_ascend_model_parallel`
/// (`distributed/parallel_state.py`): the rank grid is `arange(world).reshape(pp, dp, tp)` and a
/// group is G consecutive DP ranks at one TP index, so a rank's position in it is `dp_rank mod G`.
public struct RankTopology: Sendable, Hashable {
    public let dp: Int
    public let tp: Int
    public let finegrained: FineGrainedConfig

    public init(dp: Int, tp: Int, finegrained: FineGrainedConfig) {
        self.dp = dp
        self.tp = tp
        self.finegrained = finegrained
    }

    public var worldSize: Int { dp * tp }

    /// The most ranks (DP × TP) fineshard plans or reads a manifest of: far above any deployment
    /// (DeepSeek-R1 runs on a few hundred NPUs), low enough that per-rank tables stay small.
    public static let maxWorldSize = 1 << 20

    public func dpRank(_ rank: Int) -> Int { rank / tp }
    public func tpRank(_ rank: Int) -> Int { rank % tp }

    /// The size of a group kind (the number of shards a tensor cut over it has).
    public func size(_ group: GroupKind) -> Int {
        switch group {
        case .tensorParallel: tp
        case .fineGrained(let c): isFineGrained(c) ? finegrained[c] : tp
        case .flattened: worldSize
        }
    }

    /// The shard index `rank` holds in a group of this kind.
    public func index(_ group: GroupKind, rank: Int) -> Int {
        switch group {
        case .tensorParallel: tpRank(rank)
        case .fineGrained(let c): isFineGrained(c) ? dpRank(rank) % finegrained[c] : tpRank(rank)
        case .flattened: rank
        }
    }
}
