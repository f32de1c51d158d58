import ArgumentParser
import FineShard
import Foundation

@main
struct Fineshard: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fineshard",
        abstract: "Offline checkpoint resharding for vLLM fine-grained tensor parallelism.",
        discussion: """
            Cuts a dense checkpoint (safetensors or HDF5) into per-rank files that match vLLM's and \
            vllm-ascend's tensor-parallel groups, and proves the result byte for byte.

            Exit codes: 0 success, 1 verification found a difference, 2 bad input or configuration, \
            3 I/O failure while running, 130/143 stopped by SIGINT/SIGTERM.
            """,
        version: FineShard.version,
        subcommands: [Inspect.self, Plan.self, Shard.self, Verify.self, Merge.self, ForwardCheck.self, ManifestCommand.self]
    )

    /// ArgumentParser's own main, except that its usage errors (a missing `-o`, `--format h5`, an extra
    /// argument), which it exits with 64, exit 2 like every other bad option; `--help` and `--version`
    /// still exit 0.
    static func main() {
        main(Array(CommandLine.arguments.dropFirst()))
    }

    static func main(_ arguments: [String]) {
        do {
            var command = try parseAsRoot(arguments)
            try command.run()
        } catch {
            let code = exitCode(for: error)
            guard code == .validationFailure else { exit(withError: error) }
            let message = fullMessage(for: error)
            FileHandle.standardError.write(Data((message + "\n").utf8))
            if arguments.contains("--json") {
                let firstLine = message.split(separator: "\n").first.map(String.init) ?? message
                printFailureJSON(
                    JSONFailure(exitCode: 2, message: firstLine.hasPrefix("Error: ") ? String(firstLine.dropFirst(7)) : firstLine))
            }
            Foundation.exit(2)
        }
    }

    /// The exit code fineshard ends with for `error`: ArgumentParser's, with its usage errors (64) as 2.
    static func fineshardExitCode(for error: any Error) -> Int32 {
        let code = exitCode(for: error)
        return code == .validationFailure ? 2 : code.rawValue
    }
}

/// Flags every command takes.
struct OutputOptions: ParsableArguments {
    @Flag(help: "Print a machine-readable JSON report on stdout instead of text.")
    var json = false
}

/// Runs `body`, mapping fineshard's errors to their exit codes with the message on stderr.
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as any FineShardError {
        FileHandle.standardError.write(Data("error: \(printable(error.description))\n".utf8))
        if CommandLine.arguments.contains("--json") { printFailureJSON(JSONFailure(error)) }
        throw ExitCode(error.exitCode)
    }
}

/// What `--json` prints on stdout when a command fails (docs/JSON.md): one object, snake_case keys.
struct JSONFailure: Encodable {
    var ok = false
    var exitCode: Int32
    var message: String
    var file: String?
    var tensor: String?
    var option: String?

    enum CodingKeys: String, CodingKey {
        case ok, message, file, tensor, option
        case exitCode = "exit_code"
    }

    init(exitCode: Int32, message: String, file: String? = nil, tensor: String? = nil, option: String? = nil) {
        self.exitCode = exitCode
        self.message = message
        self.file = file
        self.tensor = tensor
        self.option = option
    }

    init(_ error: any FineShardError) {
        self.init(exitCode: error.exitCode, message: error.description)
        // Every layer's error names what it is about in its fields or associated values: `path`/`file`,
        // `tensor`/`name`, `option`; the first found (outermost) wins.
        collect(error, depth: 0)
    }

    private mutating func collect(_ value: Any, depth: Int) {
        guard depth < 4 else { return }
        for field in Mirror(reflecting: value).children {
            if let label = field.label, let text = field.value as? String {
                switch label {
                case "path", "file", "folder": file = file ?? text
                case "tensor", "name": tensor = tensor ?? text
                case "option": option = option ?? text
                default: break
                }
            } else {
                collect(field.value, depth: depth + 1)
            }
        }
    }
}

/// Prints a failure as one JSON object on stdout (never throws: the process is ending anyway).
func printFailureJSON(_ failure: JSONFailure) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    guard let data = try? encoder.encode(failure) else { return }
    FileHandle.standardOutput.write(data)
    FileHandle.standardOutput.write(Data("\n".utf8))
}

/// Encodes `value` as pretty, key-sorted JSON on stdout, every key snake_case (docs/JSON.md).
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.keyEncodingStrategy = .custom { path in SnakeCaseKey(path.last!.stringValue) }
    FileHandle.standardOutput.write(try encoder.encode(value))
    FileHandle.standardOutput.write(Data("\n".utf8))
}

/// A JSON key in snake_case: a camelCase property name (`dataStart`) becomes `data_start`. Only
/// identifiers that start with a lowercase letter are converted, so dictionary keys that are data
/// (dtype names such as `BF16`, tensor names with dots) pass unchanged.
struct SnakeCaseKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }

    init(_ key: String) {
        guard let first = key.unicodeScalars.first, first.properties.isLowercase,
            key.unicodeScalars.allSatisfy({ ($0.isASCII && $0.properties.isAlphabetic) || ("0"..."9").contains($0) })
        else {
            stringValue = key
            return
        }
        var out = ""
        for scalar in key.unicodeScalars {
            if scalar.properties.isUppercase {
                out += "_" + String(scalar).lowercased()
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        stringValue = out
    }

    init?(stringValue: String) { self.init(stringValue) }
    init?(intValue: Int) { nil }
}

/// `text` with control characters (a hostile tensor name's escape sequences) shown as `\u{1b}`;
/// newlines and tabs kept.
func printable(_ text: String) -> String {
    var out = ""
    for scalar in text.unicodeScalars {
        if scalar.properties.generalCategory == .control, scalar != "\n", scalar != "\t" {
            out += "\\u{\(String(scalar.value, radix: 16))}"
        } else {
            out.unicodeScalars.append(scalar)
        }
    }
    return out
}
