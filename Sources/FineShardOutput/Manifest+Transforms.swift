import FineShardPlanning

extension Manifest {
    /// Source tensors that pieces read only as the scales of a dequantization (`shard --dtype bf16`): no
    /// output tensor holds them, and the dense checkpoint `merge` writes has none.
    public var dequantizationScales: Set<String> {
        Set(ranks.lazy.flatMap(\.tensors).flatMap(\.pieces).compactMap { $0.transform?.scaleTensor })
    }
}

extension Manifest {
    /// Source tensors whose pieces are transformed (written as BF16 by `shard --dtype bf16`).
    public var transformedSources: Set<String> {
        Set(ranks.lazy.flatMap(\.tensors).flatMap(\.pieces).filter { $0.transform != nil }.map(\.source))
    }
}
