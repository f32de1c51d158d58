import FineShardFormats

/// Rounds float32 values to the nearest BF16, as `shard --dtype bf16` writes them (``BF16Cast``), so the
/// dense pass over an FP8 or F32 source computes with the values the cast shards hold.
func roundToBF16(_ values: inout [Float]) {
    for i in values.indices { values[i] = Float(bitPattern: UInt32(BF16Cast.bits(values[i])) << 16) }
}
