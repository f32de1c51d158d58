import Crypto
import Foundation
import Testing

@testable import FineShard

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A command run on a hostile output folder.
enum HostileCommand: String, Sendable, CaseIterable {
    case verify, verifySource = "verify --source", merge, forwardCheck = "forward-check", combine = "manifest combine"

    func arguments(out: String, merged: String) -> [String] {
        switch self {
        case .verify: ["verify", out, "--quiet"]
        case .verifySource: ["verify", out, "--source", Models.fixture, "--quiet"]
        case .merge: ["merge", out, "-o", merged]
        case .forwardCheck: ["forward-check", out, "--source", Models.fixture]
        case .combine: ["manifest", "combine", out]
        }
    }
}

/// One case of the hostile-folder corpus (issue 14): the fixture's output folder (the full one, or
/// the two partial manifests of a `--ranks` fan-out), changed by `mutate`, and what each command
/// that reads the change must exit with (1 a difference, 2 bad input) and name (`needle`).
struct HostileCase: Sendable, CustomTestStringConvertible {
    var name: String
    var partial = false
    var expect: [HostileCommand: Set<Int32>]
    var needle: String
    var mutate: @Sendable (HostileFolder) throws -> Void
    var testDescription: String { name }

    /// Every command that reads the folder exits 2 naming `needle` (a field path or a file).
    static func invalid(
        _ name: String, partial: Bool = false, _ needle: String, _ mutate: @escaping @Sendable (HostileFolder) throws -> Void
    )
        -> HostileCase
    {
        let commands: [HostileCommand] = [.verify, .verifySource, .merge, .forwardCheck] + (partial ? [.combine] : [])
        return HostileCase(
            name: name, partial: partial, expect: Dictionary(uniqueKeysWithValues: commands.map { ($0, [2]) }), needle: needle,
            mutate: mutate)
    }

    /// The shards are not what a valid manifest records: a difference (exit 1) where the command reads them.
    static func differs(
        _ name: String, _ commands: [HostileCommand: Set<Int32>], _ needle: String,
        _ mutate: @escaping @Sendable (HostileFolder) throws -> Void
    )
        -> HostileCase
    {
        HostileCase(name: name, expect: commands, needle: needle, mutate: mutate)
    }
}

/// A case's folder: `dir/out` (OUT), sentinels beside it (`secret.txt`, `outside.safetensors`, which
/// no command may open), and `dir/merged` for `merge`.
struct HostileFolder: Sendable {
    let dir: String
    var out: String { dir + "/out" }
    var secret: String { dir + "/secret.txt" }
    var outside: String { dir + "/outside.safetensors" }
    static let secretBytes = Array("secret\n".utf8)

    func file(_ name: String) -> String { out + "/" + name }

    /// Changes the JSON value at `path` (object keys and array indices) of a manifest; nil removes it.
    func edit(_ path: [Any], in manifest: String = "manifest.json", _ change: (Any?) -> Any?) throws {
        let url = URL(fileURLWithPath: file(manifest))
        let root = try JSONSerialization.jsonObject(with: Data(contentsOf: url))
        func modify(_ value: Any?, _ path: ArraySlice<Any>) -> Any? {
            guard let head = path.first else { return change(value) }
            if let key = head as? String, var object = value as? [String: Any] {
                object[key] = modify(object[key], path.dropFirst())
                return object
            }
            if let index = head as? Int, var array = value as? [Any] {
                if let new = modify(array[index], path.dropFirst()) { array[index] = new } else { array.remove(at: index) }
                return array
            }
            Issue.record("no \(head) in the manifest")
            return value
        }
        try JSONSerialization.data(withJSONObject: modify(root, path[...])!, options: [.sortedKeys]).write(to: url)
    }

    func set(_ path: Any..., to value: Any, in manifest: String = "manifest.json") throws { try set(at: path, to: value, in: manifest) }
    func set(at path: [Any], to value: Any, in manifest: String = "manifest.json") throws { try edit(path, in: manifest) { _ in value } }
    func remove(_ path: Any..., in manifest: String = "manifest.json") throws { try edit(path, in: manifest) { _ in nil } }
    func value(_ path: Any..., in manifest: String = "manifest.json") throws -> Any { try value(at: path, in: manifest) }
    func value(at path: [Any], in manifest: String = "manifest.json") throws -> Any {
        var result: Any?
        try edit(path, in: manifest) {
            result = $0
            return $0
        }
        return result!
    }

    /// Flips one bit of a rank file, `fromEnd` bytes before its end (in the last tensor's data).
    func flip(_ name: String, fromEnd: Int = 5) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: file(name)))
        let end = try handle.seekToEnd()
        try handle.seek(toOffset: end - UInt64(fromEnd))
        let byte = try handle.read(upToCount: 1)![0]
        try handle.seek(toOffset: end - UInt64(fromEnd))
        try handle.write(contentsOf: [byte ^ 1])
        try handle.close()
    }

    /// Records a file's current size and SHA-256 in the manifest (tensor hashes left as they were).
    func rehash(rank: Int, _ name: String) throws {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: file(name)))
        try set("ranks", rank, "files", 0, "sha256", to: SHA256.hash(data: bytes).hexString)
        try set("ranks", rank, "files", 0, "bytes", to: bytes.count)
    }

    /// Points a copied-file entry at the secret file's size and hash, so only its name can stop a reader.
    func copied(_ index: Int, named name: String) throws {
        try set("copied", index, "name", to: name)
        try set("copied", index, "bytes", to: Self.secretBytes.count)
        try set("copied", index, "sha256", to: SHA256.hash(data: Self.secretBytes).hexString)
    }
}

/// Opens, reads and writes of the files directly in a folder, by any process (inotify): what the
/// hostile-folder tests use to prove that nothing outside OUT and the merge output was touched.
final class FolderWatch {
    let fd: Int32

    init(_ folder: String) throws {
        fd = inotify_init1(0o4000)  // IN_NONBLOCK
        guard fd >= 0 else { throw TestFailure("inotify_init1 failed") }
        // IN_ACCESS | IN_MODIFY | IN_ATTRIB | IN_OPEN | IN_MOVED_TO | IN_CREATE | IN_DELETE
        guard inotify_add_watch(fd, folder, 0x1 | 0x2 | 0x4 | 0x20 | 0x80 | 0x100 | 0x200) >= 0 else {
            throw TestFailure("inotify_add_watch failed")
        }
    }

    /// The names of the files events were reported for since the last call (folders excluded).
    func touched() -> Set<String> {
        var names = Set<String>()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { return names }
            var i = 0
            while i + 16 <= n {
                let mask = buffer[i + 4..<i + 8].enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * $1.offset) }
                let length = buffer[i + 12..<i + 16].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
                let name = String(decoding: buffer[i + 16..<i + 16 + length].prefix { $0 != 0 }, as: UTF8.self)
                if !name.isEmpty, mask & 0x4000_0000 == 0 { names.insert(name) }
                i += 16 + length
            }
        }
    }

    deinit { close(fd) }
}

@Suite struct HostileFolderTests {
    /// The fixture sharded once per test process at DP 2 × TP 2: `full` with manifest.json, `partial`
    /// with manifest.ranks-0-1.json and manifest.ranks-2-3.json.
    static let bases: (full: String, partial: String) = {
        let dir = NSTemporaryDirectory() + "fineshard-hostile-\(getpid())"
        for (folder, ranks) in [("full", [String]()), ("partial", ["0-1"]), ("partial", ["2-3"])] {
            let args = ["shard", Models.fixture, "-o", dir + "/" + folder, "--dp", "2", "--tp", "2", "--quiet"]
            let result = try! run(fineshardBinary, args + (ranks.isEmpty ? [] : ["--ranks"] + ranks))
            precondition(result.status == 0, result.stderr)
        }
        return (dir + "/full", dir + "/partial")
    }()

    static var lmHead: [Any] { ["ranks", 0, "tensors", 0] }
    static let all: Set<Int32> = [1, 2]

    static let cases: [HostileCase] = [
        // Names: every one must stay a file inside OUT.
        .invalid("a copied file named ../secret.txt", "copied[0].name") { try $0.copied(0, named: "../secret.txt") },
        .invalid("a copied file named by an absolute path", "copied[0].name") { try $0.copied(0, named: $0.secret) },
        .invalid("a copied file name holding a NUL", "copied[0].name") { try $0.copied(0, named: "config.json\u{0}../../secret.txt") },
        .invalid("an empty copied file name", "copied[0].name") { try $0.copied(0, named: "") },
        .invalid("a copied file named manifest.json", "copied[0].name") { try $0.copied(0, named: "manifest.json") },
        .invalid("a copied file name that climbs out through a folder", "copied[0].name") {
            try $0.copied(0, named: "sub/../../secret.txt")
        },
        .invalid("a copied file name not in canonical form", "copied[0].name") { try $0.set("copied", 0, "name", to: "./config.json") },
        .invalid("a rank file named ../outside.safetensors", "ranks[0].files[0].name") {
            try $0.set("ranks", 0, "files", 0, "name", to: "../outside.safetensors")
        },
        .invalid("a rank file name --file-pattern does not give", "ranks[0].files[0].name") { f in
            try FileManager.default.moveItem(atPath: f.file("model-rank-0-part-0.safetensors"), toPath: f.file("other.safetensors"))
            try f.set("ranks", 0, "files", 0, "name", to: "other.safetensors")
        },
        .invalid("a tensor whose file is outside OUT", "ranks[0].tensors[0].file") {
            try $0.set(at: lmHead + ["file"], to: "../outside.safetensors")
        },
        .invalid("a tensor in another rank's file", "ranks[0].tensors[0].file") {
            try $0.set(at: lmHead + ["file"], to: "model-rank-1-part-0.safetensors")
        },
        HostileCase(
            name: "a rank file that is a symbolic link to a file outside OUT",
            expect: [.verify: [1], .verifySource: [1], .merge: [1], .forwardCheck: all], needle: "model-rank-0-part-0.safetensors"
        ) { f in
            try FileManager.default.removeItem(atPath: f.file("model-rank-0-part-0.safetensors"))
            try FileManager.default.createSymbolicLink(atPath: f.file("model-rank-0-part-0.safetensors"), withDestinationPath: f.outside)
        },
        HostileCase(
            name: "a copied file that is a symbolic link to a file outside OUT", expect: [.verify: [1], .verifySource: [1], .merge: [1]],
            needle: "config.json"
        ) { f in
            try FileManager.default.removeItem(atPath: f.file("config.json"))
            try FileManager.default.createSymbolicLink(atPath: f.file("config.json"), withDestinationPath: f.secret)
            try f.copied(0, named: "config.json")
        },
        // Numbers: sizes the planner refuses, and values that overflow.
        .invalid("parallel.dp of 0", "parallel") { try $0.set("parallel", "dp", to: 0) },
        .invalid("parallel.tp of -1", "parallel") { try $0.set("parallel", "tp", to: -1) },
        .invalid("a world of 2^80 ranks", "parallel") { f in
            try f.set("parallel", "dp", to: 1 << 40)
            try f.set("parallel", "tp", to: 1 << 40)
        },
        .invalid("parallel.vocab_padding of 0", "parallel") { try $0.set("parallel", "vocab_padding", to: 0) },
        .invalid("parallel.max_file_size of 0", "parallel") { try $0.set("parallel", "max_file_size", to: 0) },
        .invalid("a piece range ending near 2^62", "ranks[0].tensors[0].pieces[0].ranges[0]") {
            try $0.set(at: lmHead + ["pieces", 0, "ranges", 0], to: [0, 1 << 62])
        },
        .invalid("a piece placed near 2^62", "ranks[0].tensors[0].pieces[0].at[0]") {
            try $0.set(at: lmHead + ["pieces", 0, "at", 0], to: 1 << 62)
        },
        .invalid("a piece placed at -1", "ranks[0].tensors[0].pieces[0].at[1]") {
            try $0.set(at: lmHead + ["pieces", 0, "at", 1], to: -1)
        },
        .invalid("a rank tensor of shape [2^40, 2^40]", "ranks[0].tensors[0].shape") {
            try $0.set(at: lmHead + ["shape"], to: [1 << 40, 1 << 40])
        },
        .invalid("a source tensor of shape [2^40, 2^40]", "source.tensors[0].shape") {
            try $0.set("source", "tensors", 0, "shape", to: [1 << 40, 1 << 40])
        },
        .invalid("a negative dimension", "ranks[0].tensors[0].shape[1]") { try $0.set(at: lmHead + ["shape", 1], to: -64) },
        .invalid("a negative file size", "ranks[0].files[0].bytes") { try $0.set("ranks", 0, "files", 0, "bytes", to: -1) },
        .invalid("file sizes that add up past 2^63", "add up to more than 2^63") { f in
            for r in 0..<4 { try f.set("ranks", r, "files", 0, "bytes", to: 1 << 62) }
        },
        .invalid("a rank number outside DP × TP", "ranks[0].rank") { try $0.set("ranks", 0, "rank", to: 99) },
        // Structure.
        .invalid("an unknown schema", "schema") { try $0.set("schema", to: "fineshard.manifest/9") },
        .invalid("a manifest that is not JSON", "manifest.json") {
            try Data("{\"schema\": ".utf8).write(to: URL(fileURLWithPath: $0.file("manifest.json")))
        },
        .invalid("a manifest without ranks", "ranks") { try $0.remove("ranks") },
        .invalid("a rank listed twice", "ranks[1].rank") { f in try f.set("ranks", 1, to: try f.value("ranks", 0)) },
        .invalid("manifest.json without rank 3", "ranks 3") { try $0.remove("ranks", 3) },
        .invalid("a dp_rank that contradicts the rank", "ranks[1]") { try $0.set("ranks", 1, "dp_rank", to: 1) },
        .invalid("a piece with fewer dimensions than its source", "ranks[0].tensors[0].pieces[0].ranges") {
            try $0.set(at: lmHead + ["pieces", 0, "ranges"], to: [[0, 512]])
        },
        .invalid("a piece of a source tensor that does not exist", "ranks[0].tensors[0].pieces[0].source") {
            try $0.set(at: lmHead + ["pieces", 0, "source"], to: "no.such.tensor")
        },
        .invalid("two pieces that overlap", "overlaps") { f in
            let piece = try f.value(at: lmHead + ["pieces", 0])
            try f.set(at: lmHead + ["pieces"], to: [piece, piece])
        },
        .invalid("a tensor listed twice in a rank", "ranks[0].tensors[1].name") { f in
            try f.set("ranks", 0, "tensors", 1, to: try f.value(at: lmHead))
        },
        .invalid("a rank file without a SHA-256", "ranks[0].files[0].sha256") {
            try $0.set("ranks", 0, "files", 0, "sha256", to: NSNull())
        },
        .invalid("a malformed SHA-256", "ranks[0].files[0].sha256") { try $0.set("ranks", 0, "files", 0, "sha256", to: "../../etc") },
        .invalid("a malformed tensor hash", "tensor_sha256") {
            try $0.set("ranks", 0, "files", 0, "tensor_sha256", "lm_head.weight", to: "xyz")
        },
        .invalid("a file too small for the tensors the manifest puts in it", "ranks[0].files[0].bytes") {
            try $0.set("ranks", 0, "files", 0, "bytes", to: 100)
        },
        .invalid("a tensor whose dtype is not its source's", "ranks[0].tensors[0].pieces[0].source") {
            try $0.set(at: lmHead + ["dtype"], to: "F32")
        },
        // The shards against a valid manifest: differences.
        .differs(
            "a flipped byte in a rank file", [.verify: [1], .verifySource: [1], .merge: [1], .forwardCheck: [1]],
            "model-rank-1-part-0.safetensors"
        ) { try $0.flip("model-rank-1-part-0.safetensors") },
        // The file's own hash cannot tell (hash-only verify passes); the tensor's hash and the source can.
        .differs(
            "a flipped byte with the file's hash rewritten but not its tensor's", [.verifySource: [1], .merge: [1], .forwardCheck: [1]],
            "model.norm.weight"
        ) { f in
            try f.flip("model-rank-1-part-0.safetensors")
            try f.rehash(rank: 1, "model-rank-1-part-0.safetensors")
        },
        .differs("an altered copied file", [.verify: [1], .verifySource: [1], .merge: [1]], "config.json") { f in
            var bytes = try Data(contentsOf: URL(fileURLWithPath: f.file("config.json")))
            bytes[3] ^= 1
            try bytes.write(to: URL(fileURLWithPath: f.file("config.json")))
        },
        .differs(
            "a truncated rank file", [.verify: [1], .verifySource: [1], .merge: [1], .forwardCheck: all], "model-rank-2-part-0.safetensors"
        ) { f in
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: f.file("model-rank-2-part-0.safetensors")))
            try handle.truncate(atOffset: 1000)
            try handle.close()
        },
        .differs(
            "a missing rank file", [.verify: [1], .verifySource: [1], .merge: [1], .forwardCheck: all], "model-rank-3-part-0.safetensors"
        ) {
            try FileManager.default.removeItem(atPath: $0.file("model-rank-3-part-0.safetensors"))
        },
        .differs(
            "a rank file rewritten with another shape for a tensor, its hash recorded",
            [.verifySource: [1], .merge: [1], .forwardCheck: [1]], "lm_head.weight"
        ) { f in
            let path = f.file("model-rank-1-part-0.safetensors")
            let shard = try Checkpoint.open(path)
            let tensors = try shard.tensors.map { t in
                (
                    TensorSpec(name: t.name, dtype: t.dtype, shape: t.name == "lm_head.weight" ? [256, 128] : t.shape),
                    try readAll(shard, t.name)
                )
            }
            try FileManager.default.removeItem(atPath: path)
            try writeSafetensors(path, tensors, metadata: ["format": "pt"])
            try f.rehash(rank: 1, "model-rank-1-part-0.safetensors")
        },
        // Partial manifests that disagree.
        .invalid("partial manifests from two plans", partial: true, "fingerprints differ") {
            try $0.set("plan_fingerprint", to: String(repeating: "0", count: 64), in: "manifest.ranks-2-3.json")
        },
        .invalid("partial manifests with one fingerprint and different parallel sizes", partial: true, "different parallel") {
            try $0.set("parallel", "vocab_padding", to: 128, in: "manifest.ranks-2-3.json")
        },
        .invalid("partial manifests with one fingerprint and different source tensors", partial: true, "different source.tensors") {
            try $0.set("source", "tensors", 0, "shape", to: [1000, 65], in: "manifest.ranks-2-3.json")
        },
        .invalid("partial manifests listing different copied files", partial: true, "copied") {
            try $0.remove("copied", 2, in: "manifest.ranks-2-3.json")
        },
        .invalid("a rank in two partial manifests", partial: true, "rank 1") { f in
            try f.edit(["ranks"], in: "manifest.ranks-2-3.json") { ranks in
                [try! f.value("ranks", 1, in: "manifest.ranks-0-1.json")] + (ranks as! [Any])
            }
        },
        .invalid("a partial manifest with a piece outside its source", partial: true, "manifest.ranks-2-3.json") {
            try $0.set(at: lmHead + ["pieces", 0, "ranges", 0], to: [0, 1 << 62], in: "manifest.ranks-2-3.json")
        },
        HostileCase(
            name: "a partial manifest missing", partial: true,
            expect: [.verify: [1], .verifySource: [1], .merge: [2], .forwardCheck: [2], .combine: [2]], needle: "2-3"
        ) { try FileManager.default.removeItem(atPath: $0.file("manifest.ranks-2-3.json")) },
    ]

    @Test("The hostile-folder corpus holds at least 30 cases") func corpusIsLargeEnough() {
        #expect(Self.cases.count >= 30)
    }

    @Test("A folder edited without a change passes every command (the harness itself)", arguments: [false, true])
    func untouchedFolderPasses(_ partial: Bool) throws {
        let f = try prepare(partial: partial) { f in
            for name in OutputFolder(f.out).manifestNames() { try f.edit([], in: name) { $0 } }
        }
        defer { try? FileManager.default.removeItem(atPath: f.dir) }
        for command in HostileCommand.allCases where partial || command != .combine {
            let result = try run(fineshardBinary, command.arguments(out: f.out, merged: f.dir + "/merged-\(command)"))
            #expect(result.status == 0, "\(command.rawValue): \(result.stdout)\(result.stderr)")
        }
    }

    @Test(
        "A hostile output folder exits 1 or 2 naming the field or file, without a crash, touching nothing outside OUT and the merge output",
        arguments: cases)
    func hostileFolderIsRefused(_ c: HostileCase) throws {
        let f = try prepare(partial: c.partial, c.mutate)
        defer { try? FileManager.default.removeItem(atPath: f.dir) }
        let before = try folderContents(f.dir)
        let watch = try FolderWatch(f.dir)
        for (command, codes) in c.expect.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            let merged = f.dir + "/merged"
            let result = try run(fineshardBinary, command.arguments(out: f.out, merged: merged))
            let output = result.stdout + result.stderr
            #expect(codes.contains(result.status), "\(command.rawValue): exit \(result.status), expected \(codes.sorted()): \(output)")
            #expect(output.contains(c.needle), "\(command.rawValue): '\(c.needle)' not in: \(output)")
            #expect(!output.contains("Fatal error") && !output.contains("crashed"), "\(command.rawValue): \(output)")
            let touched = watch.touched().subtracting(["out", "merged"])
            #expect(touched.isEmpty, "\(command.rawValue) touched \(touched.sorted()) outside OUT")
            #expect(try folderContents(f.dir).filter { !$0.key.hasPrefix("merged/") } == before, "\(command.rawValue) changed the folders")
            _ = watch.touched()  // this test's own reads
            let written = (try? FileManager.default.subpathsOfDirectory(atPath: merged)) ?? []
            #expect(written.allSatisfy { !$0.hasSuffix(".safetensors") && !$0.hasSuffix(".json") }, "\(command.rawValue) wrote \(written)")
        }
    }

    @Test("shard --resume trusts a journal entry only for the files and tensors its plan writes")
    func aHostileJournalEntryIsRewrittenNotTrusted() throws {
        let f = try prepare(partial: false) { f in
            try FileManager.default.removeItem(atPath: f.file("manifest.json"))
            let url = URL(fileURLWithPath: f.file(".fineshard/rank-0.json"))
            var entry = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
            var rank = try #require(entry["rank"] as? [String: Any])
            var files = try #require(rank["files"] as? [[String: Any]])
            let outside = try Data(contentsOf: URL(fileURLWithPath: f.outside))
            files[0]["name"] = "../outside.safetensors"
            (files[0]["bytes"], files[0]["sha256"]) = (outside.count, SHA256.hash(data: outside).hexString)
            rank["files"] = files
            entry["rank"] = rank
            try JSONSerialization.data(withJSONObject: entry).write(to: url)
        }
        defer { try? FileManager.default.removeItem(atPath: f.dir) }
        let watch = try FolderWatch(f.dir)
        let result = try run(fineshardBinary, ["shard", Models.fixture, "-o", f.out, "--dp", "2", "--tp", "2", "--resume", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(watch.touched().subtracting(["out"]).isEmpty)
        #expect(result.stdout.contains("\"ranks_written\" : [\n    0\n  ]"), "\(result.stdout)")
        #expect(try run(fineshardBinary, ["verify", f.out, "--source", Models.fixture, "--quiet"]).status == 0)
    }

    /// A fresh copy of a base folder with the sentinels beside it, changed by `mutate`.
    func prepare(partial: Bool, _ mutate: (HostileFolder) throws -> Void) throws -> HostileFolder {
        let base = partial ? Self.bases.partial : Self.bases.full
        let dir = try TemporaryFolder()
        let f = HostileFolder(dir: dir.path)
        try FileManager.default.copyItem(atPath: base, toPath: f.out)
        try Data(HostileFolder.secretBytes).write(to: URL(fileURLWithPath: f.secret))
        try FileManager.default.copyItem(atPath: f.file("model-rank-0-part-0.safetensors"), toPath: f.outside)
        try mutate(f)
        return f
    }
}
