import ArgumentParser
import FineShard
import Foundation

struct Shard: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the per-rank files of a plan and OUT/manifest.json.",
        discussion: """
            Streams the source by byte range through bounded buffers, hashes every output file while \
            writing it, renames finished files into place, journals finished ranks and writes the manifest \
            last. A killed run is finished with --resume; --ranks writes a subset (one task of a fan-out).

            Example (all-DP 4, every fine-grained size 2):
              fineshard shard fixtures/tiny-llama -o out --dp 4 \\
                --additional-config '{"finegrained_tp_config": {
                  "embedding_tensor_parallel_size": 2, "lmhead_tensor_parallel_size": 2,
                  "oproj_tensor_parallel_size": 2, "mlp_tensor_parallel_size": 2}}'
            """
    )

    @OptionGroup var options: PlanOptions

    @Option(name: .shortAndLong, help: "The output folder.")
    var output: String

    @Option(help: ArgumentHelp("Write only these ranks, e.g. 0-7,12, and a partial manifest.", valueName: "list"))
    var ranks: String?

    @Flag(help: "Skip ranks already complete in OUT (files match their recorded hashes) and redo the rest.")
    var resume = false

    @Flag(help: "Rewrite existing files of the ranks being written.")
    var force = false

    @Option(help: ArgumentHelp("Worker threads (default: all cores).", valueName: "n"))
    var threads: Int?

    @Option(help: ArgumentHelp("Bytes of buffers the run may hold (e.g. 512MiB).", valueName: "size"))
    var memoryBudget = ByteSize("512MiB")

    @Flag(help: "Do not hash the source files into the manifest.")
    var noSourceHash = false

    @Flag(help: "Do not wait for the output to reach the disk before writing the manifest.")
    var noSync = false

    @Option(
        parsing: .unconditional,
        help: ArgumentHelp("zstd level for --format hdf5 (-131072 to 22; lower is faster).", valueName: "n"))
    var compressionLevel = HDF5Writer.defaultCompressionLevel

    @Flag(help: "No progress output.")
    var quiet = false

    @OptionGroup var outputOptions: OutputOptions

    func validate() throws {
        try reportingErrors {
            if let threads, threads < 1 { throw PlanError.badOption(option: "--threads", message: "must be at least 1") }
            _ = try memoryBudgetBytes()
            let levels = HDF5Writer.compressionLevels
            if !levels.contains(compressionLevel) {
                throw PlanError.badOption(
                    option: "--compression-level",
                    message: "\(compressionLevel) is not a zstd level (\(levels.lowerBound) to \(levels.upperBound))")
            }
            // The syntax of --ranks; that they exist is checked against the plan's world size.
            if let ranks { _ = try ShardOptions.parseRanks(ranks, worldSize: .max) }
        }
    }

    func memoryBudgetBytes() throws -> Int {
        try memoryBudget.bytes(option: "--memory-budget", minimum: 1 << 20, problem: "is not a size of at least 1MiB")
    }

    func run() throws {
        try reportingErrors {
            TemporaryFiles.removeOnSignals()
            try refuseShardOutput(source: options.checkpoint, output: output)
            let (checkpoint, plan) = try options.makePlan()
            var shardOptions = ShardOptions(output: output)
            if let ranks { shardOptions.ranks = try ShardOptions.parseRanks(ranks, worldSize: plan.topology.worldSize) }
            shardOptions.resume = resume
            shardOptions.force = force
            shardOptions.threads = threads ?? ProcessInfo.processInfo.activeProcessorCount
            shardOptions.memoryBudget = try memoryBudgetBytes()
            shardOptions.hashSources = !noSourceHash
            shardOptions.compressionLevel = compressionLevel
            shardOptions.sync = !noSync
            let progress = ProgressDisplay(quiet: quiet)
            let summary = try ShardExecutor(checkpoint: checkpoint, plan: plan, options: shardOptions) { done, total in
                progress.update(done: done, total: total)
            }.run()
            progress.finish()
            if outputOptions.json { return try printJSON(summary) }
            if !quiet {
                let skipped = summary.ranksSkipped.isEmpty ? "" : ", \(summary.ranksSkipped.count) already complete"
                print(
                    "wrote \(summary.ranksWritten.count) rank(s)\(skipped), \(TextReport.bytes(summary.bytesWritten)) in \(String(format: "%.2f", summary.seconds)) s; manifest: \(summary.manifest)"
                )
            }
        }
    }
}
