import ArgumentParser
import FineShard

/// A byte count option as users write it (`5GiB`, `512MiB`, `100MB`, `4096`). Parsing never
/// fails here: `validate()` calls ``bytes(option:minimum:problem:)``, which names the option and
/// refuses what is not a size or does not fit in 64 bits (`1e10TiB`), with exit code 2.
struct ByteSize: ExpressibleByArgument, CustomStringConvertible, Sendable {
    /// The text as given (shown as the default in help).
    let text: String
    let reading: ByteCount.Reading

    init(_ text: String) {
        self.text = text
        reading = ByteCount.read(text)
    }

    init?(argument: String) { self.init(argument) }

    var description: String { text }

    /// The byte count, at least `minimum`; otherwise `problem` (what the option's message says).
    func bytes(option: String, minimum: Int = 1, problem: String) throws -> Int {
        switch reading {
        case .bytes(let n) where n >= minimum: return n
        case .tooLarge:
            throw PlanError.badOption(option: option, message: "'\(text)' is too large (at most \(Int.max) bytes)")
        default:
            throw PlanError.badOption(option: option, message: "'\(text)' \(problem)")
        }
    }
}
