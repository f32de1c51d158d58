import Foundation
import Testing

@testable import FineShard

/// `shard --format hdf5` end to end: the files do not depend on `--threads`, and a chunk whose
/// zstd frame checksum fails is exit 2 when read as a source and a difference (exit 1) in
/// `verify`, named by file, dataset and chunk.
@Suite struct HDF5OutputTests {
    /// A Llama whose embedding and lm_head (4096 × 256 bf16, 2 MiB) are two 1 MiB chunks each:
    /// chunk 1 of each starts at row 2048.
    static func makeModel(_ dir: String) throws {
        try makeLlama(in: dir, heads: 4, kvHeads: 2, headDim: 64, hidden: 256, intermediate: 512, vocab: 4096, layers: 1)
    }

    static let embedding = "model.embed_tokens.weight"

    static func shard(_ source: String, _ out: String, _ arguments: [String]) throws {
        let result = try run(fineshardBinary, ["shard", source, "-o", out, "--quiet", "--format", "hdf5"] + arguments)
        guard result.status == 0 else { throw TestFailure("shard \(arguments) failed (\(result.status)): \(result.stderr)") }
    }

    static func h5Files(_ out: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: out).filter { $0.hasSuffix(".h5") }.sorted()
    }

    @Test func oneOrTwoThreadsAndAnyMemoryBudgetWriteByteIdenticalFiles() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        try Self.makeModel(dir.file("src"))
        let runs = [["--threads", "1"], ["--threads", "2"], ["--threads", "2", "--memory-budget", "1MiB"]]
        for (i, arguments) in runs.enumerated() { try Self.shard(dir.file("src"), dir.file("out\(i)"), ["--dp", "2"] + arguments) }
        let names = try Self.h5Files(dir.file("out0"))
        #expect(names.count == 2)
        for i in 1..<runs.count {
            #expect(try Self.h5Files(dir.file("out\(i)")) == names)
            for name in names + ["manifest.json"] {
                let a = try Data(contentsOf: URL(fileURLWithPath: dir.file("out0/\(name)")))
                let b = try Data(contentsOf: URL(fileURLWithPath: dir.file("out\(i)/\(name)")))
                #expect(a == b, "\(name) differs with \(runs[i])")
            }
        }
    }

    @Test func aCompressionLevelZstdDoesNotHaveIsExit2NamingTheOption() throws {
        for level in ["23", "-200000", "x"] {
            let result = try run(fineshardBinary, ["shard", "src", "-o", "out", "--format", "hdf5", "--compression-level", level])
            #expect(result.status == 2, "\(level): \(result.stderr)")
            #expect(result.stderr.contains("--compression-level"), "\(level): \(result.stderr)")
        }
    }

    @Test func aSourceChunkWhoseChecksumFailsIsExit2NamingFileDatasetAndChunk() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        try Self.makeModel(dir.file("src"))
        // One rank of all-DP 1 is the whole model: a dense HDF5 checkpoint written by fineshard.
        try Self.shard(dir.file("src"), dir.file("out"), ["--dp", "1"])
        let rankFile = try #require(try Self.h5Files(dir.file("out")).first)
        try FileManager.default.createDirectory(atPath: dir.file("h5"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: dir.file("out/\(rankFile)"), toPath: dir.file("h5/model.h5"))
        try FileManager.default.copyItem(atPath: dir.file("src/config.json"), toPath: dir.file("h5/config.json"))
        try Self.shard(dir.file("h5"), dir.file("good"), ["--dp", "2"])

        try HDF5Tests.corruptChunk(dir.file("h5/model.h5"), dataset: Self.embedding, offset: [2048, 0])
        let result = try run(fineshardBinary, ["shard", dir.file("h5"), "-o", dir.file("bad"), "--format", "hdf5", "--dp", "2", "--quiet"])
        #expect(result.status == 2, "\(result.stderr)")
        #expect(
            result.stderr.contains("model.h5: dataset '/\(Self.embedding)', chunk 1 at offset [2048, 0] is damaged: "), "\(result.stderr)")
        #expect(!result.stderr.contains("Fatal error"), "\(result.stderr)")
    }

    @Test func anOutputChunkWhoseChecksumFailsIsAVerifyDifferenceNamingFileDatasetAndChunk() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        try Self.makeModel(dir.file("src"))
        let out = dir.file("out")
        try Self.shard(dir.file("src"), out, ["--dp", "2"])
        let file = try #require(try Self.h5Files(out).last)
        try HDF5Tests.corruptChunk(dir.file("out/\(file)"), dataset: Self.embedding, offset: [2048, 0])
        let named = "\(file): dataset '/\(Self.embedding)', chunk 1 at offset [2048, 0] is damaged"

        // The file's SHA-256 no longer matches, and the chunk checksums say where.
        let plain = try run(fineshardBinary, ["verify", out, "--quiet"])
        #expect(plain.status == 1, "\(plain.stdout)\(plain.stderr)")
        #expect(plain.stdout.contains("DIFFERENCE: ") && plain.stdout.contains(named), "\(plain.stdout)")

        // With the manifest's hash rewritten to match, only reading the chunk can tell: verify
        // --source reassembles the tensor from it.
        try VerifyMutationTests().rewriteHash(out: out, file: file, tensorHashes: false)
        let full = try run(fineshardBinary, ["verify", out, "--source", dir.file("src"), "--quiet"])
        #expect(full.status == 1, "\(full.stdout)\(full.stderr)")
        #expect(full.stdout.contains(named), "\(full.stdout)")
    }
}
