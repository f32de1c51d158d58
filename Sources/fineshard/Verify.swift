import ArgumentParser
import FineShard
import Foundation

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check an output folder against its manifest and, with --source, byte for byte against the source.",
        discussion: """
            Every file the manifest (or the partial manifests of a --ranks fan-out) names is checked \
            for size and SHA-256; missing, truncated, altered and extra files and missing ranks are \
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

    func run() throws {
        try reportingErrors {
            let checkpoint = try source.map { try Checkpoint.open($0) }
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

struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Reassemble a dense Hugging Face checkpoint from shards (the inverse of shard).",
        discussion: """
            Vocab padding is dropped, the vllm layout is unfused back to Hugging Face names, and a tied \
            lm_head is not written twice. Output is split at --max-file-size with model.safetensors.index.json.

            Example:
              fineshard merge out -o dense
            """
    )

    @Argument(help: "The output folder of `fineshard shard`.")
    var shards: String

    @Option(name: .shortAndLong, help: "The folder to write the dense checkpoint to.")
    var output: String

    @Option(help: ArgumentHelp("Largest file of the dense checkpoint (e.g. 5GiB).", valueName: "size"))
    var maxFileSize = "5GiB"

    @OptionGroup var outputOptions: OutputOptions

    func run() throws {
        try reportingErrors {
            TemporaryFiles.removeOnSignals()
            guard let size = ByteCount.parse(maxFileSize), size > 0 else {
                throw PlanError.badOption(option: "--max-file-size", message: "'\(maxFileSize)' is not a size")
            }
            let files = try Merger(folder: shards, output: output, maxFileSize: size).merge()
            if outputOptions.json { return try printJSON(files) }
            print("wrote \(files.count) file(s), \(TextReport.bytes(files.reduce(0) { $0 + $1.bytes })) to \(output)")
        }
    }
}
