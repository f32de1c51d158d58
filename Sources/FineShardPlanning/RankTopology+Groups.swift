import FineShardModel

/// The rules of the rank grid that every other place asks instead of working them out again:
/// whether a component has its own group, who is in a group, and which component a role belongs to.
extension RankTopology {
    /// Whether component `c` has a group of its own: a fine-grained size of 0 follows TP
    /// (vllm-ascend's default for every `finegrained_tp_config` key). The one place of that rule.
    public func isFineGrained(_ c: Component) -> Bool { finegrained[c] > 0 }

    /// This topology with component `c` following TP again (what a fine-grained group saves is
    /// measured against it).
    public func followingTP(_ c: Component) -> RankTopology {
        var plain = finegrained
        plain[c] = 0
        return RankTopology(dp: dp, tp: tp, finegrained: plain)
    }

    /// The members of `rank`'s group of this kind, in shard-index order: G consecutive DP ranks at
    /// one TP index for a fine-grained group, the TP group of a DP rank otherwise, every rank for
    /// the flattened group.
    public func members(_ group: GroupKind, of rank: Int) -> [Int] {
        switch group {
        case .fineGrained(let c) where isFineGrained(c):
            let g = finegrained[c]
            let base = dpRank(rank) - dpRank(rank) % g
            return (0..<g).map { (base + $0) * tp + tpRank(rank) }
        case .tensorParallel, .fineGrained:
            return (0..<tp).map { dpRank(rank) * tp + $0 }
        case .flattened:
            return Array(0..<worldSize)
        }
    }

    /// The component whose group a role is cut over (its `finegrained_tp_config` key), or nil for
    /// roles that are cut over TP, flattened or not at all.
    public static func component(of kind: TensorRole.Kind) -> Component? {
        switch kind {
        case .embedding: .embedding
        case .lmHead: .lmHead
        case .oProj: .oProj
        case .gate, .up, .down, .gateUp: .mlp
        default: nil
        }
    }
}
