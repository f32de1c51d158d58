extension ShardSet {
    /// A tensor of the shard set: the output file that holds it and its name there.
    package struct TensorKey: Hashable, Sendable {
        package var file: String
        package var name: String

        package init(file: String, name: String) {
            self.file = file
            self.name = name
        }

        /// How a merge plan's ``Piece/source`` names this tensor (a piece names its source with
        /// one string); ``init(pieceSource:)`` reads it back.
        package var pieceSource: String { file + "\u{0}" + name }

        package init?(pieceSource: String) {
            let parts = pieceSource.split(separator: "\u{0}", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2 else { return nil }
            self.init(file: String(parts[0]), name: String(parts[1]))
        }
    }
}
