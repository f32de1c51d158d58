import ArgumentParser
import FineShard
import Foundation

struct ManifestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "manifest",
        abstract: "Work with the manifests of an output folder.",
        subcommands: [Combine.self]
    )

    struct Combine: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write OUT/manifest.json from the partial manifests of a --ranks fan-out.",
            discussion: """
                Checks that the parts share one plan fingerprint and one list of copied files, and \
                that together they cover every rank exactly once.

                Example:
                  fineshard manifest combine out
                """
        )

        @Argument(help: "The output folder holding manifest.ranks-*.json.")
        var output: String

        @OptionGroup var outputOptions: OutputOptions

        func run() throws {
            try reportingErrors {
                let folder = OutputFolder(output)
                let parts = try folder.partialManifestNames().map { try Manifest.read(folder.path($0)) }
                let (combined, _) = try Manifest.combine(parts, requireAllRanks: true)
                let path = folder.path(OutputFolder.manifestName)
                try combined.write(to: path)
                if outputOptions.json {
                    return try printJSON(["manifest": path, "parts": String(parts.count), "ranks": String(combined.ranks.count)])
                }
                print("combined \(parts.count) partial manifest(s), \(combined.ranks.count) ranks: \(path)")
            }
        }
    }
}
