import ArgumentParser
import FineShard
import Foundation

struct ForwardCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forward-check",
        abstract: "Run the model densely and as the ranks would from their shards, and compare the outputs.",
        discussion: """
            The dense pass reads the source; the sharded pass reads only each rank's shard files (as the \
            manifest lists them), gives every DP rank its own token batch and simulates vLLM / \
            vllm-ascend's collectives in process: vocab-parallel embedding, heads on TP, o_proj and dense \
            MLP over their (fine-grained) groups with all-gather / all-to-all / reduce-scatter, and the \
            vocab-parallel lm_head. Every rank's logits (an encoder's last hidden state) are compared with \
            the dense ones: max absolute error, max relative error (to the largest dense value) and top-1 \
            agreement. All arithmetic is float32. Exit code 1 when a rank differs by more than the tolerance.

            MoE models route every token as their Hugging Face code does and, with expert parallelism, \
            dispatch it to the rank vLLM's expert map gives each chosen expert and combine the results \
            (all-to-all); without it, every rank computes its slice of every expert. Every routing choice \
            is reported with its margin; a choice that differs from the dense one with a margin below the \
            tolerance is a near-tie (reported, not a failure), any other difference fails. When outputs \
            differ, the first module that differs is named with its rank and tensors.

            --layers checks single layers of a checkpoint far larger than memory: each selected layer runs \
            densely and sharded on the same input (the embedding of the tokens for layer 0, the dense \
            output of the layer before when that is selected too, seeded random rows of RMS 1 otherwise); \
            only those layers' tensors are read, and of an MoE layer only the experts the tokens pick. The \
            report gives each layer's max relative error, routing and bytes read.

            Every shard tensor read is checked against the SHA-256 the manifest records for it before it \
            is used (a tensor read in part is hashed whole); a difference exits 1 naming file and tensor.

            Supported: the Llama family (Llama, Mistral, Qwen2, Qwen3; tied or untied), DeepSeek-V2/V3 \
            (MLA, routed and shared experts), Qwen2-MoE, Qwen3-MoE, Mixtral and BERT encoders, hf and vllm \
            layouts, safetensors and HDF5 output; int8 W8A8 weights are dequantized with their per-channel \
            weight_scale / weight_offset (activation scales are not simulated) and FP8 weights with their \
            weight_scale_inv blocks. Other architectures and other quantized weights exit 2.

            Example:
              fineshard shard fixtures/tiny-llama -o out --dp 4 \\
                --additional-config '{"finegrained_tp_config":
                  {"mlp_tensor_parallel_size": 2}}'
              fineshard forward-check out --source fixtures/tiny-llama \\
                --tokens '1,2,3;4,5,6;7,8;9'
            """
    )

    @Argument(help: "The output folder of `fineshard shard`.")
    var output: String

    @Option(help: "The dense checkpoint the shards were made from.")
    var source: String

    @Option(help: ArgumentHelp("Token ids: '1,2,3' for every DP rank, or one list per DP rank separated by ';'.", valueName: "ids"))
    var tokens: String?

    @Option(help: "Seed of the generated token ids (without --tokens).")
    var seed: UInt64 = 0

    @Option(help: ArgumentHelp("Generated tokens per DP rank (without --tokens).", valueName: "n"))
    var tokensPerRank = 8

    @Option(help: ArgumentHelp("Largest relative error that passes: max |sharded − dense| / max |dense|.", valueName: "x"))
    var tolerance: Float = 1e-4

    @Flag(help: "Include every dense output value in the JSON report (for an independent reference).")
    var includeDense = false

    @Option(help: ArgumentHelp("Threads for matrix products (default: all cores).", valueName: "n"))
    var threads: Int?

    @Option(
        help: ArgumentHelp(
            "Check only these layers, each on its own (e.g. 0,3,60 or 0-2): reads only their tensors and the experts the tokens pick.",
            valueName: "list"))
    var layers: String?

    @OptionGroup var outputOptions: OutputOptions

    /// Every option that needs no file, checked before anything is read (exit 2 naming the option).
    func validate() throws {
        try reportingErrors {
            func bad(_ option: String, _ message: String) -> PlanError { .badOption(option: option, message: message) }
            // A batch is simulated on every rank in float32: thousands of tokens are already far beyond a check's need.
            if !(1...Self.maxTokensPerRank).contains(tokensPerRank) {
                throw bad("--tokens-per-rank", "must be between 1 and \(Self.maxTokensPerRank), is \(tokensPerRank)")
            }
            if !(tolerance >= 0) { throw bad("--tolerance", "must be a non-negative number") }
            if let threads, threads < 1 { throw bad("--threads", "must be at least 1") }
            if let tokens { _ = try ForwardChecker.parseTokens(tokens) }
            if let layers { _ = try ForwardChecker.parseLayers(layers) }
        }
    }

    static let maxTokensPerRank = 4096

    func run() throws {
        try reportingErrors {
            try requireOutputFolder(output, command: "forward-check")
            try FolderKind.refuseAsCheckpoint(
                source, option: "--source",
                hint: "--source takes the dense checkpoint the shards were made from (did you swap OUT and --source?)")
            let checkpoint = try namingInput(source) { try Checkpoint.open(source) }
            let options = ForwardChecker.Options(
                tokens: try tokens.map(ForwardChecker.parseTokens), seed: seed, tokensPerRank: tokensPerRank, tolerance: tolerance,
                threads: threads ?? ProcessInfo.processInfo.activeProcessorCount, includeDense: includeDense)
            if let layers {
                let report = try ForwardChecker(folder: output, options: options).runLayers(
                    try ForwardChecker.parseLayers(layers), source: checkpoint)
                if outputOptions.json { try printJSON(report) } else { printLayers(report) }
                if !report.ok { throw ExitCode(1) }
                return
            }
            let report = try ForwardChecker(folder: output, options: options).run(source: checkpoint)
            if outputOptions.json {
                try printJSON(report)
            } else {
                for r in report.ranks {
                    let top = r.shardedTop5.first.map { "top-1 \($0.id)" } ?? ""
                    let routing =
                        r.routing.map { choices in
                            ", routing \(choices.count) choices (min margin \(r.minRoutingMargin.map { String(format: "%.2e", $0) } ?? "-"), \(r.routingTies ?? 0) ties, \(r.routingDifferences ?? 0) differ)"
                        } ?? ""
                    print(
                        "rank \(r.rank) (dp \(r.dpRank), tp \(r.tpRank)): \(r.tokens.count) tokens, max abs \(String(format: "%.2e", r.maxAbsError)), "
                            + "max rel \(String(format: "%.2e", r.maxRelError)), top-1 agrees \(r.top1Agreement)/\(r.positions), \(top)\(routing) — \(r.passed ? "ok" : "MISMATCH")"
                    )
                }
                if let choices = report.routingChoices {
                    print(
                        "routing: \(choices) choices, \(report.routingTies ?? 0) near-ties (margin below \(String(format: "%.0e", report.tolerance))), \(report.routingDifferences ?? 0) differences"
                    )
                }
                print(
                    report.shardTensorsHashed > 0
                        ? "shard hashes: \(report.shardTensorsHashed) tensors checked (\(TextReport.bytes(report.shardBytesHashed)))"
                        : "shard hashes: not checked (the manifest records no tensor hashes; run fineshard verify)")
                for problem in report.ranks.compactMap(\.problem) { print("MISMATCH: \(problem)") }
                for difference in report.firstDifferences { print("FIRST DIFFERENCE: \(difference.description)") }
                let what = report.output == .logits ? "logits" : "last hidden states"
                print(
                    report.ok
                        ? "forward-check passed: \(report.ranks.count) ranks' \(what) match the dense \(report.architecture) within \(String(format: "%.0e", report.tolerance)) (\(String(format: "%.1f", report.seconds)) s, peak RSS \(TextReport.bytes(report.peakRSSBytes)))"
                        : "forward-check FAILED: \(report.ranks.filter { !$0.passed }.count) of \(report.ranks.count) ranks differ from the dense \(report.architecture)"
                )
            }
            if !report.ok { throw ExitCode(1) }
        }
    }
}
