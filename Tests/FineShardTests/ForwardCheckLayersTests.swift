import Foundation
import Testing

@testable import FineShard
@testable import FineShardFormats
@testable import FineShardVerification

/// `forward-check --layers` (issue 13, "Real size"): single layers run densely and sharded on the same
/// input, reading only their tensors and the experts the tokens pick. The per-layer results must agree
/// with the full-model run, count what they read, and keep the teeth of the full mode.
@Suite("forward-check --layers")
struct ForwardCheckLayersTests {
    let base = ForwardCheckTests()
    static let deepseek = Environment.root + "/fixtures/tiny-deepseek-v3"

    /// Runs `forward-check --layers LIST --json`; returns the exit status, the report and stderr.
    func layerCheck(
        _ out: String, source: String, _ layers: String, _ arguments: [String] = []
    ) throws -> (
        Int32, LayerCheckReport?, String
    ) {
        let result = try run(fineshardBinary, ["forward-check", out, "--source", source, "--json", "--layers", layers] + arguments)
        return (result.status, try? JSONDecoder().decode(LayerCheckReport.self, from: Data(result.stdout.utf8)), result.stderr)
    }

    static let cases: [(String, [String], Int)] = [
        ("tiny-deepseek-v3", ["--dp", "4", "--enable-expert-parallel", "--additional-config", ForwardCheckTests.everyComponent(2)], 3),
        (
            "tiny-deepseek-v3-w8a8", ["--dp", "4", "--enable-expert-parallel", "--additional-config", ForwardCheckTests.everyComponent(2)],
            3
        ),
        ("tiny-deepseek-v3-fp8", ["--dp", "2", "--tp", "2", "--enable-expert-parallel"], 3),
        ("tiny-deepseek-v3", ["--dp", "4", "--additional-config", ForwardCheckTests.everyComponent(2)], 3),
        ("tiny-llama", ["--dp", "4", "--additional-config", finegrained(embedding: 2, oProj: 2, mlp: 2)], 2),
        ("tiny-llama", ["--dp", "2", "--tp", "2", "--additional-config", finegrained(mlp: 2)], 2),
    ]

    @Test("every layer checked on its own agrees with the full-model run", arguments: cases)
    func agreesWithFullRun(_ fixture: String, _ shardArguments: [String], _ layers: Int) throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let source = Environment.root + "/fixtures/" + fixture
        let out = dir.file("out")
        try base.shard(source, out, shardArguments)
        let args = ["--seed", "7", "--tokens-per-rank", "5"]
        let (fullStatus, full, fullErr) = try base.forwardCheck(out, source: source, args)
        #expect(fullStatus == 0, "\(fullErr)")
        let (status, report, stderr) = try layerCheck(out, source: source, "0-\(layers - 1)", args)
        #expect(status == 0, "\(stderr) \(report?.failures ?? [])")
        let r = try #require(report)
        let f = try #require(full)
        #expect(r.ok && r.layers.map(\.layer) == Array(0..<layers))
        #expect(r.layers.map(\.input) == [.embedding] + Array(repeating: .previousLayer, count: layers - 1))
        #expect(r.tokens == f.ranks.filter { $0.tpRank == 0 }.map(\.tokens))
        for l in r.layers {
            #expect(l.passed && l.maxRelError <= 1e-5 && l.ranks.count == f.ranks.count && l.firstDifferences.isEmpty, "\(l.layer)")
            #expect(l.sourceBytesRead > 0 && l.shardBytesRead > 0)
        }
        // The same tokens reach every MoE layer with the same hidden states up to float rounding, so
        // they pick the same experts as in the full run, with the same margins.
        let fullChoices = f.ranks.flatMap { $0.routing ?? [] }
        let layerChoices = r.layers.flatMap { $0.routing?.detail ?? [] }
        #expect(layerChoices.count == fullChoices.count && (fullChoices.isEmpty == (fixture == "tiny-llama")))
        for c in layerChoices {
            let match = try #require(fullChoices.first { $0.rank == c.rank && $0.layer == c.layer && $0.position == c.position })
            #expect(match.experts == c.experts && abs(match.margin - c.margin) <= 1e-5, "\(c) vs \(match)")
        }
        // Every shard tensor the layers read was checked against its SHA-256 in the manifest.
        #expect(r.hashes.checked && r.hashes.note.hasPrefix("checked") && r.hashes.filesTouched > 0, "\(r.hashes.note)")
    }

    @Test("an MoE layer reads its own tensors and only the experts the tokens pick, from the source and from the shards")
    func readsOnlySelectedExperts() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        try base.shard(Self.deepseek, out, ["--dp", "4", "--enable-expert-parallel"])
        // Layer 2 alone (random input rows), one token per DP rank: at most 4 × 2 of the 8 experts.
        let (status, report, stderr) = try layerCheck(out, source: Self.deepseek, "2", ["--tokens-per-rank", "1", "--seed", "3"])
        #expect(status == 0, "\(stderr)")
        let layer = try #require(report?.layers.first)
        let routing = try #require(layer.routing)
        #expect(layer.input == .random && layer.kind == "moe")
        let selected = routing.expertsSelected
        #expect(!selected.isEmpty && selected.count < routing.experts, "\(selected)")
        #expect(routing.expertsReadFromSource == selected && routing.expertsReadFromShards == selected)
        // gate, up and down of each picked expert, read once (from its one EP owner in the shards).
        #expect(routing.expertTensorsReadFromSource == 3 * selected.count && routing.expertTensorsReadFromShards == 3 * selected.count)
        // The source bytes are exactly layer 2's tensors less the experts nobody picked.
        let checkpoint = try Checkpoint.open(Self.deepseek)
        let prefix = "model.layers.2."
        var expected = 0
        for t in checkpoint.tensors where t.name.hasPrefix(prefix) {
            let rest = t.name.dropFirst((prefix + "mlp.experts.").count)
            if t.name.hasPrefix(prefix + "mlp.experts."), let e = Int(rest.prefix { $0 != "." }), !selected.contains(e) { continue }
            expected += t.byteCount
        }
        #expect(layer.sourceBytesRead == expected)
        let everything = checkpoint.tensors.filter { $0.name.hasPrefix(prefix) }.reduce(0) { $0 + $1.byteCount }
        #expect(layer.sourceBytesRead < everything)
    }

    @Test("an expert on the wrong EP rank is caught in per-layer mode, naming the rank and the tensor")
    func misplacedExpert() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        try base.shard(Self.deepseek, out, ["--dp", "4", "--enable-expert-parallel"])
        let args = ["--tokens-per-rank", "2", "--seed", "5"]
        let (_, clean, _) = try layerCheck(out, source: Self.deepseek, "1", args)
        let selected = try #require(clean?.layers.first?.routing?.expertsSelected)
        // 8 experts over 4 ranks: rank e / 2 owns expert e. Swap a picked expert's weights with an
        // expert of the next rank, so each sits on the other's rank under the other's name.
        let a = try #require(selected.first)
        let b = (a / 2 * 2 + 2) % 8
        let (ra, rb) = (a / 2, b / 2)
        for part in ["gate_proj", "up_proj", "down_proj"] {
            let (ta, tb) = ("model.layers.1.mlp.experts.\(a).\(part).weight", "model.layers.1.mlp.experts.\(b).\(part).weight")
            let (bytesA, bytesB) = (try base.tensorBytes(out, base.file(ra), ta), try base.tensorBytes(out, base.file(rb), tb))
            try base.alter(out, base.file(ra), ta) { _ in bytesB }
            try base.alter(out, base.file(rb), tb) { _ in bytesA }
        }
        let (status, report, stderr) = try layerCheck(out, source: Self.deepseek, "1", args)
        #expect(status == 1, "\(stderr)")
        let layer = try #require(report?.layers.first)
        #expect(!layer.passed && !(report?.ok ?? true))
        let gate = "model.layers.1.mlp.experts.\(a).gate_proj.weight"
        #expect(layer.firstDifferences.contains { $0.rank == ra && $0.tensors == [gate] }, "\(layer.firstDifferences)")
        let text = try run(fineshardBinary, ["forward-check", out, "--source", Self.deepseek, "--layers", "1"] + args)
        #expect(
            text.status == 1 && text.stdout.contains("FIRST DIFFERENCE: rank \(ra), layer 1 expert \(a) gate_proj output ('\(gate)')"),
            "\(text.stdout)")
        #expect(text.stdout.contains("MISMATCH: layer 1, rank ") && text.stdout.contains("forward-check FAILED"), "\(text.stdout)")
    }

    @Test("bad --layers values exit 2 naming the option", arguments: ["3", "0,3", "x", "1,,2", "-1", "2-1", " ", "0-", "1.5", "1-2-3"])
    func badLayers(_ value: String) throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let out = dir.file("out")
        try base.shard(Self.deepseek, out, ["--dp", "2"])
        let result = try run(fineshardBinary, ["forward-check", out, "--source", Self.deepseek, "--layers=\(value)"])
        #expect(result.status == 2, "\(value): \(result.stderr)")
        #expect(result.stderr.contains("--layers"), "\(value): \(result.stderr)")
        if value == "3" { #expect(result.stderr.contains("has 3 layers (0–2)"), "\(result.stderr)") }
    }

    @Test("--layers parses indices and inclusive ranges, sorted and without repeats")
    func parsesLayers() throws {
        #expect(try ForwardChecker.parseLayers("0,3,60") == [0, 3, 60])
        #expect(try ForwardChecker.parseLayers("60, 0-2 ,1") == [0, 1, 2, 60])
        #expect(throws: LayerCheckError.self) { try ForwardChecker.parseLayers("+1") }
    }

    @Test("random input rows are seeded and have an RMS of one")
    func randomRows() {
        let m = ForwardChecker.randomRows(rows: 3, cols: 64, seed: 9)
        #expect(m.data == ForwardChecker.randomRows(rows: 3, cols: 64, seed: 9).data)
        #expect(m.data != ForwardChecker.randomRows(rows: 3, cols: 64, seed: 10).data)
        for r in 0..<3 {
            let row = m.data[r * 64..<(r + 1) * 64]
            #expect(abs((row.map { $0 * $0 }.reduce(0, +) / 64).squareRoot() - 1) < 1e-5)
        }
    }
}
