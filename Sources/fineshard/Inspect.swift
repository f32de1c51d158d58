import ArgumentParser
import FineShard
import Foundation

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a checkpoint's format, files and tensors, reading headers only.",
        discussion: """
            Example:
              fineshard inspect fixtures/tiny-llama
              fineshard inspect model.safetensors --json
              fineshard inspect out    # an output folder: ranks, parallel configuration, bytes per rank, source
            """
    )

    @Argument(
        help:
            "A .safetensors or HDF5 file, a folder of them (with or without model.safetensors.index.json), or an output folder of `shard`."
    )
    var checkpoint: String

    @Option(help: "Refuse a safetensors header with more tensors than this.")
    var maxTensors = SafetensorsHeader.defaultMaxTensors

    @OptionGroup var output: OutputOptions

    func run() throws {
        try reportingErrors {
            // An output folder of `shard` (or a partial fan-out) is described from its manifests.
            if FolderKind.of(checkpoint) == .output {
                let report = try OutputFolderReport(folder: checkpoint)
                if output.json { return try printJSON(report) }
                return print(report.text)
            }
            try FolderKind.refuseAsCheckpoint(checkpoint, hint: "")
            let opened = try namingInput(checkpoint) { try Checkpoint.open(checkpoint, maxTensors: maxTensors) }
            let report = InspectReport(opened, roles: InspectReport.roles(of: opened))
            if output.json { return try printJSON(report) }
            print(TextReport.inspect(report))
        }
    }
}
