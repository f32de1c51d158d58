import Foundation

/// The parts of vLLM's `--additional-config` JSON that decide the checkpoint layout, read as
/// vllm-ascend reads them (`vllm_ascend/ascend_config.py`, `AscendConfig.__init__`, commit
/// 182b75ea84 of 2026-08-22, after v0.25.1rc1).
///
/// Every key that changes which bytes a rank loads is honoured or refused — never ignored:
/// - `finegrained_tp_config`: the four group sizes (``FineGrainedConfig``); `olora_tensor_parallel_size`
///   (DeepSeek-V4's o_lora, not supported yet) is refused when positive.
/// - `enable_shared_expert_dp`: honoured. `AscendConfig` keeps it only with expert parallelism and
///   TP > 1; then `get_parallel_op` (`ops/linear_op.py`) gives every shared-expert linear layer
///   (`_is_shared_expert_layer`: a prefix with `shared_expert(s)`) no TP at all: replicated.
/// - `eplb_config` (`EplbConfig`): an unknown key is an error as in vllm-ascend ("Config has no
///   attribute"); `dynamic_eplb`, `expert_map_path`, `expert_map_record_path` (which turns dynamic EPLB
///   on) and `num_redundant_experts` > 0 place experts by a load-balancing table or add redundant
///   experts (`eplb/core/eplb_utils.py`, `init_eplb_config`): refused, not supported yet.
/// - The same EPLB keys at the top level (`dynamic_eplb`, `expert_map_path`, `init_redundancy_expert`,
///   `expert_map_record_path`) are how vllm-ascend read them before v0.14.0rc1 (PR #5533 moved them into
///   `eplb_config`): refused when set, since an older vllm-ascend would place experts by them.
/// - `mix_placement`: shared experts placed among the routed experts on every EP rank
///   (`generate_global_placement`): refused when true.
///
/// Other keys (scheduler, graph, fusion, multistream options) do not change the layout and are
/// ignored with a note.
public struct AdditionalConfig: Sendable, Equatable {
    public var finegrained = FineGrainedConfig()
    /// `enable_shared_expert_dp` as written; the planner applies it only where vllm-ascend does.
    public var enableSharedExpertDP = false
    /// Keys ignored because they do not change the layout.
    public var notes: [String] = []

    public init() {}

    /// The EPLB keys vllm-ascend's `EplbConfig` accepts.
    static let eplbKeys: Set<String> = [
        "dynamic_eplb", "expert_map_path", "expert_heat_collection_interval", "algorithm_execution_interval",
        "expert_map_record_path", "num_redundant_experts", "eplb_policy_type", "eplb_heat_collection_stage",
        "load_collection_phase",
    ]

    /// Top-level keys by which vllm-ascend before v0.14.0rc1 placed experts (load-balanced or redundant).
    static let legacyEPLBKeys: Set<String> = ["dynamic_eplb", "expert_map_path", "init_redundancy_expert", "expert_map_record_path"]

    static func refuse(_ key: String, _ why: String) -> PlanError {
        PlanError.badOption(option: "--additional-config", message: "\(key): \(why)")
    }

    /// Whether a JSON value turns an option on: true, a non-empty string, a positive number.
    static func isSet(_ value: JSONValue) -> Bool {
        switch value {
        case .null: false
        case .bool(let b): b
        case .number(let n): n > 0
        case .string(let s): !s.isEmpty
        case .array(let a): !a.isEmpty
        case .object(let o): !o.isEmpty
        }
    }

    /// Parses the `--additional-config` JSON a user passes to vLLM.
    public static func parse(_ json: String) throws -> AdditionalConfig {
        guard let root = try? JSONDecoder().decode([String: JSONValue].self, from: Data(json.utf8)) else {
            throw PlanError.badOption(option: "--additional-config", message: "is not a JSON object: \(json.prefix(80))")
        }
        var config = AdditionalConfig()
        for key in root.keys.sorted() {
            let value = root[key]!
            switch key {
            case "finegrained_tp_config":
                try config.parseFinegrained(value)
            case "enable_shared_expert_dp":
                guard case .bool(let on) = value else {
                    throw refuse(key, "must be true or false, is \(value)")
                }
                config.enableSharedExpertDP = on
            case "eplb_config":
                try parseEPLB(value)
            case "mix_placement":
                if isSet(value) {
                    throw refuse(
                        key,
                        "vllm-ascend then places the shared experts among the routed experts on every EP rank (eplb_utils.py generate_global_placement); fineshard does not support that layout yet"
                    )
                }
            case _ where legacyEPLBKeys.contains(key):
                if isSet(value) {
                    throw refuse(
                        key,
                        "vllm-ascend before v0.14.0rc1 read this EPLB key at the top level and placed experts by it; load-balanced or redundant expert placement is not supported yet (and current vllm-ascend reads it inside eplb_config)"
                    )
                }
                config.notes.append("--additional-config: key '\(key)' is \(value), which does not change the checkpoint layout; ignored")
            default:
                config.notes.append("--additional-config: key '\(key)' does not change the checkpoint layout; ignored")
            }
        }
        return config
    }

    mutating func parseFinegrained(_ section: JSONValue) throws {
        guard case .object(let fields) = section else {
            throw PlanError.badOption(option: "--additional-config", message: "finegrained_tp_config must be an object")
        }
        let known = Dictionary(uniqueKeysWithValues: FineGrainedConfig.vllmKeys)
        let allKeys = FineGrainedConfig.vllmKeys.map(\.0) + ["olora_tensor_parallel_size"]
        for key in fields.keys.sorted() {
            guard known[key] != nil || key == "olora_tensor_parallel_size" else {
                notes.append(
                    "--additional-config: finegrained_tp_config key '\(key)' is unknown; ignored (known: \(allKeys.joined(separator: ", ")))"
                )
                continue
            }
            guard case .number(let number) = fields[key]!, let value = Int(exactly: number), value >= 0 else {
                throw PlanError.badOption(
                    option: "--additional-config",
                    message: "finegrained_tp_config.\(key) must be a non-negative integer, is \(fields[key]!)")
            }
            guard let component = known[key] else {
                if value > 0 {
                    throw Self.refuse(
                        "finegrained_tp_config.olora_tensor_parallel_size",
                        "\(value) shards DeepSeek-V4's o_lora over its own group; not supported yet (use 0)")
                }
                continue
            }
            finegrained[component] = value
        }
    }

    static func parseEPLB(_ section: JSONValue) throws {
        guard case .object(let fields) = section else {
            throw PlanError.badOption(option: "--additional-config", message: "eplb_config must be an object (vllm-ascend platform.py)")
        }
        for key in fields.keys.sorted() {
            let value = fields[key]!
            guard eplbKeys.contains(key) else {
                throw refuse(
                    "eplb_config.\(key)",
                    "vllm-ascend's EplbConfig has no such key (known: \(eplbKeys.sorted().joined(separator: ", ")))")
            }
            let layoutKeys = ["dynamic_eplb", "expert_map_path", "expert_map_record_path", "num_redundant_experts"]
            if layoutKeys.contains(key), isSet(value) {
                throw refuse(
                    "eplb_config.\(key)",
                    "is \(value): vllm-ascend then places experts by a load-balancing table and/or adds redundant experts (eplb_utils.py init_eplb_config); only the default expert map is supported, EPLB and redundant experts are not yet"
                )
            }
        }
    }
}
