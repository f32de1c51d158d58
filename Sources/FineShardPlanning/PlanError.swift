import FineShardSystem

/// A parallel configuration or option that cannot be carried out; every message names the model
/// field or option, the numbers, and the nearest legal values.
public enum PlanError: FineShardError, Equatable {
    /// An option's value is malformed.
    case badOption(option: String, message: String)
    /// The configuration does not fit the model; one message per problem.
    case invalidConfiguration(problems: [String])
    /// `--strict` and tensors no rule knows.
    case unknownTensors(names: [String])

    public var exitCode: Int32 { 2 }

    public var description: String {
        switch self {
        case .badOption(let option, let message): "\(option): \(message)"
        case .invalidConfiguration(let problems):
            problems.count == 1 ? problems[0] : "the configuration does not fit the model:\n  - " + problems.joined(separator: "\n  - ")
        case .unknownTensors(let names):
            "--strict: \(names.count) tensor(s) match no rule: " + names.prefix(10).joined(separator: ", ")
                + (names.count > 10 ? ", …" : "")
        }
    }
}
