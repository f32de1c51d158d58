import ArgumentParser
import FineShard
import Foundation

/// The options that decide the layout, shared by `plan` and `shard`.
struct PlanOptions: ParsableArguments {
    @Argument(help: "The dense checkpoint: a .safetensors or HDF5 file, or a folder (with or without model.safetensors.index.json).")
    var checkpoint: String

    @Option(help: "Data-parallel size (1 for plain tensor parallelism).")
    var dp = 1

    @Option(help: "Global tensor-parallel size.")
    var tp = 1

    @Flag(help: "Place routed experts whole on ranks (EP size = DP × TP) instead of splitting them.")
    var enableExpertParallel = false

    @Option(help: ArgumentHelp("The JSON given to vLLM's --additional-config, inline or as @FILE.", valueName: "json"))
    var additionalConfig: String?

    @Option(help: "Pad the vocabulary to a multiple of this (vLLM: 64).")
    var vocabPadding = 64

    @Option(help: "Tensor names and fusion: hf (Hugging Face names) or vllm (fused qkv_proj/gate_up_proj).")
    var layout: ParallelConfig.Layout = .hf

    @Option(help: "Output format: safetensors or hdf5.")
    var format: ParallelConfig.Format = .safetensors

    @Option(help: "Output file names; may use {rank}, {dp_rank}, {tp_rank}, {part}. The extension is added.")
    var filePattern = ParallelConfig.defaultFilePattern

    @Option(help: ArgumentHelp("Split a rank's output into parts of at most this size (e.g. 5GiB, 512MiB).", valueName: "size"))
    var maxFileSize = ByteSize("5GiB")

    @Option(
        help: ArgumentHelp(
            "bf16: dequantize FP8 block weights (with their weight_scale_inv) to BF16 while sharding, as DeepSeek's fp8_cast_bf16.py does; other tensors keep their dtype.",
            valueName: "dtype"))
    var dtype: ParallelConfig.OutputDType?

    @Flag(help: "With --dtype bf16, also cast F32 and F16 weights and biases to BF16 (round to nearest even).")
    var castFloats = false

    @Flag(help: "Refuse tensors that no sharding rule knows instead of replicating them.")
    var strict = false

    @Option(help: "Refuse a safetensors header with more tensors than this.")
    var maxTensors = SafetensorsHeader.defaultMaxTensors

    /// The parallel configuration and notes about ignored `--additional-config` keys.
    func parallel() throws -> (ParallelConfig, [String]) {
        var additional = AdditionalConfig()
        if var json = additionalConfig {
            if json.hasPrefix("@") {
                let path = String(json.dropFirst())
                guard let data = FileManager.default.contents(atPath: path) else {
                    throw PlanError.badOption(option: "--additional-config", message: "cannot read file '\(path)'")
                }
                json = String(decoding: data, as: UTF8.self)
            } else if !json.trimmingCharacters(in: .whitespaces).hasPrefix("{"), FileManager.default.fileExists(atPath: json) {
                throw PlanError.badOption(
                    option: "--additional-config",
                    message: "'\(json)' is a file, not JSON; to read the JSON from it write --additional-config @\(json)")
            }
            additional = try AdditionalConfig.parse(json)
        }
        let size = try maxFileSizeBytes()
        let config = ParallelConfig(
            dp: dp, tp: tp, expertParallel: enableExpertParallel, finegrained: additional.finegrained,
            enableSharedExpertDP: additional.enableSharedExpertDP, vocabPadding: vocabPadding,
            layout: layout, format: format, filePattern: filePattern, maxFileSize: size, dtype: dtype, castFloats: castFloats)
        return (config, additional.notes)
    }

    func maxFileSizeBytes() throws -> Int {
        try maxFileSize.bytes(option: "--max-file-size", problem: "is not a size (examples: 5GiB, 512MiB, 1000000)")
    }

    /// Checks the options that need no file (ArgumentParser calls it for `plan` and `shard`).
    func validate() throws {
        try reportingErrors { _ = try maxFileSizeBytes() }
    }

    /// Opens the checkpoint and plans it.
    func makePlan() throws -> (Checkpoint, ShardPlan) {
        let (parallel, notes) = try parallel()
        try FolderKind.refuseAsCheckpoint(
            checkpoint, hint: "plan and shard take the dense checkpoint (`fineshard inspect \(checkpoint)` describes this folder)")
        return try namingInput(checkpoint) {
            let opened = try Checkpoint.open(checkpoint, maxTensors: maxTensors)
            return (opened, try ShardPlan.make(opened, parallel: parallel, strict: strict, notes: notes))
        }
    }
}

extension ParallelConfig.Layout: ExpressibleByArgument {}
extension ParallelConfig.Format: ExpressibleByArgument {}
extension ParallelConfig.OutputDType: ExpressibleByArgument {}
