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
        throw ExitCode(error.exitCode)
    }
}

/// Encodes `value` as pretty, key-sorted JSON on stdout.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    FileHandle.standardOutput.write(try encoder.encode(value))
    FileHandle.standardOutput.write(Data("\n".utf8))
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
