/// How tensors are packed into the parts of one file set: in the given (name) order, a new part
/// starts when the next tensor would take the current one past `maxBytes` of data; a tensor larger
/// than that gets a part of its own. vLLM's `ShardedStateLoader.save_model` packs each rank's
/// files this way, and Hugging Face's `save_pretrained` (what `merge` writes) too.
public enum PartPacking {
    /// The part index of every tensor, given their byte counts in order.
    public static func parts(of byteCounts: [Int], maxBytes: Int) -> [Int] {
        var parts: [Int] = []
        var part = -1
        var partBytes = 0
        for bytes in byteCounts {
            if part < 0 || (partBytes > 0 && partBytes + bytes > maxBytes) {
                part += 1
                partBytes = 0
            }
            partBytes += bytes
            parts.append(part)
        }
        return parts
    }
}
