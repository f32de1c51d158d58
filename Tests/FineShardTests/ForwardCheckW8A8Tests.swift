import Foundation
import Testing

@testable import FineShard

/// `forward-check` on int8 W8A8 checkpoints (Ascend / msModelSlim per-channel weight quantization):
/// the I8 attention and MLP weights are dequantized with their `weight_scale` / `weight_offset`, the
/// dense pass from the source and the sharded pass from each rank's own parameter shards.
@Suite("forward-check W8A8")
struct ForwardCheckW8A8Tests {
    static let hasPython = Environment.python != nil
    let base = ForwardCheckTests()

    /// A synthetic W8A8 Llama: I8 q/k/v/o/gate/up/down `[out, in]` with F32 `weight_scale` and
    /// `weight_offset` `[out, 1]`, plus (with `activationParams`) the per-tensor `input_scale` /
    /// `input_offset` `[1]` that forward-check ignores; bf16 embeddings, norms and lm_head.
    func makeW8A8Llama(
        in dir: String, heads: Int = 8, kvHeads: Int = 2, headDim: Int = 8, hidden: Int = 64, intermediate: Int = 96,
        vocab: Int = 130, layers: Int = 2, activationParams: Bool = true, seed: UInt64 = 11
    ) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var specs: [TensorSpec] = [
            TensorSpec(name: "model.embed_tokens.weight", dtype: .bf16, shape: [vocab, hidden]),
            TensorSpec(name: "lm_head.weight", dtype: .bf16, shape: [vocab, hidden]),
            TensorSpec(name: "model.norm.weight", dtype: .bf16, shape: [hidden]),
        ]
        for l in 0..<layers {
            let p = "model.layers.\(l)."
            specs += [
                TensorSpec(name: p + "input_layernorm.weight", dtype: .bf16, shape: [hidden]),
                TensorSpec(name: p + "post_attention_layernorm.weight", dtype: .bf16, shape: [hidden]),
            ]
            let linears: [(String, Int, Int)] = [
                ("self_attn.q_proj", heads * headDim, hidden), ("self_attn.k_proj", kvHeads * headDim, hidden),
                ("self_attn.v_proj", kvHeads * headDim, hidden), ("self_attn.o_proj", hidden, heads * headDim),
                ("mlp.gate_proj", intermediate, hidden), ("mlp.up_proj", intermediate, hidden), ("mlp.down_proj", hidden, intermediate),
            ]
            for (module, out, inFeatures) in linears {
                specs += [
                    TensorSpec(name: p + module + ".weight", dtype: .i8, shape: [out, inFeatures]),
                    TensorSpec(name: p + module + ".weight_scale", dtype: .f32, shape: [out, 1]),
                    TensorSpec(name: p + module + ".weight_offset", dtype: .f32, shape: [out, 1]),
                ]
                if activationParams {
                    specs += [
                        TensorSpec(name: p + module + ".input_scale", dtype: .f32, shape: [1]),
                        TensorSpec(name: p + module + ".input_offset", dtype: .f32, shape: [1]),
                    ]
                }
            }
        }
        var g = SeededGenerator(seed: seed)
        let tensors = specs.map { spec -> (TensorSpec, [UInt8]) in
            let count = spec.shape.reduce(1, *)
            switch spec.dtype {
            case .i8:
                return (spec, (0..<count).map { _ in UInt8(bitPattern: Int8.random(in: -127...127, using: &g)) })
            case .f32:
                let values: [Float] = (0..<count).map { _ in
                    if spec.name.hasSuffix(".weight_scale") { return 0.08 / 127 * Float.random(in: 0.5...1.5, using: &g) }
                    if spec.name.hasSuffix(".weight_offset") { return Float(Int.random(in: -4...4, using: &g)) }
                    // input_scale / input_offset: values no float reference should use.
                    return spec.name.hasSuffix(".input_scale") ? 1e3 : 77
                }
                return (spec, values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) })
            default:
                return (
                    spec,
                    (0..<count).flatMap { _ -> [UInt8] in
                        let value: Float =
                            spec.name.hasSuffix("norm.weight")
                            ? 1 + Float.random(in: -0.1...0.1, using: &g) : Float.random(in: -0.08...0.08, using: &g)
                        let bits = UInt16(value.bitPattern >> 16)
                        return [UInt8(bits & 0xFF), UInt8(bits >> 8)]
                    }
                )
            }
        }
        try writeSafetensors((dir as NSString).appendingPathComponent("model.safetensors"), tensors, metadata: ["format": "pt"])
        let config: [String: Any] = [
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden, "intermediate_size": intermediate,
            "num_attention_heads": heads, "num_key_value_heads": kvHeads, "head_dim": headDim, "num_hidden_layers": layers,
            "vocab_size": vocab, "tie_word_embeddings": false, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_act": "silu",
            "max_position_embeddings": 64,
        ]
        try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys, .prettyPrinted])
            .write(to: URL(fileURLWithPath: (dir as NSString).appendingPathComponent("config.json")))
    }

    /// Multiplies every float32 of a tensor's bytes by `factor`.
    static func scaled(_ bytes: [UInt8], by factor: Float) -> [UInt8] {
        stride(from: 0, to: bytes.count, by: 4).flatMap { i -> [UInt8] in
            let bits = UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2]) << 16 | UInt32(bytes[i + 3]) << 24
            return withUnsafeBytes(of: (Float(bitPattern: bits) * factor).bitPattern.littleEndian, Array.init)
        }
    }

    // MARK: - Dense against numpy

    @Test("the dense W8A8 logits match the numpy reference (w = (q − offset) · scale)", .enabled(if: hasPython))
    func denseMatchesNumpy() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        try makeW8A8Llama(in: dir.file("w8a8"))
        try base.shard(dir.file("w8a8"), dir.file("out"), ["--dp", "2", "--tp", "2"])
        try base.expectMatchesReference(dir.file("out"), source: dir.file("w8a8"), tokens: "1,2,3,4,5,6,7,8;129,0,64,17")
    }

    // MARK: - Sharded against dense

    static let configurations: [(String, [String], Bool)] = [
        ("pure TP 2", ["--dp", "1", "--tp", "2"], true),
        ("all-DP 4, every fine-grained size 2", ["--dp", "4", "--additional-config", ForwardCheckTests.everyComponent(2)], true),
        ("all-DP 4, every fine-grained size 4", ["--dp", "4", "--additional-config", ForwardCheckTests.everyComponent(4)], true),
        ("DP 2 × TP 2 with fine-grained MLP 2", ["--dp", "2", "--tp", "2", "--additional-config", finegrained(mlp: 2)], true),
        ("vllm layout, DP 2 × TP 4 (kv heads replicated)", ["--dp", "2", "--tp", "4", "--layout", "vllm"], false),
        (
            "vllm layout, all-DP 4 with fine-grained o_proj 2 and MLP 4",
            ["--dp", "4", "--layout", "vllm", "--additional-config", finegrained(oProj: 2, mlp: 4)], false
        ),
    ]

    @Test("every rank's logits match the dense ones", arguments: configurations)
    func shardedMatchesDense(_ name: String, _ arguments: [String], _ activationParams: Bool) throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        try makeW8A8Llama(in: dir.file("w8a8"), activationParams: activationParams)
        try base.shard(dir.file("w8a8"), dir.file("out"), arguments)
        let (status, report, stderr) = try base.forwardCheck(dir.file("out"), source: dir.file("w8a8"), ["--seed", "5"])
        #expect(status == 0, "\(name): \(stderr) \(report?.failures ?? [])")
        let r = try #require(report)
        #expect(r.ok && r.ranks.count == r.dp * r.tp)
        for rank in r.ranks {
            #expect(rank.passed && rank.maxRelError < 1e-5 && rank.top1Agreement == rank.positions)
            #expect(rank.denseTop5.map(\.id) == rank.shardedTop5.map(\.id))
        }
    }

    // MARK: - Teeth

    @Test("a column-parallel weight_scale shard scaled by 1.5 on one rank fails its TP group")
    func columnScaleAltered() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let (source, out) = (dir.file("w8a8"), dir.file("out"))
        try makeW8A8Llama(in: source)
        try base.shard(source, out, ["--dp", "2", "--tp", "2"])
        try base.alter(out, base.file(3), "model.layers.0.mlp.up_proj.weight_scale") { Self.scaled($0, by: 1.5) }
        try base.expectCaught(out, source: source, ranks: [2, 3])
    }

    @Test("the k_proj weight_scale shards of the two ranks of a TP group swapped fail that group")
    func columnScalesSwapped() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let (source, out) = (dir.file("w8a8"), dir.file("out"))
        try makeW8A8Llama(in: source)
        try base.shard(source, out, ["--dp", "1", "--tp", "2"])
        let tensor = "model.layers.1.self_attn.k_proj.weight_scale"
        let (a, b) = (try base.tensorBytes(out, base.file(0), tensor), try base.tensorBytes(out, base.file(1), tensor))
        try base.alter(out, base.file(0), tensor) { _ in b }
        try base.alter(out, base.file(1), tensor) { _ in a }
        try base.expectCaught(out, source: source, ranks: [0, 1])
    }

    @Test("a row-parallel (o_proj) weight_scale altered on one rank of a fine-grained o_proj group fails that group")
    func rowScaleAltered() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let (source, out) = (dir.file("w8a8"), dir.file("out"))
        try makeW8A8Llama(in: source)
        try base.shard(source, out, ["--dp", "4", "--additional-config", finegrained(oProj: 2)])
        try base.alter(out, base.file(1), "model.layers.1.self_attn.o_proj.weight_scale") { Self.scaled($0, by: 1.5) }
        try base.expectCaught(out, source: source, ranks: [0, 1])
    }

    @Test("the vllm layout's fused qkv_proj weight_scale altered on one rank fails its TP group")
    func fusedScaleAltered() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let (source, out) = (dir.file("w8a8"), dir.file("out"))
        try makeW8A8Llama(in: source, activationParams: false)
        try base.shard(source, out, ["--dp", "2", "--tp", "2", "--layout", "vllm"])
        try base.alter(out, base.file(0), "model.layers.0.self_attn.qkv_proj.weight_scale") { Self.scaled($0, by: 1.5) }
        try base.expectCaught(out, source: source, ranks: [0, 1])
    }

    // MARK: - Not supported

    @Test("an I8 weight without its weight_scale is not supported: exit 2 naming it")
    func int8WithoutScale() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        try makeW8A8Llama(in: dir.file("w8a8"), layers: 1, activationParams: false)
        // The same checkpoint without q_proj's scale and offset.
        let source = dir.file("noscale")
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: dir.file("w8a8/config.json"), toPath: dir.file("noscale/config.json"))
        let checkpoint = try Checkpoint.open(dir.file("w8a8"))
        let kept = checkpoint.tensors.filter { !$0.name.hasPrefix("model.layers.0.self_attn.q_proj.weight_") }
        let contents = try kept.map { (TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape), try readAll(checkpoint, $0.name)) }
        try writeSafetensors(dir.file("noscale/model.safetensors"), contents)
        try base.shard(source, dir.file("out"), ["--dp", "1", "--tp", "2"])
        let (status, text) = try base.forwardCheckText(dir.file("out"), source: source)
        #expect(status == 2, "\(text)")
        #expect(text.contains("model.layers.0.self_attn.q_proj.weight") && text.contains("weight_scale"), "\(text)")
    }
}
