import Foundation
import Testing

@testable import FineShard

@Suite struct SafetensorsTests {
    static let specs: [TensorSpec] = [
        TensorSpec(name: "model.embed_tokens.weight", dtype: .bf16, shape: [10, 6]),
        TensorSpec(name: "b.f32", dtype: .f32, shape: [3, 5, 2]),
        TensorSpec(name: "c.scalar", dtype: .i64, shape: []),
        TensorSpec(name: "d.empty", dtype: .i16, shape: [0, 3]),
        TensorSpec(name: "e.u8", dtype: .u8, shape: [7]),
    ]

    static func contents() -> [(TensorSpec, [UInt8])] {
        specs.enumerated().map { ($1, randomBytes($1.byteCount, seed: UInt64($0))) }
    }

    @Test func writtenFilesReadBackByteForByteWithAPaddedHeader() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let tensors = Self.contents()
        let written = try writeSafetensors(dir.file("m.safetensors"), tensors, metadata: ["format": "pt"])
        #expect(!FileManager.default.fileExists(atPath: temporaryPath(for: dir.file("m.safetensors"))))
        let bytes = try Data(contentsOf: URL(fileURLWithPath: dir.file("m.safetensors")))
        #expect(written.bytes == bytes.count)
        let headerLength = bytes.prefix(8).withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        #expect((8 + headerLength) % 8 == 0)
        let checkpoint = try Checkpoint.open(dir.file("m.safetensors"))
        #expect(checkpoint.tensors.count == tensors.count)
        for (spec, data) in tensors {
            let t = try checkpoint.tensor(spec.name)
            #expect(t.dtype == spec.dtype && t.shape == spec.shape)
            #expect(try readAll(checkpoint, spec.name) == data)
            #expect(t.offset! % spec.dtype.size == 0, "tensors are aligned to their element size")
        }
    }

    @Test func twoWritesOfTheSameTensorsAreByteIdentical() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let a = try writeSafetensors(dir.file("a.safetensors"), Self.contents())
        let b = try writeSafetensors(dir.file("b.safetensors"), Self.contents().reversed())
        #expect(a.sha256 == b.sha256)
        #expect(try Data(contentsOf: URL(fileURLWithPath: a.path)) == Data(contentsOf: URL(fileURLWithPath: b.path)))
    }

    @Test func theReportedHashIsTheFilesSHA256() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let written = try writeSafetensors(dir.file("a.safetensors"), Self.contents())
        let result = try run("/usr/bin/env", ["sha256sum", written.path])
        #expect(result.stdout.hasPrefix(written.sha256))
    }

    @Test func aWriterThatIsShortOfBytesRefusesToFinishAndLeavesNoFile() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let writer = try SafetensorsWriter(path: dir.file("x.safetensors"), tensors: Self.specs)
        try [UInt8](repeating: 1, count: 10).withUnsafeBytes { try writer.append($0) }
        #expect(throws: CheckpointError.self) { _ = try writer.finish() }
        writer.abort()
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }

    @Test func rowAndColumnRangesReadOnlyTheBytesTheyNeed() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let rows = 64
        let columns = 256
        let data = randomBytes(rows * columns * 4, seed: 9)
        try writeSafetensors(dir.file("m.safetensors"), [(TensorSpec(name: "w", dtype: .f32, shape: [rows, columns]), data)])
        let checkpoint = try Checkpoint.open(dir.file("m.safetensors"))
        let t = try checkpoint.tensor("w")

        // Columns 32..<48 of every row: 16 floats per row.
        let region = Region([0..<rows, 32..<48])
        var out = [UInt8](repeating: 0, count: region.elementCount * 4)
        let before = IOStatistics.bytesRead
        try out.withUnsafeMutableBytes { try checkpoint.read(t, region: region, into: $0) }
        let read = IOStatistics.bytesRead - before
        // Other tests run concurrently and read too, so bound from below exactly and check the
        // column cut reads a quarter-sixteenth of the tensor, not all of it.
        #expect(read >= region.elementCount * 4)
        #expect(read < rows * columns * 4 / 2)
        for r in 0..<rows {
            let expected = Array(data[(r * columns + 32) * 4..<(r * columns + 48) * 4])
            #expect(Array(out[r * 64..<(r + 1) * 64]) == expected)
        }

        let rowRegion = Region([10..<20, 0..<columns])
        #expect(rowRegion.runs(in: t.shape, elementSize: 4) == (runLength: 10 * columns * 4, count: 1))
        var rowsOut = [UInt8](repeating: 0, count: rowRegion.elementCount * 4)
        try rowsOut.withUnsafeMutableBytes { try checkpoint.read(t, region: rowRegion, into: $0) }
        #expect(rowsOut == Array(data[10 * columns * 4..<20 * columns * 4]))
    }

    @Test func regionRunsCoverA3DHyperslab() {
        let region = Region([1..<3, 0..<4, 2..<3])
        var offsets: [Int] = []
        region.forEachRun(in: [3, 4, 5], elementSize: 2) { offsets.append($0) }
        let expected = (1..<3).flatMap { i in (0..<4).map { j in ((i * 4 + j) * 5 + 2) * 2 } }
        #expect(offsets == expected)
        #expect(region.runs(in: [3, 4, 5], elementSize: 2) == (runLength: 2, count: 8))
    }

    @Test func anIndexedCheckpointOfSymlinkedShardsOpensLikeAHuggingFaceSnapshot() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let tensors = Self.contents()
        try FileManager.default.createDirectory(atPath: dir.file("blobs"), withIntermediateDirectories: true)
        try writeSafetensors(dir.file("blobs/aaa"), Array(tensors[0..<2]))
        try writeSafetensors(dir.file("blobs/bbb"), Array(tensors[2...]))
        try FileManager.default.createDirectory(atPath: dir.file("snapshots/rev"), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(
            atPath: dir.file("snapshots/rev/model-00001-of-00002.safetensors"), withDestinationPath: "../../blobs/aaa")
        try FileManager.default.createSymbolicLink(
            atPath: dir.file("snapshots/rev/model-00002-of-00002.safetensors"), withDestinationPath: "../../blobs/bbb")
        var map: [String: String] = [:]
        for (i, (spec, _)) in tensors.enumerated() {
            map[spec.name] = i < 2 ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors"
        }
        let index = try JSONSerialization.data(withJSONObject: ["metadata": ["total_size": 1], "weight_map": map])
        try dir.write("snapshots/rev/model.safetensors.index.json", Array(index))
        try dir.write("snapshots/rev/config.json", Array("{}".utf8))

        let checkpoint = try Checkpoint.open(dir.file("snapshots/rev"))
        #expect(checkpoint.files.map(\.name) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])
        #expect(checkpoint.nonWeightFiles == ["config.json"])
        for (spec, data) in tensors { #expect(try readAll(checkpoint, spec.name) == data) }
    }

    static let indexCases: [(String, String)] = [
        (#"{"weight_map":{"a":"/etc/passwd"}}"#, "not a file inside"),
        (#"{"weight_map":{"a":"../x.safetensors"}}"#, "not a file inside"),
        (#"{"weight_map":{"a":"missing.safetensors"}}"#, "does not exist"),
        (#"{"weight_map":{"a":"one.safetensors","a":"two.safetensors"}}"#, "mapped twice"),
        (#"{"weight_map":{"a":"one.safetensors","zz":"one.safetensors"}}"#, "does not contain it"),
        (#"{"weight_map":{"a":"two.safetensors"}}"#, "does not contain it"),
        (#"{"weight_map":{}}"#, "names no tensors"),
        (#"{"metadata":{}}"#, "no weight_map"),
        (#"{"weight_map":{"a":"one.safetensors"},"metadata":[[[[]]],NaN]}"#, "expected a JSON value"),
        ("{\"weight_map\":{\"a\u{FFFD}\":\"one.safetensors\"}}", "mapped to"),
    ]

    @Test(arguments: indexCases)
    func aBrokenIndexIsRefusedNamingTheDefect(_ index: String, _ message: String) throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        try writeSafetensors(dir.file("one.safetensors"), [(TensorSpec(name: "a", dtype: .u8, shape: [1]), [1])])
        try writeSafetensors(dir.file("two.safetensors"), [(TensorSpec(name: "b", dtype: .u8, shape: [1]), [2])])
        try dir.write(Checkpoint.indexFileName, Array(index.utf8))
        let error = #expect(throws: CheckpointError.self) { _ = try Checkpoint.open(dir.path) }
        #expect(error?.description.contains(message) == true, "\(String(describing: error))")
        #expect(error?.exitCode == 2)
    }

    @Test func aFolderOfShardsWithATensorInTwoFilesIsRefused() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        try writeSafetensors(dir.file("one.safetensors"), [(TensorSpec(name: "a", dtype: .u8, shape: [1]), [1])])
        try writeSafetensors(dir.file("two.safetensors"), [(TensorSpec(name: "a", dtype: .u8, shape: [1]), [2])])
        let error = #expect(throws: CheckpointError.self) { _ = try Checkpoint.open(dir.path) }
        #expect(error?.description.contains("'a' is in both") == true)
    }

    @Test func aMissingPathIsBadInputNamingIt() throws {
        let error = #expect(throws: CheckpointError.self) { _ = try Checkpoint.open("/nonexistent/model") }
        #expect(error?.exitCode == 2)
        #expect(error?.description.contains("/nonexistent/model") == true)
    }
}
