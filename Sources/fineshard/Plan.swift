import ArgumentParser
import FineShard
import Foundation

struct Plan: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate a parallel configuration against a model and show what every rank holds, writing nothing.",
        discussion: """
            Reads safetensors headers only. Prints per-rank bytes and, per component, the bytes per rank \
            without and with its fine-grained TP group (the memory table of vllm-ascend's Fine-Grained TP guide). \
            --ranks lists those ranks' tensors, files and bytes (text and --json).

            Example (the seed's DeepSeek-R1 decode configuration):
              fineshard plan DeepSeek-R1/ --dp 32 --enable-expert-parallel \\
                --additional-config @finegrained.json
            where finegrained.json holds the JSON given to vLLM:
              {"finegrained_tp_config": {"embedding_tensor_parallel_size": 8,
                "lmhead_tensor_parallel_size": 8, "oproj_tensor_parallel_size": 8,
                "mlp_tensor_parallel_size": 8}}
            """
    )

    @OptionGroup var options: PlanOptions
    @Option(help: ArgumentHelp("List the tensors, files and bytes of these ranks, e.g. 0-1,7.", valueName: "list"))
    var ranks: String?

    @OptionGroup var output: OutputOptions

    func validate() throws {
        if let ranks { try reportingErrors { _ = try ShardOptions.parseRanks(ranks, worldSize: .max) } }
    }

    func run() throws {
        try reportingErrors {
            let (_, plan) = try options.makePlan()
            let report = PlanReport(plan)
            let contents = try ranks.map { list in
                try ShardOptions.parseRanks(list, worldSize: plan.topology.worldSize).map { RankContents(plan.rank($0)) }
            }
            if output.json {
                try printJSON(PlanJSON(report: report, ranks: contents))
            } else {
                print(TextReport.plan(report))
                for rank in contents ?? [] { print("\n" + rank.text) }
            }
            // The plan holds a rule per tensor (136k for DeepSeek-R1): end without freeing them one
            // by one, which takes longer than printing; exit flushes stdout.
            withExtendedLifetime(plan) { Foundation.exit(0) }
        }
    }
}
