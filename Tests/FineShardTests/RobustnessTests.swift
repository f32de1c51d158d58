import Foundation
import Testing

@testable import FineShard

/// Inputs that change underneath, and names that try to be paths.
@Suite struct RobustnessTests {
    @Test func aSourceTruncatedBetweenPlanningAndReadingIsAnIOErrorAndNoManifest() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        try makeLlama(in: dir.file("src"))
        let checkpoint = try Checkpoint.open(dir.file("src"))
        let plan = try ShardPlan.make(checkpoint, parallel: ParallelConfig(dp: 2))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: dir.file("src/model.safetensors")))
        try handle.truncate(atOffset: UInt64(checkpoint.files[0].bytes / 2))
        try handle.close()
        let error = #expect(throws: SystemError.self) {
            _ = try ShardExecutor(checkpoint: checkpoint, plan: plan, options: ShardOptions(output: dir.file("out"))).run()
        }
        #expect(error?.exitCode == 3)
        #expect(error?.description.contains("model.safetensors") == true, "\(String(describing: error))")
        #expect(!FileManager.default.fileExists(atPath: dir.file("out/manifest.json")))
    }

    @Test func aFileShrinkingUnderItsMappingReadsZerosAndIsReportedNotASIGBUS() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let path = dir.file("weights")
        try Data(repeating: 7, count: 64 << 10).write(to: URL(fileURLWithPath: path))
        let file = try OpenFile.forReading(path)
        #expect(throws: SystemError.self) { _ = try file.map(offset: 60 << 10, count: 8 << 10) }
        let region = try file.map(offset: 4096, count: 32 << 10)
        try region.checkIntact()
        #expect(truncate(path, 8192) == 0)
        // The first page is still the file's; the ones past its new end read as zeros.
        #expect(region.bytes.reduce(0) { $0 + Int($1) } == 4096 * 7)
        let error = #expect(throws: SystemError.self) { try region.checkIntact() }
        #expect(error?.exitCode == 3)
        #expect(error?.description.contains("weights") == true)
    }

    @Test func aSourceRewrittenInPlaceWithTheSameSizeIsDetectedBeforeTheManifest() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        try makeLlama(in: dir.file("src"))
        let checkpoint = try Checkpoint.open(dir.file("src"))
        let plan = try ShardPlan.make(checkpoint, parallel: ParallelConfig(dp: 2))
        // Same bytes count, new modification time: what a converter rewriting the file leaves.
        Thread.sleep(forTimeInterval: 0.02)
        let data = try Data(contentsOf: URL(fileURLWithPath: dir.file("src/model.safetensors")))
        try data.write(to: URL(fileURLWithPath: dir.file("src/model.safetensors")))
        let error = #expect(throws: CheckpointError.self) {
            _ = try ShardExecutor(checkpoint: checkpoint, plan: plan, options: ShardOptions(output: dir.file("out"))).run()
        }
        #expect(error?.description.contains("since it was opened") == true, "\(String(describing: error))")
        #expect(!FileManager.default.fileExists(atPath: dir.file("out/manifest.json")))
        #expect(JournalEntry.all(dir.file("out")).isEmpty, "no rank may look complete to --resume")
    }

    /// Tensor names with `/`, `..`, NUL and thousands of characters stay data: the safetensors
    /// output holds them inside its header and nothing is written outside OUT; HDF5, whose
    /// dataset names cannot hold `/` or NUL, refuses them before writing.
    @Test func hostileTensorNamesNeverWriteOutsideTheOutputFolder() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let names = ["../../escape", "a/b/../../../c", "nul\u{0}inside", String(repeating: "long.", count: 2000) + "x", "/abs"]
        try makeLlama(in: dir.file("src"))
        try writeSafetensors(
            dir.file("src/extra.safetensors"),
            names.enumerated().map { (TensorSpec(name: $1, dtype: .f32, shape: [2]), randomBytes(8, seed: UInt64($0))) })
        let before = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        let r = try run(fineshardBinary, ["shard", dir.file("src"), "-o", dir.file("out/inner"), "--dp", "2", "--quiet"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: dir.path)) == Set(before + ["out"]))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.file("out")) == ["inner"])
        let written = try Checkpoint.open(dir.file("out/inner/model-rank-1-part-0.safetensors"))
        #expect(Set(names).isSubset(of: Set(written.tensors.map(\.name))))
        #expect(try run(fineshardBinary, ["verify", dir.file("out/inner"), "--source", dir.file("src"), "--quiet"]).status == 0)
        let h5 = try run(fineshardBinary, ["shard", dir.file("src"), "-o", dir.file("h5"), "--dp", "2", "--format", "hdf5", "--quiet"])
        #expect(h5.status == 2)
        #expect(h5.stderr.contains("cannot be an HDF5 dataset name"), "\(h5.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir.file("h5/model-rank-0-part-0.h5")))
    }

    @Test func aFilePatternThatIsAPathIsRefused() throws {
        let r = try run(fineshardBinary, ["plan", Models.fixture, "--dp", "2", "--file-pattern", "../x-{rank}-{part}"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("--file-pattern"))
    }
}

/// A real full filesystem: a size-limited tmpfs, where the machine lets the tests mount one (root).
@Suite(.enabled(if: getuid() == 0, "needs root to mount a tmpfs"))
struct FullDiskTests {
    @Test func aTmpfsTooSmallForTheOutputIsRefusedBeforeWritingAndResumeCompletesWithRoom() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let mountPoint = dir.file("small")
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        guard try run("/bin/mount", ["-t", "tmpfs", "-o", "size=256k", "tmpfs", mountPoint]).status == 0 else { return }
        defer { _ = try? run("/bin/umount", [mountPoint]) }
        let args = ["shard", Models.fixture, "-o", mountPoint + "/out", "--dp", "4", "--quiet"]
        let full = try run(fineshardBinary, args)
        #expect(full.status == 3, "\(full.stderr)")
        #expect(full.stderr.contains("not enough free space"), "\(full.stderr)")
        let left = (try? FileManager.default.contentsOfDirectory(atPath: mountPoint + "/out")) ?? []
        #expect(!left.contains { $0.hasSuffix(".safetensors") || $0.hasSuffix(".fineshard-tmp") }, "\(left)")
        #expect(try run("/bin/mount", ["-o", "remount,size=8m", mountPoint]).status == 0)
        let resumed = try run(fineshardBinary, args + ["--resume"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(try run(fineshardBinary, ["verify", mountPoint + "/out", "--source", Models.fixture, "--quiet"]).status == 0)
    }
}
