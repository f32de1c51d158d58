import Foundation
import Testing

@testable import FineShard

/// The real-model pipeline a release job runs, on all-MiniLM-L6-v2 (a checkpoint nobody here
/// wrote): inspect → plan → shard (all-DP 4 with embedding 2, o_proj 2, MLP 4) in both formats →
/// verify --source → merge (identical tensors, read with the official library) → forward-check.
@Suite(.enabled(if: Environment.python != nil && Environment.minilm != nil, "needs FINESHARD_PYTHON and FINESHARD_MINILM"))
struct EndToEndTests {
    @Test(arguments: ["safetensors", "hdf5"])
    func miniLMGoesThroughTheWholePipeline(_ format: String) throws {
        let source = Environment.minilm!
        let config = finegrained(embedding: 2, oProj: 2, mlp: 4)
        let dir = try TemporaryFolder()
        defer { dir.remove() }

        let inspect = try run(fineshardBinary, ["inspect", source, "--json"])
        #expect(inspect.status == 0)
        #expect(inspect.stdout.contains("\"tensor_count\" : 104"))

        let plan = try run(fineshardBinary, ["plan", source, "--dp", "4", "--additional-config", config])
        #expect(plan.status == 0, "\(plan.stderr)")
        #expect(plan.stdout.contains("o_proj     2"), "\(plan.stdout)")

        let out = dir.file("out")
        let shard = try run(
            fineshardBinary, ["shard", source, "-o", out, "--dp", "4", "--additional-config", config, "--format", format, "--quiet"])
        #expect(shard.status == 0, "\(shard.stderr)")
        // The non-weight files of the sentence-transformers folder come along, with their structure.
        #expect(FileManager.default.fileExists(atPath: out + "/1_Pooling/config.json"))
        #expect(FileManager.default.fileExists(atPath: out + "/tokenizer.json"))

        let verify = try run(fineshardBinary, ["verify", out, "--source", source, "--quiet"])
        #expect(verify.status == 0, "\(verify.stdout)")

        let dense = dir.file("dense")
        #expect(try run(fineshardBinary, ["merge", out, "-o", dense]).status == 0)
        let expected = try runPython("st_read.py", [source + "/model.safetensors"])["tensors"] as! [String: [String: Any]]
        let merged = try runPython("st_read.py", [dense])["tensors"] as! [String: [String: Any]]
        #expect(merged.count == 104)
        for (name, e) in expected { #expect(merged[name]?["sha256"] as? String == e["sha256"] as? String, "\(name)") }

        let forward = try run(fineshardBinary, ["forward-check", out, "--source", source, "--tokens-per-rank", "3"])
        #expect(forward.status == 0, "\(forward.stdout)\(forward.stderr)")
    }
}
