import Foundation

/// The four components vllm-ascend can shard over their own TP groups.
public enum Component: String, Sendable, Codable, CaseIterable {
    case embedding
    case lmHead = "lm_head"
    case oProj = "o_proj"
    case mlp
}

/// vllm-ascend's `finegrained_tp_config` (docs/SPEC.md §2): one group size per component; 0 means the
/// component follows the global TP.
public struct FineGrainedConfig: Codable, Sendable, Hashable {
    public var embedding = 0
    public var lmHead = 0
    public var oProj = 0
    public var mlp = 0

    enum CodingKeys: String, CodingKey {
        case embedding
        case lmHead = "lm_head"
        case oProj = "o_proj"
        case mlp
    }

    public init(embedding: Int = 0, lmHead: Int = 0, oProj: Int = 0, mlp: Int = 0) {
        (self.embedding, self.lmHead, self.oProj, self.mlp) = (embedding, lmHead, oProj, mlp)
    }

    public subscript(component: Component) -> Int {
        get {
            switch component {
            case .embedding: embedding
            case .lmHead: lmHead
            case .oProj: oProj
            case .mlp: mlp
            }
        }
        set {
            switch component {
            case .embedding: embedding = newValue
            case .lmHead: lmHead = newValue
            case .oProj: oProj = newValue
            case .mlp: mlp = newValue
            }
        }
    }

    /// The JSON keys vLLM users write inside `finegrained_tp_config` (vllm-ascend `ascend_config.py`).
    public static let vllmKeys: [(String, Component)] = [
        ("embedding_tensor_parallel_size", .embedding), ("lmhead_tensor_parallel_size", .lmHead),
        ("oproj_tensor_parallel_size", .oProj), ("mlp_tensor_parallel_size", .mlp),
    ]

    /// Parses the `--additional-config` JSON a user passes to vLLM. Returns the configuration and
    /// notes about keys that were ignored; keys that change the layout otherwise are refused
    /// (``AdditionalConfig/parse(_:)``).
    public static func parse(additionalConfig json: String) throws -> (FineGrainedConfig, notes: [String]) {
        let config = try AdditionalConfig.parse(json)
        return (config.finegrained, config.notes)
    }
}

/// Any JSON value, for configuration documents whose keys are open-ended.
public enum JSONValue: Decodable, Sendable, Hashable, CustomStringConvertible {
    case null, bool(Bool), number(Double), string(String), array([JSONValue]), object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let n = try? c.decode(Double.self) {
            self = .number(n)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    public var description: String {
        switch self {
        case .null: "null"
        case .bool(let b): String(b)
        case .number(let n): n == n.rounded() && abs(n) < 1e15 ? String(Int(n)) : String(n)
        case .string(let s): "\"\(s)\""
        case .array(let a): "[" + a.map(\.description).joined(separator: ", ") + "]"
        case .object: "{…}"
        }
    }
}

/// Everything that decides the layout of the output (docs/SPEC.md §4): the parallel sizes and the
/// output options. Part of the plan fingerprint.
public struct ParallelConfig: Codable, Sendable, Hashable {
    public enum Layout: String, Codable, Sendable, CaseIterable {
        /// Hugging Face names, separate q/k/v and gate/up.
        case hf
        /// vLLM's parameter names with fused `qkv_proj` and `gate_up_proj` (ShardedStateLoader).
        case vllm
    }

    public enum Format: String, Codable, Sendable, CaseIterable {
        case safetensors
        case hdf5
    }

    /// `--dtype`: the dtype FP8 block weights are written in.
    public enum OutputDType: String, Codable, Sendable, CaseIterable {
        /// Dequantized with their `weight_scale_inv` and rounded to BF16 (DeepSeek's `fp8_cast_bf16.py`).
        case bf16
    }

    public var dp: Int
    public var tp: Int
    public var expertParallel: Bool
    public var finegrained: FineGrainedConfig
    /// vllm-ascend `enable_shared_expert_dp`: shared experts whole on every rank. Only ever true (nil
    /// otherwise, so that plans without it keep their fingerprint); the planner keeps it only with
    /// expert parallelism and TP > 1, as `AscendConfig` does.
    public var enableSharedExpertDP: Bool?
    /// vLLM pads the vocabulary to a multiple of 64 (`DEFAULT_VOCAB_PADDING_SIZE`).
    public var vocabPadding: Int
    public var layout: Layout
    public var format: Format
    public var filePattern: String
    public var maxFileSize: Int
    /// `--dtype bf16`; nil (every tensor keeps its dtype) unless given, so plans without it keep their
    /// fingerprint, and a cast and an uncast run never share one (`--resume` cannot mix them).
    public var dtype: OutputDType?
    /// `--cast-floats`: F32 / F16 weights are cast to BF16 too. Only ever true (nil otherwise).
    public var castFloats: Bool?

    public static let defaultFilePattern = "model-rank-{rank}-part-{part}"
    public static let defaultMaxFileSize = 5 << 30

    enum CodingKeys: String, CodingKey {
        case dp, tp, finegrained, layout, format
        case expertParallel = "expert_parallel"
        case enableSharedExpertDP = "enable_shared_expert_dp"
        case vocabPadding = "vocab_padding"
        case filePattern = "file_pattern"
        case maxFileSize = "max_file_size"
        case dtype
        case castFloats = "cast_floats"
    }

    public init(
        dp: Int, tp: Int = 1, expertParallel: Bool = false, finegrained: FineGrainedConfig = FineGrainedConfig(),
        enableSharedExpertDP: Bool = false, vocabPadding: Int = 64, layout: Layout = .hf, format: Format = .safetensors,
        filePattern: String = defaultFilePattern, maxFileSize: Int = defaultMaxFileSize, dtype: OutputDType? = nil,
        castFloats: Bool = false
    ) {
        self.dp = dp
        self.tp = tp
        self.expertParallel = expertParallel
        self.finegrained = finegrained
        self.enableSharedExpertDP = enableSharedExpertDP ? true : nil
        self.vocabPadding = vocabPadding
        self.layout = layout
        self.format = format
        self.filePattern = filePattern
        self.maxFileSize = maxFileSize
        self.dtype = dtype
        self.castFloats = castFloats ? true : nil
    }

    public var worldSize: Int { dp * tp }

    /// The file extension of the output format.
    public var fileExtension: String { format == .hdf5 ? "h5" : "safetensors" }

    /// The output file name of `rank`'s part `part`, from `--file-pattern` (the one place rank files
    /// are named: the plan names them, a manifest's names are checked against it).
    public func fileName(rank: Int, part: Int) -> String {
        filePattern
            .replacingOccurrences(of: "{rank}", with: String(rank))
            .replacingOccurrences(of: "{dp_rank}", with: String(rank / tp))
            .replacingOccurrences(of: "{tp_rank}", with: String(rank % tp))
            .replacingOccurrences(of: "{part}", with: String(part)) + "." + fileExtension
    }
}
