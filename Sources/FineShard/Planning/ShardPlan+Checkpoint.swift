import Foundation

extension ShardPlan {
    /// Recognizes the model of `checkpoint` (its `config.json` and tensor names) and plans it.
    public static func make(
        _ checkpoint: Checkpoint, parallel: ParallelConfig, strict: Bool = false, notes: [String] = []
    ) throws -> ShardPlan {
        let config = try checkpoint.config.map { try ModelConfig.decode($0, file: checkpoint.path(of: "config.json")) }
        let model = try Model.recognize(checkpoint.tensors, config: config)
        return try ShardPlanner.plan(sources: checkpoint.tensors, model: model, parallel: parallel, strict: strict, notes: notes)
    }
}

/// Byte counts as users write them: `5GiB`, `512MiB`, `100MB`, `4096`.
public enum ByteCount {
    public static func parse(_ text: String) -> Int? {
        let units: [(String, Int)] = [
            ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40),
            ("KB", 1_000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("TB", 1_000_000_000_000),
            ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("B", 1),
        ]
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        for (suffix, factor) in units where trimmed.hasSuffix(suffix) {
            let number = trimmed.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)
            guard let value = Double(number), value >= 0, value.isFinite else { return nil }
            return Int(value * Double(factor))
        }
        return Int(trimmed)
    }
}
