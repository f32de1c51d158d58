import FineShardSystem

/// What can be wrong with a model description (config.json, tensor names and shapes).
public enum ModelError: FineShardError, Equatable {
    /// `config.json` has a field of the wrong type or an impossible value.
    case badConfig(file: String, field: String, message: String)
    /// A fact the sharding rules need is neither in `config.json` nor derivable from shapes.
    case missingFact(field: String, neededFor: String)
    /// A tensor's shape disagrees with the model's facts.
    case shapeMismatch(tensor: String, shape: [Int], expected: String)
    /// A causal LM without `lm_head` while `tie_word_embeddings` is false, and similar.
    case inconsistent(message: String)
    /// An architecture or layout fineshard cannot handle (yet).
    case unsupported(message: String)

    public var exitCode: Int32 { 2 }

    public var description: String {
        switch self {
        case .badConfig(let file, let field, let message): "\(file): field '\(field)': \(message)"
        case .missingFact(let field, let neededFor):
            "config.json has no '\(field)' and the tensors do not determine it; it is needed for \(neededFor)"
        case .shapeMismatch(let tensor, let shape, let expected): "tensor '\(tensor)' has shape \(shape), expected \(expected)"
        case .inconsistent(let message): message
        case .unsupported(let message): message
        }
    }
}
