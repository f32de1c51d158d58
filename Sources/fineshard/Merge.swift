import ArgumentParser
import FineShard
import Foundation

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
    var maxFileSize = ByteSize("5GiB")

    @OptionGroup var outputOptions: OutputOptions

    func validate() throws { try reportingErrors { _ = try maxFileSizeBytes() } }

    func maxFileSizeBytes() throws -> Int { try maxFileSize.bytes(option: "--max-file-size", problem: "is not a size") }

    func run() throws {
        try reportingErrors {
            TemporaryFiles.removeOnSignals()
            let size = try maxFileSizeBytes()
            let files = try Merger(folder: shards, output: output, maxFileSize: size).merge()
            if outputOptions.json { return try printJSON(files) }
            print("wrote \(files.count) file(s), \(TextReport.bytes(files.reduce(0) { $0 + $1.bytes })) to \(output)")
        }
    }
}
