import ArgumentParser
import FineShard
import Foundation

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check an output folder against its manifest and, with --source, byte for byte against the source.",
        discussion: """
            The manifest is validated first (names inside OUT, ranks, parallel sizes, pieces inside \
            their tensors; exit 2 naming the field). Every file the manifest (or the partial manifests \
            of a --ranks fan-out) names is checked for size and SHA-256; missing, truncated, altered and extra files and missing ranks are \
            reported. With --source, every source tensor is rebuilt from the shards using only the \
            manifest's pieces and compared byte for byte, coverage is checked, and padding must be zero.
            Exit code 1 when a difference is found.

            Example:
              fineshard verify out --source fixtures/tiny-llama
            """
    )

    @Argument(help: "The output folder of `fineshard shard`.")
    var output: String

    @Option(help: "The source checkpoint, to reassemble every tensor and compare.")
    var source: String?

    @Option(help: ArgumentHelp("Files hashed in parallel (default: all cores).", valueName: "n"))
    var threads: Int?

    @Flag(help: "No progress output.")
    var quiet = false

    @OptionGroup var outputOptions: OutputOptions

    func validate() throws {
        if let threads, threads < 1 {
            try reportingErrors { throw PlanError.badOption(option: "--threads", message: "must be at least 1") }
        }
    }

    func run() throws {
        try reportingErrors {
            try requireOutputFolder(output, command: "verify")
            if let source {
                try FolderKind.refuseAsCheckpoint(
                    source, option: "--source",
                    hint: "--source takes the dense checkpoint the shards were made from (did you swap OUT and --source?)")
            }
            let checkpoint = try source.map { path in try namingInput(path) { try Checkpoint.open(path) } }
            let progress = ProgressDisplay(quiet: quiet || outputOptions.json)
            let verifier = Verifier(folder: output, threads: threads ?? ProcessInfo.processInfo.activeProcessorCount)
            let report = try verifier.verify(source: checkpoint) { progress.update(done: $0, total: $1) }
            progress.finish()
            if outputOptions.json {
                try printJSON(report)
            } else {
                for d in report.differences { print("DIFFERENCE: \(d.message)") }
                let what = report.sourceChecked ? ", \(report.tensorsReassembled) source tensors reassembled byte for byte" : ""
                print(
                    report.ok
                        ? "verified: \(report.ranks) ranks, \(report.filesChecked) files (\(TextReport.bytes(report.bytesHashed)))\(what)"
                        : "verification FAILED: \(report.differences.count) difference(s)")
            }
            if !report.ok { throw ExitCode(1) }
        }
    }
}
