import Foundation
import Testing

@testable import FineShard

/// One `shard` configuration of the end-to-end matrix.
struct ShardCase: CustomStringConvertible, Sendable {
    let model: String
    let arguments: [String]
    var description: String { "\(model) \(arguments.joined(separator: " "))" }
}

enum Models {
    static let fixture = Environment.root + "/fixtures/tiny-llama"
    static let fixtureH5 = Environment.root + "/fixtures/tiny-llama-h5"
    /// A GQA model built once per test process, with more kv-head replication (8 heads, 2 kv heads).
    static let replicated: String = {
        let dir = NSTemporaryDirectory() + "fineshard-kvrep-\(getpid())"
        try! makeLlama(in: dir, heads: 8, kvHeads: 2, headDim: 8, hidden: 64, intermediate: 96, vocab: 130, biases: true)
        return dir
    }()
    /// A tied-embedding Llama (no lm_head tensor).
    static let tied: String = {
        let dir = NSTemporaryDirectory() + "fineshard-tied-\(getpid())"
        try! makeLlama(in: dir, heads: 4, kvHeads: 4, headDim: 16, hidden: 64, intermediate: 128, vocab: 200, tied: true)
        return dir
    }()
}

let shardCases: [ShardCase] = [
    ShardCase(model: "fixture", arguments: ["--dp", "1", "--tp", "4"]),
    ShardCase(model: "fixture", arguments: ["--dp", "1", "--tp", "4", "--layout", "vllm"]),
    ShardCase(model: "fixture", arguments: ["--dp", "4", "--additional-config", finegrained(embedding: 2, lmHead: 4, oProj: 2, mlp: 4)]),
    ShardCase(
        model: "fixture",
        arguments: [
            "--dp", "4", "--additional-config", finegrained(embedding: 4, lmHead: 4, oProj: 4, mlp: 4), "--layout", "vllm", "--format",
            "hdf5",
        ]),
    ShardCase(
        model: "fixture",
        arguments: ["--dp", "2", "--tp", "2", "--additional-config", finegrained(embedding: 2, mlp: 2), "--format", "hdf5"]),
    ShardCase(model: "fixture-h5", arguments: ["--dp", "2", "--tp", "2", "--layout", "vllm"]),
    ShardCase(model: "replicated", arguments: ["--dp", "1", "--tp", "8"]),
    ShardCase(model: "replicated", arguments: ["--dp", "1", "--tp", "8", "--layout", "vllm", "--format", "hdf5"]),
    ShardCase(
        model: "replicated",
        arguments: ["--dp", "2", "--tp", "4", "--additional-config", finegrained(embedding: 2, lmHead: 2, mlp: 2), "--layout", "vllm"]),
    ShardCase(
        model: "replicated", arguments: ["--dp", "8", "--additional-config", finegrained(embedding: 8, lmHead: 4, oProj: 8, mlp: 8)]),
    ShardCase(model: "tied", arguments: ["--dp", "4", "--additional-config", finegrained(embedding: 2, lmHead: 4)]),
    ShardCase(model: "tied", arguments: ["--dp", "2", "--tp", "2", "--layout", "vllm"]),
    ShardCase(model: "minilm", arguments: ["--dp", "1", "--tp", "4"]),
    ShardCase(
        model: "minilm", arguments: ["--dp", "4", "--additional-config", finegrained(embedding: 2, oProj: 2, mlp: 4), "--format", "hdf5"]),
    ShardCase(model: "minilm", arguments: ["--dp", "2", "--tp", "2", "--additional-config", finegrained(mlp: 2)]),
]

func modelPath(_ name: String) -> String? {
    switch name {
    case "fixture": Models.fixture
    case "fixture-h5": Models.fixtureH5
    case "replicated": Models.replicated
    case "tied": Models.tied
    default: Environment.minilm.map { $0 + "/model.safetensors" }
    }
}

@Suite struct ShardCommandTests {
    /// Shards, then proves the output three ways: the official Python libraries read every rank's
    /// tensors and find the planned source slices; `verify --source` passes; `merge` gives back
    /// the source's tensors byte for byte (read with the official library).
    @Test(.enabled(if: Environment.python != nil, "needs FINESHARD_PYTHON"), arguments: shardCases)
    func everyRankHoldsExactlyThePlannedSlices(_ c: ShardCase) throws {
        guard let model = modelPath(c.model) else { return }
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        let shard = try run(fineshardBinary, ["shard", model, "-o", out, "--quiet", "--threads", "2"] + c.arguments)
        #expect(shard.status == 0, "\(shard.stderr)")
        let check = try run(Environment.python!, [Environment.root + "/scripts/interop/check_shards.py", out, model])
        #expect(check.status == 0, "\(check.stderr)")
        let verify = try run(fineshardBinary, ["verify", out, "--source", model, "--quiet"])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
        let dense = dir.file("dense")
        let merge = try run(fineshardBinary, ["merge", out, "-o", dense])
        #expect(merge.status == 0, "\(merge.stderr)")
        guard c.model != "fixture-h5" else {
            let merged = try Checkpoint.open(dense)
            let source = try Checkpoint.open(model)
            for t in source.tensors { #expect(try readAll(merged, t.name) == readAll(source, t.name), "\(t.name)") }
            return
        }
        let expected = try runPython("st_read.py", [model])["tensors"] as! [String: [String: Any]]
        let merged = try runPython("st_read.py", [dense])["tensors"] as! [String: [String: Any]]
        #expect(Set(expected.keys) == Set(merged.keys))
        for (name, e) in expected {
            #expect(merged[name]?["sha256"] as? String == e["sha256"] as? String, "\(name)")
            #expect(merged[name]?["dtype"] as? String == e["dtype"] as? String, "\(name)")
        }
    }

    @Test func twoRunsGiveByteIdenticalOutputWhateverTheThreadCount() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        for (name, threads) in [("a", "1"), ("b", "3")] {
            let r = try run(
                fineshardBinary,
                [
                    "shard", Models.fixture, "-o", dir.file(name), "--dp", "4", "--quiet", "--threads", threads,
                    "--additional-config", finegrained(embedding: 2, lmHead: 4, oProj: 2, mlp: 4),
                ])
            #expect(r.status == 0, "\(r.stderr)")
        }
        let a = try folderContents(dir.file("a")).filter { !$0.key.hasPrefix(".fineshard") }
        let b = try folderContents(dir.file("b")).filter { !$0.key.hasPrefix(".fineshard") }
        #expect(a.keys.sorted() == b.keys.sorted())
        for (name, data) in a { #expect(b[name] == data, "\(name)") }
        #expect(a["manifest.json"] != nil)
    }

    static let killPoints = ["piece:5:kill", "piece:40:kill", "write:3:kill", "file:2:kill", "file:6:kill", "piece:70:kill"]

    @Test(arguments: killPoints)
    func aKilledRunNeverVerifiesAndResumeFinishesItByteIdentical(_ fault: String) throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let args = [
            "--dp", "8", "--quiet", "--threads", "1", "--additional-config", finegrained(embedding: 8, lmHead: 4, oProj: 8, mlp: 8),
        ]
        let reference = try run(fineshardBinary, ["shard", Models.replicated, "-o", dir.file("ref")] + args)
        #expect(reference.status == 0, "\(reference.stderr)")
        let killed = try run(
            fineshardBinary, ["shard", Models.replicated, "-o", dir.file("out")] + args, environment: ["FINESHARD_FAULT": fault])
        #expect(killed.status != 0, "the fault \(fault) should have killed the run")
        #expect(!FileManager.default.fileExists(atPath: dir.file("out/manifest.json")))
        let verify = try run(fineshardBinary, ["verify", dir.file("out"), "--quiet"])
        #expect(verify.status != 0, "a killed run's output must not verify")
        let resumed = try run(fineshardBinary, ["shard", Models.replicated, "-o", dir.file("out"), "--resume"] + args)
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let a = try folderContents(dir.file("ref")).filter { !$0.key.hasPrefix(".fineshard") }
        let b = try folderContents(dir.file("out")).filter { !$0.key.hasPrefix(".fineshard") }
        #expect(a.keys.sorted() == b.keys.sorted())
        for (name, data) in a { #expect(b[name] == data, "\(name)") }
        #expect(try run(fineshardBinary, ["verify", dir.file("out"), "--source", Models.replicated, "--quiet"]).status == 0)
    }

    @Test func resumeOnAFolderMadeWithOtherOptionsIsRefusedNamingTheDifference() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        #expect(try run(fineshardBinary, ["shard", Models.fixture, "-o", dir.file("out"), "--dp", "4", "--quiet"]).status == 0)
        let r = try run(fineshardBinary, ["shard", Models.fixture, "-o", dir.file("out"), "--dp", "2", "--quiet", "--resume"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("--dp was 4, now 2"), "\(r.stderr)")
        let resumeSame = try run(fineshardBinary, ["shard", Models.fixture, "-o", dir.file("out"), "--dp", "4", "--json", "--resume"])
        #expect(resumeSame.status == 0, "\(resumeSame.stderr)")
        let summary = try JSONSerialization.jsonObject(with: Data(resumeSame.stdout.utf8)) as! [String: Any]
        #expect(summary["ranks_skipped"] as? [Int] == [0, 1, 2, 3])
        #expect(summary["ranks_written"] as? [Int] == [])
    }

    @Test func resumeOnAnEmptyFolderActsAsAFirstRun() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let r = try run(fineshardBinary, ["shard", Models.fixture, "-o", dir.file("new"), "--dp", "2", "--quiet", "--resume"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try run(fineshardBinary, ["verify", dir.file("new"), "--quiet"]).status == 0)
    }

    @Test func fourRankSubsetsWrittenInParallelVerifyAsAUnionAndCombine() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        let args = [
            "shard", Models.replicated, "-o", out, "--dp", "8", "--quiet", "--additional-config",
            finegrained(embedding: 8, lmHead: 8, oProj: 4, mlp: 2),
        ]
        let processes = try ["0-1", "2-3", "4-5", "6-7"].map { ranks -> Process in
            let p = Process()
            p.executableURL = URL(fileURLWithPath: fineshardBinary)
            p.arguments = args + ["--ranks", ranks]
            try p.run()
            return p
        }
        for p in processes {
            p.waitUntilExit()
            #expect(p.terminationStatus == 0)
        }
        #expect(!FileManager.default.fileExists(atPath: out + "/manifest.json"))
        let union = try run(fineshardBinary, ["verify", out, "--source", Models.replicated, "--quiet"])
        #expect(union.status == 0, "\(union.stdout)")
        let combine = try run(fineshardBinary, ["manifest", "combine", out])
        #expect(combine.status == 0, "\(combine.stderr)")
        let combined = try Manifest.read(out + "/manifest.json")
        #expect(combined.ranks.map(\.rank) == Array(0..<8))
        #expect(try run(fineshardBinary, ["verify", out, "--source", Models.replicated, "--quiet"]).status == 0)
    }

    @Test func aMissingRankOfAFanOutIsADifferenceNamingIt() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        let args = ["shard", Models.fixture, "-o", out, "--dp", "4", "--quiet"]
        #expect(try run(fineshardBinary, args + ["--ranks", "0-1"]).status == 0)
        #expect(try run(fineshardBinary, args + ["--ranks", "3"]).status == 0)
        let verify = try run(fineshardBinary, ["verify", out, "--quiet"])
        #expect(verify.status == 1)
        #expect(verify.stdout.contains("ranks 2 are in no manifest"), "\(verify.stdout)")
        let combine = try run(fineshardBinary, ["manifest", "combine", out])
        #expect(combine.status == 2)
        #expect(combine.stderr.contains("ranks 2"), "\(combine.stderr)")
    }

    @Test func anExistingOutputIsRefusedWithoutResumeOrForce() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let args = ["shard", Models.fixture, "-o", dir.file("out"), "--dp", "2", "--quiet"]
        #expect(try run(fineshardBinary, args).status == 0)
        let again = try run(fineshardBinary, args)
        #expect(again.status == 2)
        #expect(again.stderr.contains("--resume") && again.stderr.contains("--force"))
        #expect(try run(fineshardBinary, args + ["--force"]).status == 0)
        #expect(try run(fineshardBinary, ["verify", dir.file("out"), "--quiet"]).status == 0)
    }

    @Test func aFullDiskExitsThreeNamingTheFileAndResumeCompletesIt() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let args = ["shard", Models.fixture, "-o", dir.file("out"), "--dp", "4", "--quiet", "--threads", "1"]
        let full = try run(fineshardBinary, args, environment: ["FINESHARD_FAULT": "write:3:enospc"])
        #expect(full.status == 3)
        #expect(full.stderr.contains("No space left on device") && full.stderr.contains("model-rank-"), "\(full.stderr)")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.file("out")).filter { $0.hasSuffix(".fineshard-tmp") }
        #expect(leftovers.isEmpty)
        #expect(try run(fineshardBinary, args + ["--resume"]).status == 0)
        #expect(try run(fineshardBinary, ["verify", dir.file("out"), "--source", Models.fixture, "--quiet"]).status == 0)
    }

    @Test(arguments: [("piece:10:term", 143), ("file:2:term", 143), ("piece:7:int", 130)])
    func sigtermAndSigintRemoveTemporaryFilesExit143Or130AndResume(_ fault: String, _ code: Int32) throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let args = ["shard", Models.fixture, "-o", dir.file("out"), "--dp", "4", "--quiet", "--threads", "1"]
        let stopped = try run(fineshardBinary, args, environment: ["FINESHARD_FAULT": fault])
        #expect(stopped.status == code, "\(stopped.stderr)")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.file("out")).filter { $0.hasSuffix(".fineshard-tmp") }
        #expect(leftovers.isEmpty, "\(leftovers)")
        #expect(try run(fineshardBinary, args + ["--resume"]).status == 0)
        #expect(try run(fineshardBinary, ["verify", dir.file("out"), "--quiet"]).status == 0)
    }

    @Test func aRankSubsetReadsOnlyTheBytesItsRanksNeed() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let r = try run(
            fineshardBinary,
            [
                "shard", Models.fixture, "-o", dir.file("out"), "--dp", "4", "--ranks", "1", "--json",
                "--additional-config", finegrained(embedding: 4, lmHead: 4, oProj: 4, mlp: 4),
            ])
        #expect(r.status == 0, "\(r.stderr)")
        let summary = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let plan = try ShardPlan.make(
            try Checkpoint.open(Models.fixture),
            parallel: ParallelConfig(
                dp: 4, finegrained: FineGrainedConfig(embedding: 4, lmHead: 4, oProj: 4, mlp: 4)))
        let needed = plan.rank(1).tensors.flatMap(\.pieces).reduce(0) { $0 + $1.region.elementCount * 2 }
        let read = summary["bytes_read"] as! Int
        // Exactly the source bytes the rank's pieces name (headers are not counted).
        #expect(read == needed, "read \(read), rank 1 needs \(needed)")
    }

    @Test func replicatedTensorsAreReadOncePerRunNotOncePerRank() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let config = finegrained(embedding: 4, lmHead: 4, oProj: 4, mlp: 4)
        let plan = try ShardPlan.make(
            try Checkpoint.open(Models.fixture),
            parallel: ParallelConfig(dp: 4, finegrained: FineGrainedConfig(embedding: 4, lmHead: 4, oProj: 4, mlp: 4)))
        let pieces = (0..<4).flatMap { plan.rank($0).tensors.flatMap(\.pieces) }
        let distinct = Set(pieces).reduce(0) { $0 + $1.region.elementCount * 2 }
        let everyRank = pieces.reduce(0) { $0 + $1.region.elementCount * 2 }
        #expect(distinct < everyRank, "all-DP 4 replicates tensors")
        for threads in ["1", "3"] {
            let out = dir.file("out-\(threads)")
            let r = try run(
                fineshardBinary,
                ["shard", Models.fixture, "-o", out, "--dp", "4", "--json", "--threads", threads, "--additional-config", config])
            #expect(r.status == 0, "\(r.stderr)")
            let summary = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
            #expect(summary["bytes_read"] as? Int == distinct, "read \(summary["bytes_read"] ?? "-"), distinct pieces \(distinct)")
        }
        // The same bytes whatever the thread count.
        for file in (0..<4).map({ "model-rank-\($0)-part-0.safetensors" }) {
            #expect(
                FileManager.default.contents(atPath: dir.file("out-1") + "/" + file)
                    == FileManager.default.contents(atPath: dir.file("out-3") + "/" + file))
        }
        #expect(try run(fineshardBinary, ["verify", dir.file("out-3"), "--source", Models.fixture, "--quiet"]).status == 0)
    }
}
