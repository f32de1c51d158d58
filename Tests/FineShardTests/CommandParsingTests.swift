import ArgumentParser
import Testing

@testable import FineShard
@testable import fineshard

/// The command line parsed in process (`Fineshard.parseAsRoot`), beside the subprocess tests:
/// options are checked in `validate()`, before anything is opened.
@Suite struct CommandParsingTests {
    @Test func shardParsesByteSizesIntoBytes() throws {
        let command = try Fineshard.parseAsRoot([
            "shard", "model", "-o", "out", "--dp", "4", "--max-file-size", "512MiB", "--memory-budget", "1GiB", "--ranks", "0-1,3",
        ])
        let shard = try #require(command as? Shard)
        #expect(try shard.options.maxFileSizeBytes() == 512 << 20)
        #expect(try shard.memoryBudgetBytes() == 1 << 30)
        #expect(shard.options.dp == 4 && shard.ranks == "0-1,3")
    }

    @Test func theDefaultsAreTheDocumentedSizes() throws {
        let shard = try #require(try Fineshard.parseAsRoot(["shard", "model", "-o", "out", "--dp", "2"]) as? Shard)
        #expect(try shard.options.maxFileSizeBytes() == 5 << 30)
        #expect(try shard.memoryBudgetBytes() == 512 << 20)
        #expect(shard.options.maxFileSize.description == "5GiB")
    }

    @Test(arguments: [
        ["plan", "model", "--dp", "2", "--max-file-size", "1e10TiB"],
        ["shard", "model", "-o", "out", "--dp", "2", "--max-file-size", "lots"],
        ["shard", "model", "-o", "out", "--dp", "2", "--memory-budget", "1KiB"],
        ["shard", "model", "-o", "out", "--dp", "2", "--threads", "0"],
        ["shard", "model", "-o", "out", "--dp", "2", "--ranks", "3-1"],
        ["merge", "out", "-o", "dense", "--max-file-size", "99999999999999999999"],
        ["verify", "out", "--threads", "0"],
        ["forward-check", "out", "--source", "model", "--tokens-per-rank", "100000000000"],
        ["forward-check", "out", "--source", "model", "--tokens-per-rank", "0"],
        ["forward-check", "out", "--source", "model", "--tolerance", "nan"],
        ["forward-check", "out", "--source", "model", "--tokens", "1,x"],
        ["forward-check", "out", "--source", "model", "--layers", "2-1"],
    ])
    func aBadOptionIsRefusedInValidationWithExitCodeTwo(_ arguments: [String]) {
        do {
            _ = try Fineshard.parseAsRoot(arguments)
            Issue.record("\(arguments) parsed")
        } catch {
            #expect(Fineshard.exitCode(for: error) == ExitCode(2), "\(error)")
        }
    }

    @Test(
        "DP × TP beyond 2^20 ranks, or beyond 64 bits, is refused (exit 2), not trapped",
        arguments: [
            ["--dp", "99999999999", "--tp", "99999999999"], ["--dp", "4611686018427387904", "--tp", "4"], ["--dp", "2000000"],
        ])
    func aWorldTooLargeIsRefused(_ sizes: [String]) throws {
        let result = try run(fineshardBinary, ["plan", Models.fixture] + sizes)
        #expect(result.status == 2, "\(result.stderr)")
        #expect(result.stderr.contains("is more than 1048576 ranks"), "\(result.stderr)")
    }

    @Test func aSizeTooLargeForSixtyFourBitsIsNamedAsSuch() {
        #expect(ByteCount.read("1e10TiB") == .tooLarge)
        #expect(ByteCount.read("99999999999999999999") == .tooLarge)
        #expect(ByteCount.read("8EiB") == .notASize)
        #expect(ByteCount.read("1.5KiB") == .bytes(1536))
        let error = #expect(throws: PlanError.self) {
            try ByteSize("1e10TiB").bytes(option: "--max-file-size", problem: "is not a size")
        }
        #expect(error?.description == "--max-file-size: '1e10TiB' is too large (at most \(Int.max) bytes)")
    }
}
