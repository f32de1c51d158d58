import CHDF5
import Crypto
import Foundation
import Testing

@testable import FineShard
@testable import FineShardFormats

/// HDF5Writer → HDF5Reader round trips, hyperslab reads, determinism, broken files, and interop
/// with h5py + hdf5plugin (when `FINESHARD_PYTHON` names a Python that has them).
@Suite struct HDF5Tests {
    static let python = ProcessInfo.processInfo.environment["FINESHARD_PYTHON"]
    static let interopScripts = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("scripts/interop")

    /// A fresh temporary folder; the caller removes it with `defer`.
    static func makeFolder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("fineshard-hdf5-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// Seeded bytes for a tensor: bool tensors get 0/1, everything else any bit pattern.
    static func bytes(for spec: TensorSpec, seed: UInt64) -> [UInt8] {
        var state = seed
        var out = [UInt8](repeating: 0, count: spec.byteCount)
        for i in out.indices {
            // SplitMix64, one byte per step: plenty fast for a few MB.
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            out[i] = spec.dtype == .bool ? UInt8(z & 1) : UInt8(truncatingIfNeeded: z)
        }
        return out
    }

    /// Writes `specs` with their seeded bytes, appended in pieces of `pieceSize` bytes.
    @discardableResult
    static func write(
        _ specs: [TensorSpec], to path: String, pieceSize: Int = 100_003, data: [String: [UInt8]], workers: Int = 1,
        batchBytes: Int = 16 << 20
    ) throws -> WrittenFile {
        let writer = try HDF5Writer(path: path, tensors: specs, workers: workers, batchBytes: batchBytes)
        var stream: [UInt8] = []
        for spec in writer.order { stream += data[spec.name]! }
        var offset = 0
        while offset < stream.count {
            let end = min(stream.count, offset + pieceSize)
            try stream[offset..<end].withUnsafeBytes { try writer.append($0) }
            offset = end
        }
        return try writer.finish()
    }

    static func read(_ reader: HDF5Reader, _ name: String, _ region: Region? = nil) throws -> [UInt8] {
        let info = try #require(reader.tensors.first { $0.name == name })
        let region = region ?? Region(whole: info.shape)
        var out = [UInt8](repeating: 0xEE, count: region.elementCount * info.dtype.size)
        try out.withUnsafeMutableBytes { try reader.read(info, region: region, into: $0) }
        return out
    }

    static func sha256(_ bytes: [UInt8]) -> String {
        SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    }

    static let everyDType: [TensorSpec] =
        DType.allCases.map { TensorSpec(name: "small.\($0.rawValue)", dtype: $0, shape: [5, 3]) } + [
            // Two chunks of 262 rows, the second one partial.
            TensorSpec(name: "big.f32", dtype: .f32, shape: [300, 1000]),
            // 1-D: chunks of 1 MiB elements, the last partial.
            TensorSpec(name: "big.u8", dtype: .u8, shape: [1_500_000]),
            // 3-D with rows of 560,000 bytes: one row per chunk.
            TensorSpec(name: "cube.f16", dtype: .f16, shape: [3, 400, 700]),
            TensorSpec(name: "edge.bf16", dtype: .bf16, shape: [1000, 700]),
            TensorSpec(name: "scalar.f64", dtype: .f64, shape: []),
            TensorSpec(name: "scalar.bool", dtype: .bool, shape: []),
            TensorSpec(name: "empty.i32", dtype: .i32, shape: [0, 4]),
            TensorSpec(name: "empty.f8", dtype: .f8e5m2, shape: [0]),
        ]

    static func seeded(_ specs: [TensorSpec]) -> [String: [UInt8]] {
        Dictionary(uniqueKeysWithValues: specs.enumerated().map { ($1.name, bytes(for: $1, seed: UInt64($0))) })
    }

    @Test func everyDTypeRoundTripsByteForByteThroughWriterAndReader() throws {
        let folder = try Self.makeFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("model.h5").path
        let data = Self.seeded(Self.everyDType)
        let written = try Self.write(Self.everyDType, to: path, data: data)
        #expect(written.path == path)
        #expect(written.bytes == (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int))
        #expect(written.sha256 == Self.sha256(Array(try Data(contentsOf: URL(fileURLWithPath: path)))))
        #expect(!FileManager.default.fileExists(atPath: temporaryPath(for: path)))

        let reader = try HDF5Reader(path: path, name: "model.h5")
        let expected = Self.everyDType.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
        #expect(reader.tensors.map(\.name) == expected.map(\.name))
        for spec in expected {
            let info = try #require(reader.tensors.first { $0.name == spec.name })
            #expect(info.dtype == spec.dtype, "\(spec.name)")
            #expect(info.shape == spec.shape, "\(spec.name)")
            #expect(info.file == "model.h5")
            #expect(info.offset == nil)
            #expect(try Self.read(reader, spec.name) == data[spec.name]!, "\(spec.name)")
        }
    }

    @Test func rowAndColumnRangesReadAsHyperslabs() throws {
        let folder = try Self.makeFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("w.h5").path
        let specs = [
            TensorSpec(name: "w", dtype: .f32, shape: [300, 1000]),
            TensorSpec(name: "c", dtype: .i16, shape: [4, 6, 5]),
        ]
        let data = Self.seeded(specs)
        try Self.write(specs, to: path, data: data)
        let reader = try HDF5Reader(path: path, name: "w.h5")
        let w = data["w"]!

        // Rows 100..<290 cross the chunk boundary at row 262.
        #expect(try Self.read(reader, "w", Region([100..<290, 0..<1000])) == Array(w[100 * 4000..<290 * 4000]))

        var columns: [UInt8] = []
        for row in 0..<300 { columns += w[(row * 1000 + 10) * 4..<(row * 1000 + 20) * 4] }
        #expect(try Self.read(reader, "w", Region([0..<300, 10..<20])) == columns)

        let c = data["c"]!
        var middle: [UInt8] = []
        for i in 1..<3 {
            for j in 2..<5 {
                let row: Int = (i * 6 + j) * 5
                middle += c[(row + 1) * 2..<(row + 4) * 2]
            }
        }
        #expect(try Self.read(reader, "c", Region([1..<3, 2..<5, 1..<4])) == middle)

        #expect(try Self.read(reader, "w", Region([5..<5, 0..<1000])).isEmpty)
        #expect(throws: CheckpointError.self) { try Self.read(reader, "w", Region([0..<301, 0..<1000])) }
    }

    @Test func twoWritesOfTheSameTensorsAreByteIdentical() throws {
        let folder = try Self.makeFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let data = Self.seeded(Self.everyDType)
        let a = try Self.write(
            Self.everyDType, to: folder.appendingPathComponent("a.h5").path, pieceSize: 4096, data: data)
        let b = try Self.write(
            Self.everyDType.reversed(), to: folder.appendingPathComponent("b.h5").path, pieceSize: 1_000_000, data: data
        )
        #expect(a.sha256 == b.sha256)
        #expect(a.bytes == b.bytes)
        #expect(try Data(contentsOf: URL(fileURLWithPath: a.path)) == Data(contentsOf: URL(fileURLWithPath: b.path)))
    }

    @Test(arguments: ["a/b", "/a", "nul\0name", "", "."])
    func namesThatCannotBeDatasetNamesAreRejected(name: String) throws {
        let folder = try Self.makeFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("x.h5").path
        let error = #expect(throws: CheckpointError.self) {
            try HDF5Writer(path: path, tensors: [TensorSpec(name: name, dtype: .f32, shape: [2])])
        }
        guard case .hdf5(_, let message, _) = error else {
            Issue.record("\(String(describing: error))")
            return
        }
        #expect(message.contains("can't be HDF5 dataset names"))
        #expect(!FileManager.default.fileExists(atPath: temporaryPath(for: path)))
    }

    @Test func finishWithMissingBytesThrowsAndAbortRemovesTheTemporaryFile() throws {
        let folder = try Self.makeFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("x.h5").path
        let writer = try HDF5Writer(path: path, tensors: [TensorSpec(name: "w", dtype: .f32, shape: [4])])
        try [UInt8](repeating: 1, count: 8).withUnsafeBytes { try writer.append($0) }
        #expect(throws: CheckpointError.self) { try writer.finish() }
        #expect(throws: CheckpointError.self) {
            try [UInt8](repeating: 1, count: 12).withUnsafeBytes { try writer.append($0) }
        }
        writer.abort()
        #expect(!FileManager.default.fileExists(atPath: temporaryPath(for: path)))
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    /// Opens or reads a broken file and returns the error, which must be `.hdf5` with libhdf5's stack.
    static func expectHDF5Failure(_ path: String) throws -> (message: String, stack: String) {
        do {
            let reader = try HDF5Reader(path: path, name: "broken.h5")
            for info in reader.tensors { _ = try read(reader, info.name) }
        } catch CheckpointError.hdf5(let file, let message, let stack) {
            #expect(file == "broken.h5")
            #expect(!stack.isEmpty)
            return (message, stack)
        }
        Issue.record("no error from \(path)")
        return ("", "")
    }

    @Test func aTruncatedFileIsAnHDF5ErrorWithLibhdf5sStack() throws {
        let folder = try Self.makeFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("t.h5").path
        let specs = [TensorSpec(name: "w", dtype: .f32, shape: [300, 1000])]
        let written = try Self.write(specs, to: path, data: Self.seeded(specs))
        #expect(truncate(path, off_t(written.bytes / 2)) == 0)
        let (_, stack) = try Self.expectHDF5Failure(path)
        #expect(stack.contains("H5F"))
    }

    @Test func garbageAfterTheHDF5SignatureIsAnHDF5ErrorWithLibhdf5sStack() throws {
        let folder = try Self.makeFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("g.h5").path
        var bytes: [UInt8] = [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]
        bytes += Self.bytes(for: TensorSpec(name: "g", dtype: .u8, shape: [4000]), seed: 3)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let (message, stack) = try Self.expectHDF5Failure(path)
        #expect(message.contains("cannot open"))
        #expect(stack.contains("H5Fopen"))
    }

    /// Builds a small file with libhdf5 directly: a 1-D dataset of `type` at each of `datasets`
    /// (groups created as needed), and a `dtype` string attribute on those `marked` says.
    static func makeFile(
        _ path: String, type: hid_t, datasets: [String], marked: [String: String] = [:]
    ) throws {
        try HDF5Library.withLock {
            let file = try HDF5ID(
                H5Fcreate(path, fs_H5F_ACC_TRUNC(), fs_H5P_DEFAULT(), fs_H5P_DEFAULT()), file: path, "create")
            let lcpl = try HDF5ID(H5Pcreate(fs_H5P_LINK_CREATE()), file: path, "lcpl")
            try HDF5Library.check(H5Pset_create_intermediate_group(lcpl.raw, 1), file: path, "lcpl")
            let space = try HDF5ID(H5Screate_simple(1, [3], nil), file: path, "space")
            for name in datasets {
                let dataset = try HDF5ID(
                    H5Dcreate2(file.raw, name, type, space.raw, lcpl.raw, fs_H5P_DEFAULT(), fs_H5P_DEFAULT()),
                    file: path, "dataset")
                if let marker = marked[name] {
                    try HDF5Writer.writeStringAttribute("dtype", marker, on: dataset.raw, file: path, "attribute")
                }
            }
        }
    }

    @Test func twoDatasetsThatMapToOneTensorNameAreAnError() throws {
        let folder = try Self.makeFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("clash.h5").path
        try Self.makeFile(path, type: fs_H5T_STD_I32LE(), datasets: ["layer/weight", "layer.weight"])
        let error = #expect(throws: CheckpointError.self) { try HDF5Reader(path: path, name: "clash.h5") }
        guard case .hdf5(_, let message, _) = error else {
            Issue.record("\(String(describing: error))")
            return
        }
        #expect(message.contains("'layer.weight'"))
    }

    @Test func nestedDatasetsAreNamedByTheirPathWithDots() throws {
        let folder = try Self.makeFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("nested.h5").path
        try Self.makeFile(
            path, type: fs_H5T_STD_I16LE(), datasets: ["model/layers/0/w", "b"], marked: ["b": "bfloat16"])
        let reader = try HDF5Reader(path: path, name: "nested.h5")
        #expect(reader.tensors.map(\.name) == ["b", "model.layers.0.w"])
        #expect(reader.tensors.map(\.dtype) == [.bf16, .i16])
    }

    @Test(arguments: [("bfloat16", "4-byte"), ("float8_e5m2", "4-byte"), ("complex64", "unknown")])
    func aDTypeAttributeThatDoesNotFitTheStoredTypeIsAnError(marker: String, complaint: String) throws {
        let folder = try Self.makeFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("mismatch.h5").path
        try Self.makeFile(path, type: fs_H5T_STD_I32LE(), datasets: ["w"], marked: ["w": marker])
        let error = #expect(throws: CheckpointError.self) { try HDF5Reader(path: path, name: "mismatch.h5") }
        guard case .hdf5(_, let message, _) = error else {
            Issue.record("\(String(describing: error))")
            return
        }
        #expect(message.contains(marker) && message.contains(complaint), "\(message)")
    }

    @Test func aFileThatIsNotThereIsUnreadable() {
        #expect(throws: SystemError.unreadable(file: "/nonexistent/x.h5", reason: "No such file or directory")) {
            try HDF5Reader(path: "/nonexistent/x.h5", name: "x.h5")
        }
    }

    @Test(arguments: [1, 2, 3, 4, 8])
    func shuffleMatchesHDF5sByteTransposition(elementSize: Int) {
        // Element counts below, at and past the vector widths (16 and 32 elements).
        for n in [5, 32, 77] {
            let input = (0..<(n * elementSize + 1)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            var output = [UInt8](repeating: 0, count: input.count)
            input.withUnsafeBytes { source in
                output.withUnsafeMutableBytes { HDF5Writer.shuffle(source, elementSize: elementSize, into: $0) }
            }
            // H5Zshuffle.c: byte j of element i goes to j * n + i; the trailing partial element stays.
            var expected = input
            for i in 0..<n { for j in 0..<elementSize { expected[j * n + i] = input[i * elementSize + j] } }
            #expect(output == expected, "\(n) elements of \(elementSize) bytes")
        }
    }

    // MARK: - zstd frame checksums and parallel compression

    /// The stored bytes of the chunk of `dataset` whose first element is at `offset`
    /// (`H5Dget_chunk_info_by_coord`): their file offset and size.
    static func chunkLocation(_ path: String, dataset: String, offset: [Int]) throws -> (address: Int, size: Int) {
        try HDF5Library.withLock {
            let file = try HDF5ID(H5Fopen(path, fs_H5F_ACC_RDONLY(), fs_H5P_DEFAULT()), file: path, "open")
            let set = try HDF5ID(H5Dopen2(file.raw, dataset, fs_H5P_DEFAULT()), file: path, "open \(dataset)")
            var mask: UInt32 = 0
            var address: haddr_t = 0
            var size: hsize_t = 0
            try HDF5Library.check(
                H5Dget_chunk_info_by_coord(set.raw, offset.map { hsize_t($0) }, &mask, &address, &size), file: path,
                "no chunk at \(offset)")
            return (Int(address), Int(size))
        }
    }

    /// Flips one byte in the middle of the stored chunk of `dataset` at `offset`; the file keeps its size.
    static func corruptChunk(_ path: String, dataset: String, offset: [Int]) throws {
        let (address, size) = try chunkLocation(path, dataset: dataset, offset: offset)
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        let at = UInt64(address + size / 2)
        try handle.seek(toOffset: at)
        let byte = try #require(try handle.read(upToCount: 1)?.first)
        try handle.seek(toOffset: at)
        try handle.write(contentsOf: [byte ^ 0x5A])
    }

    /// The stored bytes of one chunk (`H5Dread_chunk`), as libhdf5 keeps them: a zstd frame.
    static func rawChunk(_ path: String, dataset: String, offset: [Int]) throws -> [UInt8] {
        let (_, size) = try chunkLocation(path, dataset: dataset, offset: offset)
        return try HDF5Library.withLock {
            let file = try HDF5ID(H5Fopen(path, fs_H5F_ACC_RDONLY(), fs_H5P_DEFAULT()), file: path, "open")
            let set = try HDF5ID(H5Dopen2(file.raw, dataset, fs_H5P_DEFAULT()), file: path, "open \(dataset)")
            var mask: UInt32 = 0
            var bytes = [UInt8](repeating: 0, count: size)
            try HDF5Library.check(
                H5Dread_chunk(set.raw, fs_H5P_DEFAULT(), offset.map { hsize_t($0) }, &mask, &bytes), file: path, "read chunk")
            return bytes
        }
    }

    @Test func everyChunkIsAZstdFrameWithAContentSizeAndAChecksum() throws {
        let folder = try Self.makeFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("model.h5").path
        try Self.write(Self.everyDType, to: path, data: Self.seeded(Self.everyDType), workers: 2)
        for (dataset, offset) in [("big.f32", [262, 0]), ("small.BF16", [0, 0]), ("cube.f16", [2, 0, 0]), ("big.u8", [1 << 20])] {
            let frame = try Self.rawChunk(path, dataset: dataset, offset: offset)
            // RFC 8878 §3.1.1: the magic number, then the frame header descriptor, whose bit 2 is
            // Content_Checksum_Flag and bits 6-7 Frame_Content_Size_Flag (0 with a single segment
            // still stores a 1-byte size; bit 5 is Single_Segment_Flag).
            #expect(Array(frame.prefix(4)) == [0x28, 0xB5, 0x2F, 0xFD], "\(dataset)")
            #expect(frame[4] & 0x04 != 0, "\(dataset): no content checksum flag")
            #expect(frame[4] & 0xC0 != 0 || frame[4] & 0x20 != 0, "\(dataset): no content size")
        }
    }

    @Test func oneOrFourCompressionWorkersAndAnyBatchSizeWriteTheSameBytes() throws {
        let folder = try Self.makeFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let data = Self.seeded(Self.everyDType)
        let one = try Self.write(Self.everyDType, to: folder.appendingPathComponent("one.h5").path, data: data)
        let four = try Self.write(Self.everyDType, to: folder.appendingPathComponent("four.h5").path, data: data, workers: 4)
        let small = try Self.write(
            Self.everyDType, to: folder.appendingPathComponent("small.h5").path, pieceSize: 7777, data: data, workers: 3,
            batchBytes: 1)
        #expect(one.sha256 == four.sha256 && one.sha256 == small.sha256)
        #expect(try Data(contentsOf: URL(fileURLWithPath: one.path)) == Data(contentsOf: URL(fileURLWithPath: four.path)))
        let reader = try HDF5Reader(path: four.path, name: "four.h5")
        for spec in Self.everyDType { #expect(try Self.read(reader, spec.name) == data[spec.name]!, "\(spec.name)") }
    }

    @Test func aChunkWhoseChecksumFailsIsADamagedChunkNamedByFileDatasetIndexAndOffset() throws {
        let folder = try Self.makeFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("w.h5").path
        // Seeded bytes of every bit pattern: zstd stores them as raw blocks, so a flipped byte in
        // the middle still decodes, to a wrong number; only the frame checksum catches it.
        let specs = [TensorSpec(name: "w", dtype: .f32, shape: [800, 1000])]
        let data = Self.seeded(specs)
        try Self.write(specs, to: path, data: data, workers: 2)
        try Self.corruptChunk(path, dataset: "w", offset: [262, 0])
        let reader = try HDF5Reader(path: path, name: "w.h5")

        // The chunks around it still read.
        #expect(try Self.read(reader, "w", Region([0..<262, 0..<1000])) == Array(data["w"]![0..<262 * 4000]))
        #expect(try Self.read(reader, "w", Region([524..<800, 0..<1000])) == Array(data["w"]![524 * 4000..<800 * 4000]))

        let expected = CheckpointError.damagedChunk(
            file: "w.h5", dataset: "w", chunk: 1, offset: [262, 0],
            reason: "its zstd frame checksum does not match (zstd: Restored data doesn't match checksum)")
        #expect(throws: expected) { try Self.read(reader, "w", Region([100..<700, 5..<6])) }
        #expect(reader.firstDamagedChunk() == expected)
        #expect(
            expected.description
                == "w.h5: dataset '/w', chunk 1 at offset [262, 0] is damaged: its zstd frame checksum does not match (zstd: Restored data doesn't match checksum)"
        )
        #expect(expected.exitCode == 2)
    }

    // MARK: - Interop with h5py + hdf5plugin

    struct Described: Decodable, Equatable {
        var dtype: String
        var shape: [Int]
        var sha256: String
    }

    /// Runs a script of `scripts/interop` with the venv's Python (TestSupport's `run`) and returns its stdout.
    static func runPython(_ script: String, _ arguments: [String]) throws -> String {
        let result = try run(python!, [interopScripts.appendingPathComponent(script).path] + arguments)
        try #require(result.status == 0, "\(script) failed: \(result.stderr)")
        return result.stdout
    }

    @Test(.enabled(if: python != nil))
    func h5pyWithHdf5pluginReadsWhatFineshardWrites() throws {
        let folder = try Self.makeFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("model.h5").path
        let data = Self.seeded(Self.everyDType)
        // Written by two workers, every chunk a zstd frame with a checksum (the test above).
        try Self.write(Self.everyDType, to: path, data: data, workers: 2)

        let json = try Self.runPython("h5_read.py", [path])
        let seen = try JSONDecoder().decode([String: Described].self, from: Data(json.utf8))
        let expected = Dictionary(
            uniqueKeysWithValues: Self.everyDType.map {
                ($0.name, Described(dtype: $0.dtype.rawValue, shape: $0.shape, sha256: Self.sha256(data[$0.name]!)))
            })
        #expect(seen == expected)

        struct Marker: Decodable {
            var markerType: String?
            enum CodingKeys: String, CodingKey { case markerType = "marker_type" }
        }
        let markers = try JSONDecoder().decode([String: Marker].self, from: Data(json.utf8))
        for spec in Self.everyDType where [.bf16, .f8e4m3, .f8e5m2].contains(spec.dtype) {
            #expect(markers[spec.name]?.markerType == "str", "the dtype attribute of \(spec.name) reads as a str")
        }
    }

    @Test(.enabled(if: python != nil))
    func fineshardReadsWhatH5pyWritesWithZstdAndShuffle() throws {
        let folder = try Self.makeFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("h5py.h5").path
        let json = try Self.runPython("h5_write.py", [path])
        let expected = try JSONDecoder().decode([String: Described].self, from: Data(json.utf8))

        let reader = try HDF5Reader(path: path, name: "h5py.h5")
        var seen: [String: Described] = [:]
        for info in reader.tensors {
            seen[info.name] = Described(
                dtype: info.dtype.rawValue, shape: info.shape, sha256: Self.sha256(try Self.read(reader, info.name)))
        }
        #expect(seen == expected)

        // A row range that starts inside one chunk and ends inside another.
        let whole = try Self.read(reader, "f32")
        #expect(try Self.read(reader, "f32", Region([5..<30, 0..<100])) == Array(whole[5 * 400..<30 * 400]))
    }

    @Test(.enabled(if: python != nil), arguments: ["garbage", "body"])
    func aGarbageZstdChunkIsAnHDF5ErrorNotACrash(mode: String) throws {
        let folder = try Self.makeFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("bad.h5").path
        _ = try Self.runPython("h5_corrupt_chunk.py", [path, mode])
        let reader = try HDF5Reader(path: path, name: "bad.h5")

        // Chunks other than the first are intact.
        let rows = try Self.read(reader, "w", Region([16..<32, 0..<64]))
        let expected = (16 * 64..<32 * 64).flatMap {
            withUnsafeBytes(of: Float($0).bitPattern.littleEndian, Array.init)
        }
        #expect(rows == expected)

        let error = #expect(throws: CheckpointError.self) { try Self.read(reader, "w", Region([0..<4, 0..<64])) }
        guard case .damagedChunk(let file, let dataset, let chunk, let offset, let reason) = error else {
            Issue.record("\(String(describing: error))")
            return
        }
        #expect(file == "bad.h5" && dataset == "w" && chunk == 0 && offset == [0, 0])
        #expect(reason.hasPrefix("zstd: "), "\(reason)")
    }
}
