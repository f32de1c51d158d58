/// What `verify` found; `--json` prints it. Empty difference lists mean the output holds.
public struct VerifyReport: Encodable, Sendable {
    /// One difference, with where it is.
    public struct Difference: Codable, Sendable, Hashable, CustomStringConvertible {
        public enum Kind: String, Codable, Sendable {
            case missingFile = "missing_file", truncatedFile = "truncated_file", alteredFile = "altered_file", extraFile = "extra_file"
            case missingRank = "missing_rank", sourceFile = "source_file", unreadableShard = "unreadable_shard"
            case tensorMismatch = "tensor_mismatch", tensorBytes = "tensor_bytes", coverage, padding
        }

        public var kind: Kind
        public var message: String
        public var rank: Int?
        public var file: String?
        public var tensor: String?
        /// Byte offset in `file` of the first differing byte, where known.
        public var offset: Int?

        public var description: String { message }
    }

    public var folder: String
    public var manifests: [String]
    public var ranks: Int
    public var filesChecked: Int
    public var bytesHashed: Int
    public var tensorsReassembled: Int
    public var sourceChecked: Bool
    public var differences: [Difference]
    public var seconds: Double

    public var ok: Bool { differences.isEmpty }

    enum CodingKeys: String, CodingKey {
        case folder, manifests, ranks, differences, seconds, ok
        case filesChecked = "files_checked"
        case bytesHashed = "bytes_hashed"
        case tensorsReassembled = "tensors_reassembled"
        case sourceChecked = "source_checked"
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(folder, forKey: .folder)
        try c.encode(manifests, forKey: .manifests)
        try c.encode(ranks, forKey: .ranks)
        try c.encode(filesChecked, forKey: .filesChecked)
        try c.encode(bytesHashed, forKey: .bytesHashed)
        try c.encode(tensorsReassembled, forKey: .tensorsReassembled)
        try c.encode(sourceChecked, forKey: .sourceChecked)
        try c.encode(differences, forKey: .differences)
        try c.encode(seconds, forKey: .seconds)
        try c.encode(ok, forKey: .ok)
    }
}
