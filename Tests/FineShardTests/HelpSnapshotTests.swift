import Foundation
import Testing

/// The built binary's `--help` output, verbatim against the command reference in `docs/cli/`
/// (regenerate with `scripts/gen_docs.sh` after changing a help text).
@Suite struct HelpSnapshotTests {
    static let commands = ["", "inspect", "plan", "shard", "verify", "merge", "forward-check", "manifest combine"]

    @Test(arguments: commands)
    func helpMatchesTheCommandReference(_ command: String) throws {
        let name = command.isEmpty ? "fineshard" : command.replacingOccurrences(of: " ", with: "-")
        let expected = try String(contentsOfFile: Environment.root + "/docs/cli/\(name).txt", encoding: .utf8)
        let args = command.split(separator: " ").map(String.init) + ["--help"]
        let result = try run(fineshardBinary, args, environment: ["COLUMNS": "80"])
        #expect(result.status == 0)
        #expect(result.stdout == expected, "run scripts/gen_docs.sh to update docs/cli/\(name).txt")
    }

    @Test(arguments: commands.dropFirst())
    func everyCommandHasAOneSentenceAbstractAndAnExample(_ command: String) throws {
        let args = command.split(separator: " ").map(String.init) + ["--help"]
        let help = try run(fineshardBinary, args).stdout
        let overview = help.split(separator: "\n\n").first ?? ""
        #expect(overview.hasPrefix("OVERVIEW: ") && overview.hasSuffix("."), "\(overview)")
        #expect(help.contains("Example"), "\(command) --help has no example")
    }

    @Test func machineDependentDefaultsAreShownAsWords() throws {
        for command in ["shard", "verify", "forward-check"] {
            let help = try run(fineshardBinary, [command, "--help"]).stdout
            #expect(
                !help.contains("(default: \(ProcessInfo.processInfo.activeProcessorCount))")
                    || ProcessInfo.processInfo.activeProcessorCount == 1)
            #expect(help.contains("all cores"), "\(command)")
        }
    }
}
