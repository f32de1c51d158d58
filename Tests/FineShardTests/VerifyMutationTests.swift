import Crypto
import Foundation
import Testing

@testable import FineShard

/// Mutation tests for `verify` (issue 5): shard the fixture (or a small tied model built here),
/// alter the output the way real converters get it wrong, and check that `verify` fails with a
/// message that points at the cause. Mutations that keep every file's size and SHA-256 in the
/// manifest right (the hashes are rewritten) can only be caught by `verify --source`.
@Suite("verify mutations")
struct VerifyMutationTests {
    static let fixture = Environment.root + "/fixtures/tiny-llama"
    /// Bytes of one row of a [*, 64] bf16 tensor.
    static let rowBytes = 64 * 2

    // MARK: - Positive controls

    @Test("verify and verify --source pass on untouched output of the hf layout with fine-grained sizes")
    func untouchedHF() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        try shard(
            Self.fixture, out,
            [
                "--dp", "4", "--tp", "2", "--additional-config",
                #"{"finegrained_tp_config": {"embedding_tensor_parallel_size": 2, "lmhead_tensor_parallel_size": 4, "mlp_tensor_parallel_size": 2}}"#,
            ])
        try expectPasses(out)
    }

    @Test("verify and verify --source pass on untouched output of the vllm layout")
    func untouchedVLLM() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        try shard(Self.fixture, out, ["--dp", "2", "--tp", "4", "--layout", "vllm"])
        try expectPasses(out)
    }

    @Test("verify and verify --source pass on untouched hdf5 output")
    func untouchedHDF5() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        try shard(Self.fixture, out, ["--dp", "1", "--tp", "4", "--format", "hdf5"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: out).contains { $0.hasSuffix(".h5") || $0.hasSuffix(".hdf5") })
        try expectPasses(out)
    }

    @Test("verify --source passes on untouched output of a tied model whose lm_head and embedding group sizes differ")
    func untouchedTiedDifferentGroups() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let source = try makeTiedModel(dir.file("tied"))
        // Embedding group 2 and lm_head group 4 both cut the one source table model.embed_tokens.weight:
        // rank 1 holds embedding rows [512, 1024) and lm_head rows [256, 512). Each family tiles the
        // table on its own; together they overlap, and that is right.
        let out = dir.file("out")
        try shard(source, out, ["--dp", "4", "--additional-config", Self.tiedConfig])
        try expectPasses(out, source: source)
        // The same with the lm_head whole (group 0, TP 1) against an embedding group of 2.
        let whole = dir.file("whole")
        try shard(
            source, whole, ["--dp", "4", "--additional-config", #"{"finegrained_tp_config": {"embedding_tensor_parallel_size": 2}}"#])
        try expectPasses(whole, source: source)
    }

    @Test("verify and verify --source pass on untouched output of a tied model in both layouts with equal group sizes")
    func untouchedTiedEqualGroups() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let source = try makeTiedModel(dir.file("tied"))
        for layout in ["hf", "vllm"] {
            let out = dir.file("out-\(layout)")
            try shard(source, out, ["--dp", "4", "--layout", layout, "--additional-config", Self.tiedEqualConfig])
            try expectPasses(out, source: source)
        }
    }

    // MARK: - File-level mutations (hash check, no source needed)

    @Test("one byte flipped in a shard file is reported as altered, naming the rank and file")
    func byteFlipped() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        try shard(Self.fixture, out, ["--dp", "1", "--tp", "2"])
        let file = "model-rank-1-part-0.safetensors"
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: (out as NSString).appendingPathComponent(file)))
        try handle.seek(toOffset: 5000)
        let byte = try handle.read(upToCount: 1)![0]
        try handle.seek(toOffset: 5000)
        try handle.write(contentsOf: [byte ^ 0x01])
        try handle.close()

        let text = try run(fineshardBinary, ["verify", out, "--quiet"])
        #expect(text.status == 1)
        #expect(text.stdout.contains("DIFFERENCE: rank 1 file \(file)"))
        #expect(text.stdout.contains("(altered)"))

        let (status, differences) = try verifyJSON(out)
        #expect(status == 1)
        #expect(differences.count == 1)
        #expect(differences.first?.kind == .alteredFile)
        #expect(differences.first?.rank == 1)
        #expect(differences.first?.file == file)
        #expect(differences.first?.message.contains("altered") == true)

        // With the source the altered file is still named; what it holds is not trusted further.
        let (sourceStatus, sourceDifferences) = try verifyJSON(out, source: Self.fixture)
        #expect(sourceStatus == 1)
        #expect(sourceDifferences.contains { $0.kind == .alteredFile && $0.file == file && $0.rank == 1 })
    }

    @Test("one byte flipped in an hdf5 shard file is reported as altered")
    func byteFlippedHDF5() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        try shard(Self.fixture, out, ["--dp", "1", "--tp", "2", "--format", "hdf5"])
        let manifest = try Manifest.read((out as NSString).appendingPathComponent(Manifest.fileName))
        let file = manifest.ranks[0].files[0]
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: (out as NSString).appendingPathComponent(file.name)))
        let at = UInt64(file.bytes - 100)
        try handle.seek(toOffset: at)
        let byte = try handle.read(upToCount: 1)![0]
        try handle.seek(toOffset: at)
        try handle.write(contentsOf: [byte ^ 0x80])
        try handle.close()
        let (status, differences) = try verifyJSON(out)
        #expect(status == 1)
        #expect(differences.map(\.kind) == [.alteredFile])
        #expect(differences.first?.file == file.name && differences.first?.rank == 0)
    }

    @Test("a byte flipped in a copied non-weight file is reported as altered")
    func copiedFileAltered() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        try shard(Self.fixture, out, ["--dp", "1", "--tp", "2"])
        let path = (out as NSString).appendingPathComponent("generation_config.json")
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[bytes.count / 2] ^= 0x20
        try bytes.write(to: URL(fileURLWithPath: path))
        let (status, differences) = try verifyJSON(out)
        #expect(status == 1)
        #expect(differences.count == 1)
        #expect(differences.first?.kind == .alteredFile)
        #expect(differences.first?.file == "generation_config.json")
        #expect(differences.first?.message.contains("copied file generation_config.json") == true)
    }

    @Test("a truncated shard file is reported as truncated with both sizes")
    func truncated() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        try shard(Self.fixture, out, ["--dp", "2", "--tp", "2"])
        let file = "model-rank-3-part-0.safetensors"
        let path = (out as NSString).appendingPathComponent(file)
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: UInt64(size - 1000))
        try handle.close()

        let text = try run(fineshardBinary, ["verify", out, "--quiet"])
        #expect(text.status == 1)
        #expect(text.stdout.contains("rank 3 file \(file) has \(size - 1000) bytes, the manifest says \(size) (truncated)"))

        let (status, differences) = try verifyJSON(out, source: Self.fixture)
        #expect(status == 1)
        #expect(differences.contains { $0.kind == .truncatedFile && $0.rank == 3 && $0.file == file })
        // Reassembly skips the broken file instead of failing on its short data.
        #expect(!differences.contains { $0.kind == .unreadableShard })
    }

    @Test("an extra file in the output folder is reported as extra, while fineshard's own temporary files are not")
    func extraFile() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        try shard(Self.fixture, out, ["--dp", "1", "--tp", "2"])
        func write(_ name: String, _ bytes: [UInt8]) throws {
            let full = (out as NSString).appendingPathComponent(name)
            try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data(bytes).write(to: URL(fileURLWithPath: full))
        }
        try write("model-rank-2-part-0.safetensors", [1, 2, 3])
        try write("nested/notes.txt", Array("stray".utf8))
        try write("model-rank-0-part-0.safetensors.fineshard-tmp", [0])

        let text = try run(fineshardBinary, ["verify", out, "--quiet"])
        #expect(text.status == 1)
        #expect(text.stdout.contains("model-rank-2-part-0.safetensors is in the folder but in no manifest (extra)"))

        let (status, differences) = try verifyJSON(out)
        #expect(status == 1)
        #expect(differences.map(\.kind) == [.extraFile, .extraFile])
        #expect(Set(differences.compactMap(\.file)) == ["model-rank-2-part-0.safetensors", "nested/notes.txt"])
    }

    @Test("a missing shard file is reported as missing, naming the rank and file")
    func missingFile() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        try shard(Self.fixture, out, ["--dp", "1", "--tp", "4"])
        let file = "model-rank-2-part-0.safetensors"
        try FileManager.default.removeItem(atPath: (out as NSString).appendingPathComponent(file))

        let text = try run(fineshardBinary, ["verify", out, "--quiet"])
        #expect(text.status == 1)
        #expect(text.stdout.contains("DIFFERENCE: rank 2 file \(file) is missing"))

        let (status, differences) = try verifyJSON(out, source: Self.fixture)
        #expect(status == 1)
        #expect(differences.contains { $0.kind == .missingFile && $0.rank == 2 && $0.file == file })
    }

    @Test("a missing copied file is reported as missing")
    func missingCopiedFile() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        try shard(Self.fixture, out, ["--dp", "1", "--tp", "2"])
        try FileManager.default.removeItem(atPath: (out as NSString).appendingPathComponent("config.json"))
        let (status, differences) = try verifyJSON(out)
        #expect(status == 1)
        #expect(differences.map(\.kind) == [.missingFile])
        #expect(differences.first?.message == "copied file config.json is missing")
    }

    // MARK: - Content mutations with hashes rewritten (only reassembly catches them)

    @Test("a kv head given to the wrong rank is caught only by reassembly, naming rank, file, tensor and offset")
    func kvHeadOnWrongRank() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        // TP 4 over 2 kv heads: ranks 0 and 1 hold kv head 0, ranks 2 and 3 hold kv head 1.
        try shard(Self.fixture, out, ["--dp", "1", "--tp", "4"])
        let tensor = "model.layers.1.self_attn.k_proj.weight"
        let head0 = try readTensor(out: out, file: "model-rank-0-part-0.safetensors", tensor: tensor)
        let file = "model-rank-2-part-0.safetensors"
        let offset = try mutateTensor(out: out, file: file, tensor: tensor) { _ in head0 }

        try expectHashCheckPasses(out)
        let (status, differences) = try verifyJSON(out, source: Self.fixture)
        #expect(status == 1)
        #expect(differences.count == 1)
        let d = try #require(differences.first)
        #expect(d.kind == .tensorBytes)
        #expect(d.rank == 2 && d.file == file && d.tensor == tensor)
        #expect(d.offset == offset)
        #expect(d.message.contains("source tensor '\(tensor)' differs in rank 2 \(file), tensor '\(tensor)'"))
        #expect(d.message.contains("file offset \(offset)"))
    }

    @Test("a kv head given to the wrong rank in the fused qkv_proj is caught by reassembly")
    func kvHeadOnWrongRankFused() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        try shard(Self.fixture, out, ["--dp", "1", "--tp", "4", "--layout", "vllm"])
        // qkv_proj per rank: [q (1 head, 16 rows); k (16 rows); v (16 rows)] × 64.
        let tensor = "model.layers.0.self_attn.qkv_proj.weight"
        let rank0 = try readTensor(out: out, file: "model-rank-0-part-0.safetensors", tensor: tensor)
        let file = "model-rank-3-part-0.safetensors"
        let vRows = 32 * Self.rowBytes..<48 * Self.rowBytes
        let offset = try mutateTensor(out: out, file: file, tensor: tensor) { bytes in
            var b = bytes
            b.replaceSubrange(vRows, with: rank0[vRows])
            return b
        }
        try expectHashCheckPasses(out)
        let (status, differences) = try verifyJSON(out, source: Self.fixture)
        #expect(status == 1)
        let d = try #require(differences.first { $0.kind == .tensorBytes })
        #expect(d.rank == 3 && d.file == file && d.tensor == tensor && d.offset == offset)
        #expect(d.message.contains("source tensor 'model.layers.0.self_attn.v_proj.weight'"))
        #expect(differences.allSatisfy { $0.rank == 3 })
    }

    @Test("a vocab range off by one row is caught by reassembly, naming the rank and the embedding")
    func vocabOffByOne() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        try shard(Self.fixture, out, ["--dp", "1", "--tp", "4"])
        let tensor = "model.embed_tokens.weight"
        let rank0 = try readTensor(out: out, file: "model-rank-0-part-0.safetensors", tensor: tensor)
        let file = "model-rank-1-part-0.safetensors"
        // The converter cut rows [255, 511) instead of [256, 512).
        let offset = try mutateTensor(out: out, file: file, tensor: tensor) { bytes in
            Array(rank0.suffix(Self.rowBytes)) + bytes.dropLast(Self.rowBytes)
        }
        try expectHashCheckPasses(out)
        let (status, differences) = try verifyJSON(out, source: Self.fixture)
        #expect(status == 1)
        #expect(differences.count == 1)
        let d = try #require(differences.first)
        #expect(d.kind == .tensorBytes && d.rank == 1 && d.file == file && d.tensor == tensor && d.offset == offset)
        #expect(d.message.contains("source index [256, "))
    }

    @Test("a vocab range off by one row in a fine-grained embedding group is caught by reassembly")
    func vocabOffByOneFineGrained() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        // DP 4, embedding group 2: ranks 0 and 2 hold rows [0, 512), ranks 1 and 3 rows [512, 1024).
        try shard(
            Self.fixture, out,
            [
                "--dp", "4", "--additional-config", #"{"finegrained_tp_config": {"embedding_tensor_parallel_size": 2}}"#,
            ])
        let tensor = "model.embed_tokens.weight"
        let file = "model-rank-3-part-0.safetensors"
        // Rows shifted up by one: [513, 1025) — the last real row moves into padding's place.
        let offset = try mutateTensor(out: out, file: file, tensor: tensor) { bytes in
            Array(bytes.dropFirst(Self.rowBytes)) + [UInt8](repeating: 0, count: Self.rowBytes)
        }
        try expectHashCheckPasses(out)
        let (status, differences) = try verifyJSON(out, source: Self.fixture)
        #expect(status == 1)
        let d = try #require(differences.first { $0.kind == .tensorBytes })
        #expect(d.rank == 3 && d.file == file && d.tensor == tensor && d.offset == offset)
        #expect(differences.allSatisfy { $0.rank == 3 })
    }

    @Test("non-zero padding in the last embedding shard is caught by reassembly, naming rank, tensor and row")
    func nonZeroPadding() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        // Vocab 1000 padded to 1024; rank 3 holds rows [768, 1024): 232 real rows, then 24 of padding.
        try shard(Self.fixture, out, ["--dp", "1", "--tp", "4"])
        let tensor = "model.embed_tokens.weight"
        let file = "model-rank-3-part-0.safetensors"
        try mutateTensor(out: out, file: file, tensor: tensor) { bytes in
            var b = bytes
            #expect(b[(232 * Self.rowBytes)...].allSatisfy { $0 == 0 })
            b[240 * Self.rowBytes + 2 * 5 + 1] = 0x3F
            return b
        }
        try expectHashCheckPasses(out)
        let (status, differences) = try verifyJSON(out, source: Self.fixture)
        #expect(status == 1)
        #expect(differences.count == 1)
        let d = try #require(differences.first)
        #expect(d.kind == .padding && d.rank == 3 && d.file == file && d.tensor == tensor)
        #expect(d.message.contains("non-zero padding element at [240, 5]"))
    }

    @Test("non-zero padding in a tied lm_head of the vllm layout is caught by reassembly")
    func nonZeroPaddingTiedVLLM() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let source = try makeTiedModel(dir.file("tied"))
        let out = dir.file("out")
        try shard(source, out, ["--dp", "4", "--layout", "vllm", "--additional-config", Self.tiedEqualConfig])
        let file = "model-rank-3-part-0.safetensors"
        // The vllm layout keeps one table for a tied head, lm_head.weight (rank 3: rows [512, 1024), 24 of padding).
        let tensor = "lm_head.weight"
        #expect(try tensorNames(out: out, file: file).filter { $0.contains("embed") || $0.contains("lm_head") } == [tensor])
        let shape = try tensorShape(out: out, file: file, tensor: tensor)
        try mutateTensor(out: out, file: file, tensor: tensor) { bytes in
            var b = bytes
            b[b.count - 1] = 0x01
            return b
        }
        try expectHashCheckPasses(out)
        let (status, differences) = try verifyJSON(out, source: source)
        #expect(status == 1)
        #expect(
            differences.contains {
                $0.kind == .padding && $0.rank == 3 && $0.tensor == tensor
                    && $0.message.contains("[\(shape[0] - 1), 63]")
            })
    }

    @Test("gate and up swapped in the fused gate_up_proj are caught by reassembly, naming the fused tensor")
    func gateUpSwapped() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        try shard(Self.fixture, out, ["--dp", "1", "--tp", "2", "--layout", "vllm"])
        let tensor = "model.layers.1.mlp.gate_up_proj.weight"
        let file = "model-rank-1-part-0.safetensors"
        #expect(try tensorShape(out: out, file: file, tensor: tensor) == [128, 64])
        let offset = try mutateTensor(out: out, file: file, tensor: tensor) { bytes in
            Array(bytes[(bytes.count / 2)...] + bytes[..<(bytes.count / 2)])
        }
        try expectHashCheckPasses(out)
        let (status, differences) = try verifyJSON(out, source: Self.fixture)
        #expect(status == 1)
        let gate = try #require(differences.first { $0.message.contains("source tensor 'model.layers.1.mlp.gate_proj.weight'") })
        let up = try #require(differences.first { $0.message.contains("source tensor 'model.layers.1.mlp.up_proj.weight'") })
        for d in [gate, up] {
            #expect(d.kind == .tensorBytes && d.rank == 1 && d.file == file && d.tensor == tensor)
        }
        #expect(gate.offset == offset)
        #expect(differences.count == 2)
    }

    @Test("a tied lm_head cut with the embedding's group size instead of its own is caught by reassembly")
    func tiedLMHeadWrongGroup() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let source = try makeTiedModel(dir.file("tied"))
        let out = dir.file("out")
        // DP 4, lm_head group 4 (rank r: rows [256r, 256r+256)), embedding group 2 (rank 1: [512, 1024)).
        try shard(source, out, ["--dp", "4", "--additional-config", Self.tiedConfig])
        let file = "model-rank-1-part-0.safetensors"
        let manifest = try Manifest.read((out as NSString).appendingPathComponent(Manifest.fileName))
        let head = try #require(manifest.ranks[1].tensors.first { $0.name == "lm_head.weight" })
        #expect(head.pieces.map(\.source) == ["model.embed_tokens.weight"])
        #expect(head.pieces.first?.region.ranges == [256..<512, 0..<64])
        // A group size of 2 puts rank 1 at [512, 1024): the first 256 rows of those are its embedding shard's.
        let groupOfTwo = try readTensor(out: out, file: file, tensor: "model.embed_tokens.weight")
        #expect(groupOfTwo.count == 512 * Self.rowBytes)
        let offset = try mutateTensor(out: out, file: file, tensor: "lm_head.weight") { _ in Array(groupOfTwo.prefix(256 * Self.rowBytes)) }
        try expectHashCheckPasses(out)
        let (status, differences) = try verifyJSON(out, source: source)
        #expect(status == 1)
        let d = try #require(differences.first { $0.kind == .tensorBytes })
        #expect(d.rank == 1 && d.file == file && d.tensor == "lm_head.weight" && d.offset == offset)
        // Nothing else differs (the untouched output of this configuration passes).
        #expect(differences.count == 1, "\(differences.map(\.message))")
        #expect(d.message.contains("source tensor 'model.embed_tokens.weight' differs in rank 1"))
    }

    @Test("a tied lm_head written with the wrong group size's shape is caught as a tensor mismatch")
    func tiedLMHeadWrongGroupShape() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let source = try makeTiedModel(dir.file("tied"))
        let out = dir.file("out")
        try shard(source, out, ["--dp", "4", "--additional-config", Self.tiedConfig])
        let file = "model-rank-1-part-0.safetensors"
        let path = (out as NSString).appendingPathComponent(file)
        // Rewrite the whole file with lm_head.weight as the [512, 64] cut of a group size of 2.
        let shardFile = try Checkpoint.open(path)
        let tensors = try shardFile.tensors.map { t -> (TensorSpec, [UInt8]) in
            if t.name == "lm_head.weight" {
                return (TensorSpec(name: t.name, dtype: t.dtype, shape: [512, 64]), try readAll(shardFile, "model.embed_tokens.weight"))
            }
            return (TensorSpec(name: t.name, dtype: t.dtype, shape: t.shape), try readAll(shardFile, t.name))
        }
        try FileManager.default.removeItem(atPath: path)
        try writeSafetensors(path, tensors, metadata: ["format": "pt"])
        try rewriteHash(out: out, file: file)
        try expectHashCheckPasses(out)

        let (status, differences) = try verifyJSON(out, source: source)
        #expect(status == 1)
        let d = try #require(differences.first { $0.kind == .tensorMismatch })
        #expect(d.kind == .tensorMismatch && d.rank == 1 && d.file == file && d.tensor == "lm_head.weight")
        #expect(d.message.contains("[512, 64]") && d.message.contains("[256, 64]"))
    }

    @Test("a replicated tensor that differs on one rank is caught by reassembly")
    func replicaDiffers() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        try shard(Self.fixture, out, ["--dp", "2", "--tp", "2"])
        let tensor = "model.norm.weight"
        let file = "model-rank-2-part-0.safetensors"
        let offset = try mutateTensor(out: out, file: file, tensor: tensor) { bytes in
            var b = bytes
            b[7] ^= 0x40
            return b
        }
        try expectHashCheckPasses(out)
        let (status, differences) = try verifyJSON(out, source: Self.fixture)
        #expect(status == 1)
        #expect(differences.count == 1)
        #expect(differences.first.map { $0.kind == .tensorBytes && $0.rank == 2 && $0.tensor == tensor && $0.offset == offset } == true)
    }

    // MARK: - Helpers

    static let tiedConfig = #"{"finegrained_tp_config": {"embedding_tensor_parallel_size": 2, "lmhead_tensor_parallel_size": 4}}"#
    static let tiedEqualConfig = #"{"finegrained_tp_config": {"embedding_tensor_parallel_size": 2, "lmhead_tensor_parallel_size": 2}}"#

    func shard(_ source: String, _ out: String, _ arguments: [String]) throws {
        let result = try run(fineshardBinary, ["shard", source, "-o", out, "--quiet"] + arguments)
        guard result.status == 0 else { throw TestFailure("shard \(arguments) failed (\(result.status)): \(result.stderr)") }
    }

    /// Runs `verify --json`; returns the exit status and the differences.
    func verifyJSON(_ out: String, source: String? = nil) throws -> (Int32, [VerifyReport.Difference]) {
        let result = try run(fineshardBinary, ["verify", out, "--json", "--quiet"] + (source.map { ["--source", $0] } ?? []))
        struct Report: Decodable { var ok: Bool; var differences: [VerifyReport.Difference] }
        guard let report = try? JSONDecoder().decode(Report.self, from: Data(result.stdout.utf8)) else {
            throw TestFailure("verify --json printed no report (\(result.status)): \(result.stdout) \(result.stderr)")
        }
        #expect(report.ok == report.differences.isEmpty)
        return (result.status, report.differences)
    }

    /// `verify` and `verify --source` both exit 0 and say so.
    func expectPasses(_ out: String, source: String = fixture) throws {
        let plain = try run(fineshardBinary, ["verify", out, "--quiet"])
        #expect(plain.status == 0, "\(plain.stdout)\(plain.stderr)")
        #expect(plain.stdout.hasPrefix("verified: "))
        let full = try run(fineshardBinary, ["verify", out, "--source", source, "--quiet"])
        #expect(full.status == 0, "\(full.stdout)\(full.stderr)")
        #expect(full.stdout.contains("source tensors reassembled byte for byte"))
    }

    /// The rewritten hashes hold: the hash check alone passes.
    func expectHashCheckPasses(_ out: String) throws {
        let (status, differences) = try verifyJSON(out)
        #expect(status == 0, "\(differences.map(\.message))")
    }

    /// A safetensors file's header: tensor name → (absolute start, byte count, shape).
    func header(_ path: String) throws -> [String: (start: Int, count: Int, shape: [Int])] {
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        let lengthBytes = try #require(try handle.read(upToCount: 8))
        let length = lengthBytes.enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        let json = try #require(try handle.read(upToCount: length))
        let object = try #require(try JSONSerialization.jsonObject(with: json) as? [String: Any])
        var out: [String: (Int, Int, [Int])] = [:]
        for (name, value) in object where name != "__metadata__" {
            let entry = try #require(value as? [String: Any])
            let offsets = try #require(entry["data_offsets"] as? [Int])
            let shape = try #require(entry["shape"] as? [Int])
            out[name] = (8 + length + offsets[0], offsets[1] - offsets[0], shape)
        }
        return out
    }

    func tensorNames(out: String, file: String) throws -> [String] {
        try header((out as NSString).appendingPathComponent(file)).keys.sorted()
    }

    func tensorShape(out: String, file: String, tensor: String) throws -> [Int] {
        try #require(try header((out as NSString).appendingPathComponent(file))[tensor]).shape
    }

    func readTensor(out: String, file: String, tensor: String) throws -> [UInt8] {
        let path = (out as NSString).appendingPathComponent(file)
        let entry = try #require(try header(path)[tensor])
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(entry.start))
        return Array(try handle.read(upToCount: entry.count) ?? Data())
    }

    /// Overwrites tensor `tensor` of `OUT/file` in place with `transform` of its bytes (same size),
    /// then rewrites the file's size and SHA-256 in the manifest so only reassembly can tell.
    /// Returns the absolute file offset of the first byte that changed.
    @discardableResult
    func mutateTensor(out: String, file: String, tensor: String, transform: ([UInt8]) throws -> [UInt8]) throws -> Int {
        let path = (out as NSString).appendingPathComponent(file)
        let entry = try #require(try header(path)[tensor], "no tensor \(tensor) in \(file)")
        let old = try readTensor(out: out, file: file, tensor: tensor)
        let new = try transform(old)
        guard new.count == old.count else { throw TestFailure("a mutation must keep the tensor's size") }
        guard let first = old.indices.first(where: { old[$0] != new[$0] }) else { throw TestFailure("the mutation changed nothing") }
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        try handle.seek(toOffset: UInt64(entry.start))
        try handle.write(contentsOf: new)
        try handle.close()
        try rewriteHash(out: out, file: file)
        return entry.start + first
    }

    /// Patches `OUT/manifest.json`'s record of `file` with its current size and SHA-256, and each of its
    /// tensors' SHA-256, so that only reading against the source can tell.
    /// Rewrites `file`'s size and SHA-256 in the manifest, and its tensors' hashes unless `tensorHashes`
    /// is false (a file whose tensors cannot be read, such as one with a damaged HDF5 chunk).
    func rewriteHash(out: String, file: String, tensorHashes rewriteTensors: Bool = true) throws {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: (out as NSString).appendingPathComponent(file)))
        let digest = SHA256.hash(data: bytes).hexString
        let shard = try Checkpoint.open((out as NSString).appendingPathComponent(file))
        let tensorHashes =
            rewriteTensors
            ? try Dictionary(
                uniqueKeysWithValues: shard.tensors.map { ($0.name, SHA256.hash(data: try readAll(shard, $0.name)).hexString) })
            : nil
        let manifestPath = (out as NSString).appendingPathComponent(Manifest.fileName)
        var manifest = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: manifestPath))) as? [String: Any])
        var ranks = try #require(manifest["ranks"] as? [[String: Any]])
        var patched = 0
        for i in ranks.indices {
            var files = try #require(ranks[i]["files"] as? [[String: Any]])
            for j in files.indices where files[j]["name"] as? String == file {
                files[j]["sha256"] = digest
                files[j]["bytes"] = bytes.count
                if let tensorHashes { files[j]["tensor_sha256"] = tensorHashes }
                patched += 1
            }
            ranks[i]["files"] = files
        }
        guard patched == 1 else { throw TestFailure("\(file) is named \(patched) times in the manifest") }
        manifest["ranks"] = ranks
        try JSONSerialization.data(withJSONObject: manifest, options: [.sortedKeys]).write(to: URL(fileURLWithPath: manifestPath))
    }

    /// The fixture with tied embeddings: `tie_word_embeddings: true` and no `lm_head.weight`.
    func makeTiedModel(_ folder: String) throws -> String {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let source = try Checkpoint.open(Self.fixture)
        let tensors = try source.tensors.filter { $0.name != "lm_head.weight" }.map {
            (TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape), try readAll(source, $0.name))
        }
        try writeSafetensors((folder as NSString).appendingPathComponent("model.safetensors"), tensors, metadata: ["format": "pt"])
        var config = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.fixture + "/config.json"))) as? [String: Any])
        config["tie_word_embeddings"] = true
        try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys, .prettyPrinted])
            .write(to: URL(fileURLWithPath: (folder as NSString).appendingPathComponent("config.json")))
        return folder
    }
}
