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
            """
    )

    @Argument(help: "A .safetensors or HDF5 file, or a folder of them (with or without model.safetensors.index.json).")
    var checkpoint: String

    @Option(help: "Refuse a safetensors header with more tensors than this.")
    var maxTensors = SafetensorsHeader.defaultMaxTensors

    @OptionGroup var output: OutputOptions

    func run() throws {
        try reportingErrors {
            let opened = try Checkpoint.open(checkpoint, maxTensors: maxTensors)
            let report = InspectReport(opened, roles: InspectReport.roles(of: opened))
            if output.json { return try printJSON(report) }
            print(TextReport.inspect(report))
        }
    }
}
