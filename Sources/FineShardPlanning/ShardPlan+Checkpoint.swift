import FineShardFormats
import FineShardModel
import Foundation

extension ShardPlan {
    /// Recognizes the model of `checkpoint` (its `config.json` and tensor names) and plans it.
    public static func make(
        _ checkpoint: Checkpoint, parallel: ParallelConfig, strict: Bool = false, notes: [String] = []
    ) throws -> ShardPlan {
        let model = try Model.recognize(checkpoint)
        return try ShardPlanner.plan(sorted: checkpoint.tensors, model: model, parallel: parallel, strict: strict, notes: notes)
    }
}

/// Byte counts as users write them: `5GiB`, `512MiB`, `100MB`, `4096`.
public enum ByteCount {
    /// What a size written by a user says.
    public enum Reading: Sendable, Equatable {
        case bytes(Int)
        /// Not a number with a known unit.
        case notASize
        /// A size, but more bytes than an `Int` holds (`1e10TiB`).
        case tooLarge
    }

    /// The byte count of `text`, or nil when it is not a size or is too large.
    public static func parse(_ text: String) -> Int? {
        if case .bytes(let n) = read(text) { n } else { nil }
    }

    public static func read(_ text: String) -> Reading {
        let units: [(String, Int)] = [
            ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40),
            ("KB", 1_000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("TB", 1_000_000_000_000),
            ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("B", 1),
        ]
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        for (suffix, factor) in units where trimmed.hasSuffix(suffix) {
            let number = trimmed.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)
            guard let value = Double(number), value >= 0, value.isFinite else { return .notASize }
            let bytes = value * Double(factor)
            // Double(Int.max) rounds up to 2^63, which Int cannot hold.
            guard bytes < Double(Int.max) else { return .tooLarge }
            return .bytes(Int(bytes))
        }
        guard let n = Int(trimmed) else {
            return trimmed.allSatisfy(\.isNumber) && !trimmed.isEmpty ? .tooLarge : .notASize
        }
        return .bytes(n)
    }
}
