import ArgumentParser
import FineShard
import Foundation

struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Reassemble a dense Hugging Face checkpoint from shards (the inverse of shard).",
        discussion: """
            Vocab padding is dropped, the vllm layout is unfused back to Hugging Face names, and a tied \
            lm_head is not written twice. Output is split at --max-file-size with model.safetensors.index.json.
            Every shard file is checked against the manifest (size, SHA-256, each tensor's hash and header) \
            before anything is written (exit 1 naming file and tensor when one differs), and the output \
            is renamed into place only when all of it is written.

            Example:
              fineshard merge out -o dense
            """
    )

    @Argument(help: "The output folder of `fineshard shard`.")
    var shards: String

    @Option(name: .shortAndLong, help: "The folder to write the dense checkpoint to.")
    var output: String

    @Option(help: ArgumentHelp("Largest file of the dense checkpoint (e.g. 5GiB).", valueName: "size"))
    var maxFileSize = ByteSize("5GiB")

    @Flag(help: "Write into a non-empty output folder (never into the shard folder itself).")
    var force = false

    @OptionGroup var outputOptions: OutputOptions

    func validate() throws { try reportingErrors { _ = try maxFileSizeBytes() } }

    func maxFileSizeBytes() throws -> Int { try maxFileSize.bytes(option: "--max-file-size", problem: "is not a size") }

    func run() throws {
        try reportingErrors {
            TemporaryFiles.removeOnSignals()
            let size = try maxFileSizeBytes()
            try refuseMergeOutput(shards: shards, output: output, force: force)
            let files = try Merger(folder: shards, output: output, maxFileSize: size).merge()
            if outputOptions.json { return try printJSON(MergeReport(output: output, files: files)) }
            print("wrote \(files.count) file(s), \(TextReport.bytes(files.reduce(0) { $0 + $1.bytes })) to \(output)")
        }
    }
}

/// `merge --json`: one object (docs/JSON.md).
struct MergeReport: Encodable {
    var output: String
    var files: [WrittenFile]
    var totalBytes: Int

    enum CodingKeys: String, CodingKey {
        case output, files
        case totalBytes = "total_bytes"
    }

    init(output: String, files: [WrittenFile]) {
        self.output = output
        self.files = files
        totalBytes = files.reduce(0) { $0 + $1.bytes }
    }
}
