import ArgumentParser
import Foundation
import Testing

@testable import FineShard
@testable import fineshard

/// Issue 19: nothing silently does what the user did not mean. Each test runs the built binary (or
/// parses in process) on real files and checks the message a user sees.
@Suite struct SurprisesTests {
    /// A copy of the tiny Llama fixture in a fresh temporary folder, so a test may write beside it.
    func copyOfFixture(in dir: TemporaryFolder, as name: String = "model") throws -> String {
        let target = dir.file(name)
        try FileManager.default.copyItem(atPath: Models.fixture, toPath: target)
        return target
    }

    // MARK: 1. finegrained_tp_config typos

    @Test func aMistypedFinegrainedKeyIsAnErrorNamingTheClosestKnownKey() throws {
        let typo = #"{"finegrained_tp_config": {"oproj_tensor_paralel_size": 2}}"#
        let error = try #require(throws: PlanError.self) { try AdditionalConfig.parse(typo) }
        #expect(error.exitCode == 2)
        #expect(error.description.contains("'oproj_tensor_paralel_size'"), "\(error)")
        #expect(error.description.contains("did you mean oproj_tensor_parallel_size?"), "\(error)")
        let result = try run(fineshardBinary, ["plan", Models.fixture, "--dp", "2", "--additional-config", typo])
        #expect(result.status == 2, "\(result.stderr)")
        #expect(result.stderr.contains("did you mean oproj_tensor_parallel_size?"), "\(result.stderr)")
        #expect(result.stdout.isEmpty)
    }

    @Test func aKeyVllmAscendKnowsButFineshardDoesNotApplyIsRefusedAsNotSupportedYet() throws {
        let json = #"{"finegrained_tp_config": {"olora_tensor_parallel_size": 2}}"#
        let result = try run(fineshardBinary, ["plan", Models.fixture, "--dp", "2", "--additional-config", json])
        #expect(result.status == 2, "\(result.stderr)")
        #expect(result.stderr.contains("olora_tensor_parallel_size"), "\(result.stderr)")
        #expect(result.stderr.contains("not supported yet"), "\(result.stderr)")
        #expect(!result.stderr.contains("did you mean"), "\(result.stderr)")
    }

    @Test func anUnknownKeyOutsideFinegrainedTPConfigStaysANote() throws {
        let config = try AdditionalConfig.parse(#"{"torchair_graph_config": {"enabled": true}}"#)
        #expect(config.notes.contains { $0.contains("torchair_graph_config") })
    }

    @Test func editDistanceCountsInsertionsDeletionsAndSubstitutions() {
        #expect(editDistance("oproj_tensor_paralel_size", "oproj_tensor_parallel_size") == 1)
        #expect(editDistance("", "abc") == 3)
        #expect(editDistance("kitten", "sitting") == 3)
    }

    // MARK: 2. --dp defaults to 1

    @Test func dpDefaultsToOneInPlanAndShard() throws {
        let plan = try #require(try Fineshard.parseAsRoot(["plan", "model", "--tp", "2"]) as? Plan)
        #expect(plan.options.dp == 1)
        let shard = try #require(try Fineshard.parseAsRoot(["shard", "model", "-o", "out"]) as? Shard)
        #expect(shard.options.dp == 1)
        let result = try run(fineshardBinary, ["plan", Models.fixture, "--tp", "2", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        #expect((report["bytes_per_rank"] as? [Int])?.count == 2)
    }

    // MARK: 7. argument-parser errors exit 2

    @Test(arguments: [
        ["shard", "fixtures/tiny-llama"],
        ["shard", "fixtures/tiny-llama", "-o", "out", "--format", "h5"],
        ["inspect", "fixtures/tiny-llama", "extra"],
        ["plan", "fixtures/tiny-llama", "--dp", "two"],
    ])
    func anArgumentParserErrorExitsWithTwo(_ arguments: [String]) throws {
        let result = try run(fineshardBinary, arguments)
        #expect(result.status == 2, "\(result.stderr)")
        #expect(result.stderr.contains("Error: "), "\(result.stderr)")
        #expect(result.stdout.isEmpty)
        do {
            _ = try Fineshard.parseAsRoot(arguments)
            Issue.record("\(arguments) parsed")
        } catch {
            #expect(Fineshard.fineshardExitCode(for: error) == 2)
        }
    }

    @Test func helpStillExitsWithZero() throws {
        for arguments in [["--help"], ["merge", "--help"], ["--version"]] {
            let result = try run(fineshardBinary, arguments)
            #expect(result.status == 0, "\(arguments): \(result.stderr)")
            #expect(!result.stdout.isEmpty)
        }
    }

    // MARK: 3. merge refuses outputs that would overwrite or mix with the input

    /// Shards the tiny Llama fixture (DP 2) into `dir/out`.
    func shardFixture(in dir: TemporaryFolder, extra: [String] = []) throws -> String {
        let out = dir.file("out")
        let result = try run(fineshardBinary, ["shard", Models.fixture, "-o", out, "--dp", "2", "--quiet"] + extra)
        #expect(result.status == 0, "\(result.stderr)")
        return out
    }

    @Test func mergeRefusesTheShardFolderItselfBeforeWritingAnything() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = try shardFixture(in: dir)
        let before = try folderContents(out)
        let result = try run(fineshardBinary, ["merge", out, "-o", out])
        #expect(result.status == 2, "\(result.stderr)")
        #expect(result.stderr.contains("error: --output: \(out): is the shard folder being merged"), "\(result.stderr)")
        #expect(try folderContents(out) == before)
        #expect(try run(fineshardBinary, ["verify", out]).status == 0)
    }

    @Test func mergeRefusesAFolderInsideTheShardFolder() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = try shardFixture(in: dir)
        let result = try run(fineshardBinary, ["merge", out, "-o", out + "/dense"])
        #expect(result.status == 2, "\(result.stderr)")
        #expect(result.stderr.contains("lies inside the shard folder"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out + "/dense"))
    }

    @Test func mergeRefusesANonEmptyFolderUnlessForced() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = try shardFixture(in: dir)
        let dense = dir.file("dense")
        try FileManager.default.createDirectory(atPath: dense, withIntermediateDirectories: true)
        try Data("keep".utf8).write(to: URL(fileURLWithPath: dense + "/notes.txt"))
        let refused = try run(fineshardBinary, ["merge", out, "-o", dense])
        #expect(refused.status == 2, "\(refused.stderr)")
        #expect(refused.stderr.contains("is not empty (1 entry, e.g. notes.txt)"), "\(refused.stderr)")
        #expect(refused.stderr.contains("--force"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dense) == ["notes.txt"])
        let forced = try run(fineshardBinary, ["merge", out, "-o", dense, "--force"])
        #expect(forced.status == 0, "\(forced.stderr)")
        #expect(FileManager.default.fileExists(atPath: dense + "/model.safetensors"))
    }

    // MARK: 7. every error about an input names its path

    @Test(arguments: BadCase.all)
    func everyBrokenInputsErrorNamesItsPath(_ c: BadCase) throws {
        for command in ["inspect", "plan"] {
            let result = try run(fineshardBinary, [command, c.path])
            #expect(result.status == 2, "\(command) \(c.name): exit \(result.status); \(result.stderr)")
            #expect(result.stderr.contains(c.path), "\(command) \(c.name): the message does not name \(c.path): \(result.stderr)")
        }
    }

    @Test func aFileThatIsNoModelIsNamedWhenPlanned() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let path = dir.file("weights.safetensors")
        let spec = TensorSpec(name: "some.tensor", dtype: .f32, shape: [2, 2])
        _ = try writeSafetensors(path, [(spec, [UInt8](repeating: 0, count: 16))])
        let result = try run(fineshardBinary, ["shard", path, "-o", dir.file("out")])
        #expect(result.status == 2, "\(result.stderr)")
        #expect(result.stderr.hasPrefix("error: \(path): "), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir.file("out")))
    }

    // MARK: 5. shard refuses OUT = source, inside it or containing it; output folders are recognized

    @Test func shardRefusesTheSourceFolderAsOutputBeforeWritingAnything() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let model = try copyOfFixture(in: dir)
        let before = try folderContents(model)
        let result = try run(fineshardBinary, ["shard", model, "-o", model, "--dp", "2"])
        #expect(result.status == 2, "\(result.stderr)")
        #expect(result.stderr.contains("error: --output: \(model): is the source checkpoint itself"), "\(result.stderr)")
        #expect(try folderContents(model) == before)
        #expect(try run(fineshardBinary, ["inspect", model]).status == 0)
    }

    @Test func shardRefusesAnOutputInsideOrAroundTheSource() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let model = try copyOfFixture(in: dir)
        let inside = try run(fineshardBinary, ["shard", model, "-o", model + "/out", "--dp", "2"])
        #expect(inside.status == 2, "\(inside.stderr)")
        #expect(inside.stderr.contains("lies inside the source checkpoint"), "\(inside.stderr)")
        #expect(!FileManager.default.fileExists(atPath: model + "/out"))
        let around = try run(fineshardBinary, ["shard", model + "/model.safetensors", "-o", dir.path, "--dp", "2"])
        #expect(around.status == 2, "\(around.stderr)")
        #expect(around.stderr.contains("contains the source checkpoint"), "\(around.stderr)")
    }

    @Test func planAndVerifySourceNameAnOutputFolderAsSuch() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = try shardFixture(in: dir)
        let plan = try run(fineshardBinary, ["plan", out, "--dp", "2"])
        #expect(plan.status == 2)
        #expect(plan.stderr.contains("\(out): is a fineshard output folder (it has a manifest), not a dense checkpoint"), "\(plan.stderr)")
        let swapped = try run(fineshardBinary, ["verify", Models.fixture, "--source", out])
        #expect(swapped.status == 2)
        #expect(swapped.stderr.contains("did you swap OUT and --source?"), "\(swapped.stderr)")
        let forward = try run(fineshardBinary, ["forward-check", out, "--source", out])
        #expect(forward.status == 2)
        #expect(forward.stderr.contains("--source: \(out): is a fineshard output folder"), "\(forward.stderr)")
    }

    @Test func anUnfinishedRunIsNamedWithResumeWhereverItIsGiven() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = try shardFixture(in: dir)
        try FileManager.default.removeItem(atPath: out + "/manifest.json")
        for arguments in [["verify", out], ["plan", out], ["inspect", out], ["verify", out, "--source", Models.fixture]] {
            let result = try run(fineshardBinary, arguments)
            #expect(result.status == 2, "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains("an unfinished run?"), "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains("--resume"), "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains(out), "\(arguments): \(result.stderr)")
        }
    }

    // MARK: 4. inspect on an output folder

    @Test func inspectDescribesAnOutputFolder() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = try shardFixture(in: dir)
        let text = try run(fineshardBinary, ["inspect", out])
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.contains("\(out): fineshard output folder (manifest.json"), "\(text.stdout)")
        #expect(text.stdout.contains("parallel: dp 2, tp 1"), "\(text.stdout)")
        #expect(text.stdout.contains("ranks: 2 of 2"), "\(text.stdout)")
        #expect(text.stdout.contains("model-rank-1-part-0.safetensors"), "\(text.stdout)")
        let json = try run(fineshardBinary, ["inspect", out, "--json"])
        #expect(json.status == 0, "\(json.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as! [String: Any]
        #expect(report["kind"] as? String == "fineshard_output")
        let ranks = report["ranks"] as! [[String: Any]]
        #expect(ranks.map { $0["rank"] as! Int } == [0, 1])
        // Bytes per rank are the sizes of the files on disk.
        for r in ranks {
            let files = r["files"] as! [[String: Any]]
            let onDisk = try files.reduce(0) {
                $0 + (try FileManager.default.attributesOfItem(atPath: out + "/" + ($1["name"] as! String))[.size] as! Int)
            }
            #expect(r["bytes"] as? Int == onDisk)
        }
        let source = report["source"] as! [String: Any]
        #expect(source["architecture"] as? String == "LlamaForCausalLM")
        #expect((report["parallel"] as! [String: Any])["dp"] as? Int == 2)
    }

    @Test func inspectDescribesAPartialFanOutWithItsMissingRanks() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = try shardFixture(in: dir, extra: ["--ranks", "1"])
        let json = try run(fineshardBinary, ["inspect", out, "--json"])
        #expect(json.status == 0, "\(json.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as! [String: Any]
        #expect(report["ranks_missing"] as? [Int] == [0])
        #expect(report["manifests"] as? [String] == ["manifest.ranks-1-1.json"])
        let text = try run(fineshardBinary, ["inspect", out])
        #expect(text.stdout.contains("ranks: 1 of 2 (missing 0: a partial fan-out)"), "\(text.stdout)")
    }

    // MARK: 6. JSON: one object, also on failure, one key style; plan --ranks

    /// Every key of a JSON value, recursively, except keys of objects that are data (`dtypes`).
    func keys(_ value: Any, skipping: Set<String> = ["dtypes"]) -> [String] {
        if let object = value as? [String: Any] {
            return object.flatMap { key, v in [key] + (skipping.contains(key) ? [] : keys(v, skipping: skipping)) }
        }
        if let array = value as? [Any] { return array.flatMap { keys($0, skipping: skipping) } }
        return []
    }

    func isSnakeCase(_ key: String) -> Bool { key.allSatisfy { $0.isLowercase || $0.isNumber || $0 == "_" } }

    @Test func aFailureWithJSONPrintsOneObjectOnStdout() throws {
        let bad = BadCase.folder + "/empty.safetensors"
        let cases: [([String], Int32, String, String?)] = [
            (["inspect", bad, "--json"], 2, "file", bad),
            (
                ["plan", Models.fixture, "--dp", "2", "--additional-config", #"{"finegrained_tp_config": {"mlp_tp": 2}}"#, "--json"], 2,
                "option",
                "--additional-config"
            ),
            (["shard", Models.fixture, "--json"], 2, "message", nil),
        ]
        for (arguments, code, key, value) in cases {
            let result = try run(fineshardBinary, arguments)
            #expect(result.status == code, "\(arguments): \(result.stderr)")
            let object = try #require(
                try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "\(result.stdout)")
            #expect(object["ok"] as? Bool == false)
            #expect(object["exit_code"] as? Int == Int(code))
            #expect((object["message"] as? String)?.isEmpty == false)
            if let value { #expect(object[key] as? String == value, "\(object)") } else { #expect(object[key] != nil) }
        }
    }

    @Test func everyCommandsJSONIsAnObjectWithSnakeCaseKeys() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        let commands: [[String]] = [
            ["inspect", Models.fixture],
            ["plan", Models.fixture, "--dp", "2", "--ranks", "0"],
            ["shard", Models.fixture, "-o", out, "--dp", "2", "--quiet"],
            ["inspect", out],
            ["verify", out, "--source", Models.fixture],
            ["merge", out, "-o", dir.file("dense")],
            ["forward-check", out, "--source", Models.fixture],
        ]
        for arguments in commands {
            let result = try run(fineshardBinary, arguments + ["--json"])
            #expect(result.status == 0, "\(arguments): \(result.stderr)")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "\(arguments)")
            let camel = keys(object).filter { !isSnakeCase($0) && !$0.contains(".") }
            #expect(camel.isEmpty, "\(arguments): keys not in snake_case: \(Set(camel).sorted())")
        }
    }

    @Test func planWithRanksListsThoseRanksTensorsAndBytes() throws {
        let json = try run(fineshardBinary, ["plan", Models.fixture, "--dp", "2", "--ranks", "1", "--json"])
        #expect(json.status == 0, "\(json.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as! [String: Any]
        let ranks = report["ranks"] as! [[String: Any]]
        #expect(ranks.count == 1 && ranks[0]["rank"] as? Int == 1)
        let tensors = ranks[0]["tensors"] as! [[String: Any]]
        #expect(!tensors.isEmpty)
        #expect(tensors.reduce(0) { $0 + ($1["bytes"] as! Int) } == ranks[0]["bytes"] as? Int)
        #expect((report["bytes_per_rank"] as! [Int])[1] == ranks[0]["bytes"] as? Int)
        let text = try run(fineshardBinary, ["plan", Models.fixture, "--dp", "2", "--ranks", "1"])
        #expect(text.stdout.contains("rank 1 (dp 1, tp 0): \(tensors.count) tensors"), "\(text.stdout)")
        #expect(text.stdout.contains("model.embed_tokens.weight"), "\(text.stdout)")
        let outOfRange = try run(fineshardBinary, ["plan", Models.fixture, "--dp", "2", "--ranks", "5"])
        #expect(outOfRange.status == 2, "\(outOfRange.stderr)")
    }

    @Test func anAdditionalConfigFileWithoutTheAtSignSuggestsIt() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let file = dir.file("finegrained.json")
        try Data(finegrained(mlp: 2).utf8).write(to: URL(fileURLWithPath: file))
        let result = try run(fineshardBinary, ["plan", Models.fixture, "--dp", "2", "--additional-config", file])
        #expect(result.status == 2)
        #expect(result.stderr.contains("--additional-config @\(file)"), "\(result.stderr)")
    }
}
