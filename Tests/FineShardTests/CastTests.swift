import Foundation
import Testing

@testable import FineShard
@testable import FineShardFormats
@testable import FineShardSystem

/// `shard --dtype bf16` (issue 18): the cast kernel, the plan's transforms, their lineage in the manifest
/// (verify recomputes them, readers refuse unknown kinds, the fingerprint keeps cast and uncast runs apart),
/// merge and forward-check on the tiny DeepSeek FP8 fixture, and byte-for-byte agreement with the numpy +
/// ml_dtypes reference (`scripts/interop/fp8_cast_ref.py`) on edge values.
@Suite("cast while sharding")
struct CastTests {
    static let fp8 = Environment.root + "/fixtures/tiny-deepseek-v3-fp8"
    /// o_proj cut over 8 DP ranks: shards 8 columns wide inside 16-wide FP8 blocks.
    static let straddling = ["--dp", "8", "--additional-config", #"{"finegrained_tp_config": {"oproj_tensor_parallel_size": 8}}"#]

    func plan(_ arguments: [String], source: String = fp8) throws -> ShardPlan {
        let checkpoint = try Checkpoint.open(source)
        var dp = 1
        var tp = 1
        var dtype: ParallelConfig.OutputDType?
        var castFloats = false
        var finegrained = FineGrainedConfig()
        var i = 0
        while i < arguments.count {
            switch arguments[i] {
            case "--dp": dp = Int(arguments[i + 1])!
            case "--tp": tp = Int(arguments[i + 1])!
            case "--dtype": dtype = .bf16
            case "--cast-floats":
                castFloats = true
                i -= 1
            case "--additional-config": finegrained = try AdditionalConfig.parse(arguments[i + 1]).finegrained
            default: throw TestFailure("unknown \(arguments[i])")
            }
            i += 2
        }
        let parallel = ParallelConfig(dp: dp, tp: tp, finegrained: finegrained, dtype: dtype, castFloats: castFloats)
        return try ShardPlan.make(checkpoint, parallel: parallel)
    }

    // MARK: - Kernel

    @Test("The arithmetic FP8 decode equals the reference decode for all 256 bytes")
    func e4m3DecodeMatches() {
        for b in 0...255 {
            let fast = BF16Cast.e4m3(UInt8(b))
            let slow = DType.e4m3ToFloat(UInt8(b))
            if slow.isNaN {
                #expect(fast.isNaN && fast.sign == slow.sign, "byte \(b)")
            } else {
                #expect(fast.bitPattern == slow.bitPattern, "byte \(b): \(fast) vs \(slow)")
            }
        }
    }

    @Test("BF16 rounding is to nearest even, keeps subnormals and infinities, and makes NaN a signed quiet NaN")
    func bf16Rounding() {
        #expect(BF16Cast.bits(1.0) == 0x3F80)
        #expect(BF16Cast.bits(Float(bitPattern: 0x3F80_8000)) == 0x3F80)  // tie, even below
        #expect(BF16Cast.bits(Float(bitPattern: 0x3F81_8000)) == 0x3F82)  // tie, even above
        #expect(BF16Cast.bits(Float(bitPattern: 0x3F80_8001)) == 0x3F81)
        #expect(BF16Cast.bits(-0.0) == 0x8000)
        #expect(BF16Cast.bits(Float(bitPattern: 0x0001_8000)) == 0x0002)  // subnormal tie rounds to even
        #expect(BF16Cast.bits(.greatestFiniteMagnitude) == 0x7F80)  // rounds up to infinity
        #expect(BF16Cast.bits(-.infinity) == 0xFF80)
        #expect(BF16Cast.bits(Float(bitPattern: 0x7F80_0001)) == 0x7FC0)  // a signalling NaN stays NaN
        #expect(BF16Cast.bits(Float(bitPattern: 0xFFC1_2345)) == 0xFFC0)
    }

    @Test("A region that starts and ends inside blocks uses each block's scale")
    func partialBlocks() {
        let (rows, cols, block) = (7, 11, (rows: 4, cols: 3))
        let origin = (row: 5, col: 2)
        let weight = (0..<rows * cols).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) & 0x77 }
        // Blocks rows 1...2, cols 0...4 cover rows 5..<12 and cols 2..<13.
        let scales: [Float] = (0..<3 * 5).map { Float($0 + 1) * 0.125 }
        var out = [UInt16](repeating: 0, count: rows * cols)
        weight.withUnsafeBytes { w in
            scales.withUnsafeBufferPointer { s in
                out.withUnsafeMutableBytes {
                    BF16Cast.dequantizeFP8Blocks(
                        w, rows: rows, cols: cols, origin: origin, block: block, scales: s, scaleColumns: 5, into: $0)
                }
            }
        }
        for r in 0..<rows {
            for c in 0..<cols {
                let scale = scales[((origin.row + r) / 4 - 1) * 5 + (origin.col + c) / 3]
                #expect(out[r * cols + c] == BF16Cast.bits(DType.e4m3ToFloat(weight[r * cols + c]) * scale), "[\(r), \(c)]")
            }
        }
    }

    // MARK: - Plan

    @Test("--dtype bf16 writes FP8 weights as BF16 with a transform naming their scale, and no scales")
    func planTransforms() throws {
        let p = try plan(["--tp", "2", "--dtype", "bf16"])
        let tensors = (0..<2).flatMap { p.rank($0).tensors }
        #expect(!tensors.contains { $0.name.hasSuffix("_scale_inv") })
        let oProj = try #require(tensors.first { $0.name == "model.layers.0.self_attn.o_proj.weight" })
        #expect(oProj.dtype == .bf16)
        #expect(
            oProj.pieces.allSatisfy {
                $0.transform
                    == .fp8BlockDequant(
                        from: .f8e4m3, scale: "model.layers.0.self_attn.o_proj.weight_scale_inv", scaleDType: .f32, block: [16, 16])
            })
        // Everything else keeps its dtype (BF16 norms, the F32 router bias).
        let bias = try #require(tensors.first { $0.name.hasSuffix("e_score_correction_bias") })
        #expect(bias.dtype == .f32 && bias.pieces.allSatisfy { $0.transform == nil })
        #expect(p.dropsQuantizationConfig)
        #expect(try plan(["--tp", "2"]).fingerprint != p.fingerprint)
    }

    @Test("Cuts inside FP8 blocks are refused without the cast and planned with it")
    func straddlingCuts() throws {
        #expect(throws: PlanError.self) { try plan(Self.straddling) }
        let p = try plan(Self.straddling + ["--dtype", "bf16"])
        let piece = try #require(p.rank(1).tensors.first { $0.name == "model.layers.0.self_attn.o_proj.weight" }?.pieces.first)
        #expect(piece.region.ranges[1] == 8..<16)
    }

    @Test("--cast-floats needs --dtype bf16, and --dtype bf16 needs something to cast")
    func castOptionsAreChecked() throws {
        #expect(throws: PlanError.self) { try plan(["--cast-floats"]) }
        #expect(throws: PlanError.self) { try plan(["--dtype", "bf16"], source: Environment.root + "/fixtures/tiny-llama") }
        let floats = try plan(["--dtype", "bf16", "--cast-floats"])
        let bias = try #require(floats.rank(0).tensors.first { $0.name.hasSuffix("e_score_correction_bias") })
        #expect(bias.dtype == .f32)
    }

    // MARK: - Manifest

    @Test("config.json loses its top-level quantization_config and keeps every other byte")
    func configRewrite() throws {
        let middle = #"{"a": 1, "quantization_config": {"x": "}", "y": [1, {"z": 2}]}, "b": "q"}"#
        #expect(try ModelConfig.removingQuantizationConfig(Array(middle.utf8), file: "c") == Array(#"{"a": 1, "b": "q"}"#.utf8))
        let last = "{\n  \"a\": 1,\n  \"quantization_config\": {}\n}\n"
        #expect(try ModelConfig.removingQuantizationConfig(Array(last.utf8), file: "c") == Array("{\n  \"a\": 1\n}\n".utf8))
        #expect(try ModelConfig.removingQuantizationConfig(Array(#"{"q": {"quantization_config": 1}}"#.utf8), file: "c") == nil)
        #expect(throws: ModelError.self) { try ModelConfig.removingQuantizationConfig(Array("[1]".utf8), file: "c") }
    }

    @Test("Every reader refuses a transform kind it does not know, naming it (exit 2)")
    func unknownTransformIsRefused() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        let shard = try run(fineshardBinary, ["shard", Self.fp8, "-o", out, "--quiet", "--dtype", "bf16", "--ranks", "0"])
        #expect(shard.status == 0, "\(shard.stderr)")
        let partial = out + "/manifest.ranks-0-0.json"
        let text = try String(contentsOfFile: partial, encoding: .utf8)
        try text.replacingOccurrences(of: "\"fp8_block_dequant\"", with: "\"fp4_unpack\"").write(
            toFile: partial, atomically: true, encoding: .utf8)
        for arguments in [["verify", out], ["manifest", "combine", out], ["merge", out, "-o", dir.file("dense")]] {
            let result = try run(fineshardBinary, arguments)
            #expect(result.status == 2 && result.stderr.contains("fp4_unpack"), "\(arguments): \(result.status) \(result.stderr)")
        }
        if let python = Environment.python {
            let check = try run(python, [Environment.root + "/scripts/interop/check_shards.py", out, Self.fp8])
            #expect(check.status == 2 && check.stderr.contains("fp4_unpack"), "\(check.stderr)")
        }
    }

    @Test("--resume refuses an output folder written without the cast, naming --dtype")
    func resumeNeverMixes() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        #expect(try run(fineshardBinary, ["shard", Self.fp8, "-o", out, "--quiet", "--tp", "2"]).status == 0)
        let resume = try run(fineshardBinary, ["shard", Self.fp8, "-o", out, "--quiet", "--tp", "2", "--dtype", "bf16", "--resume"])
        #expect(resume.status == 2 && resume.stderr.contains("--dtype"), "\(resume.stderr)")
    }

    // MARK: - End to end

    @Test("The cast shards verify, forward-check against the dequantized source, merge back, and catch a wrong value")
    func tinyDeepSeekEndToEnd() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        let shard = try run(fineshardBinary, ["shard", Self.fp8, "-o", out, "--quiet", "--dtype", "bf16"] + Self.straddling)
        #expect(shard.status == 0, "\(shard.stderr)")
        let config = try String(contentsOfFile: out + "/config.json", encoding: .utf8)
        #expect(!config.contains("quantization_config") && config.contains("\"kv_lora_rank\": 32"))
        let verify = try run(fineshardBinary, ["verify", out, "--source", Self.fp8])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
        let check = try run(fineshardBinary, ["forward-check", out, "--source", Self.fp8, "--tokens-per-rank", "4"])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        let dense = dir.file("dense")
        #expect(try run(fineshardBinary, ["merge", out, "-o", dense]).status == 0)
        let merged = try Checkpoint.open(dense)
        #expect(!merged.tensors.contains { $0.name.hasSuffix("_scale_inv") })
        #expect(try merged.tensor("model.layers.0.self_attn.o_proj.weight").dtype == .bf16)
        #expect(try merged.tensor("model.layers.1.mlp.gate.e_score_correction_bias").dtype == .f32)
        if Environment.python != nil { try expectReferenceTensors(dense, source: Self.fp8) }

        // One BF16 value off by one ulp, with the file's hash updated: only recomputing the cast finds it.
        let manifest = try Manifest.read(out + "/manifest.json")
        let rank = manifest.ranks[3]
        let tensor = try #require(rank.tensors.first { $0.name == "model.layers.0.self_attn.o_proj.weight" })
        try ForwardCheckTests().alter(out, tensor.file, tensor.name) { bytes in
            var b = bytes
            b[2] ^= 1
            return b
        }
        let file = out + "/" + tensor.file
        let hash = sha256(of: Array(try Data(contentsOf: URL(fileURLWithPath: file))))
        var json = try String(contentsOfFile: out + "/manifest.json", encoding: .utf8)
        let old = try #require(rank.files.first { $0.name == tensor.file }?.sha256)
        json = json.replacingOccurrences(of: old, with: hash)
        try json.write(toFile: out + "/manifest.json", atomically: true, encoding: .utf8)
        let broken = try run(fineshardBinary, ["verify", out, "--source", Self.fp8, "--json"])
        #expect(broken.status == 1 && broken.stdout.contains("tensor_bytes") && broken.stdout.contains("o_proj"), "\(broken.stdout)")
    }

    @Test(
        "Edge values (every FP8 byte, partial and straddled blocks, overflowing and subnormal products) match the numpy reference byte for byte",
        .enabled(if: Environment.python != nil, "needs FINESHARD_PYTHON"))
    func edgeValuesMatchTheReference() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let edge = dir.file("edge")
        let make = try run(Environment.python!, [Environment.root + "/scripts/interop/fp8_cast_ref.py", "make-edge", Self.fp8, edge])
        #expect(make.status == 0, "\(make.stderr)")
        for (name, arguments) in [("tp2", ["--tp", "2"]), ("vllm", ["--tp", "2", "--layout", "vllm"]), ("o_proj8", Self.straddling)] {
            let out = dir.file(name)
            let shard = try run(fineshardBinary, ["shard", edge, "-o", out, "--quiet", "--dtype", "bf16"] + arguments)
            #expect(shard.status == 0, "\(name): \(shard.stderr)")
            let check = try run(Environment.python!, [Environment.root + "/scripts/interop/check_shards.py", out, edge])
            #expect(check.status == 0, "\(name): \(check.stderr)")
            let verify = try run(fineshardBinary, ["verify", out, "--source", edge])
            #expect(verify.status == 0, "\(name): \(verify.stdout)\(verify.stderr)")
        }
        let dense = dir.file("dense")
        #expect(try run(fineshardBinary, ["merge", dir.file("o_proj8"), "-o", dense]).status == 0)
        try expectReferenceTensors(dense, source: edge)
    }

    @Test(
        "--cast-floats casts F32 and F16 weights to BF16, as the reference does, and the dense pass agrees",
        .enabled(if: Environment.python != nil, "needs FINESHARD_PYTHON"))
    func floatsAreCast() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let source = dir.file("f32")
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Environment.root + "/fixtures/tiny-llama/config.json", toPath: source + "/config.json")
        let script = """
            import glob, sys, numpy as np, ml_dtypes
            from safetensors import safe_open
            from safetensors.numpy import save_file
            d = {}
            for f in glob.glob(sys.argv[1] + "/*.safetensors"):
                h = safe_open(f, "numpy")
                for k in h.keys():
                    t = h.get_tensor(k).astype(np.float32)
                    d[k] = t.astype(np.float16) if "norm" in k else t
            save_file(d, sys.argv[2] + "/model.safetensors")
            """
        let make = try run(Environment.python!, ["-c", script, Environment.root + "/fixtures/tiny-llama", source])
        #expect(make.status == 0, "\(make.stderr)")
        let out = dir.file("out")
        let shard = try run(fineshardBinary, ["shard", source, "-o", out, "--quiet", "--tp", "2", "--dtype", "bf16", "--cast-floats"])
        #expect(shard.status == 0, "\(shard.stderr)")
        let manifest = try Manifest.read(out + "/manifest.json")
        #expect(manifest.ranks.allSatisfy { $0.tensors.allSatisfy { $0.dtype == .bf16 && $0.pieces.allSatisfy { $0.transform != nil } } })
        let check = try run(Environment.python!, [Environment.root + "/scripts/interop/check_shards.py", out, source])
        #expect(check.status == 0, "\(check.stderr)")
        #expect(try run(fineshardBinary, ["verify", out, "--source", source]).status == 0)
        #expect(try run(fineshardBinary, ["forward-check", out, "--source", source, "--tokens-per-rank", "4"]).status == 0)
    }

    /// `merge`'s dense checkpoint holds exactly the tensors `fp8_cast_bf16.py` would write (the numpy reference).
    func expectReferenceTensors(_ dense: String, source: String) throws {
        let expected = try runPython("fp8_cast_ref.py", ["tensors", source])["tensors"] as! [String: [String: Any]]
        let got = try runPython("st_read.py", [dense])["tensors"] as! [String: [String: Any]]
        #expect(Set(expected.keys) == Set(got.keys))
        for (name, e) in expected {
            #expect(
                got[name]?["sha256"] as? String == e["sha256"] as? String && got[name]?["dtype"] as? String == e["dtype"] as? String,
                "\(name)")
        }
    }
}
