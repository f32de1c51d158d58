import CHDF5
import Dispatch
import FineShardSystem
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Writes one HDF5 file of tensors (docs/SPEC.md §6): one dataset per tensor at the root, named by the
/// full tensor name, chunked along dimension 0 (about 1 MiB per chunk) and filtered by shuffle
/// then zstd (filter 32015, as hdf5plugin registers it), readable by h5py with hdf5plugin and by
/// HDF5 1.10. Every zstd frame carries its checksum (``ZstdCompressor``).
///
/// Chunks are shuffled and compressed here, up to ``workers`` at a time on worker threads
/// (`DispatchQueue.concurrentPerform`), and stored in order with `H5Dwrite_chunk` (filter mask
/// 0), so the filter pipeline recorded in the file is what produced them while the compression
/// itself needs no HDF5 lock. Every libhdf5 call (dataset creation, chunk write, close) is queued
/// and made in stream order when a batch of chunks is compressed, so the file is the same
/// sequence of calls, and the same bytes, whatever ``workers`` is. Output is deterministic:
/// datasets and chunks are written in ``order``, object timestamps are off, the library version
/// bounds are HDF5's defaults (the newest formats do not open in HDF5 1.10).
///
/// Memory is bounded by one batch of chunks (each with its shuffled and compressed copies):
/// `batchBytes`, at least one chunk.
public final class HDF5Writer: TensorFileWriter {
    /// The final path; the file is built at `temporaryPath(for: path)`.
    public let path: String
    public let order: [TensorSpec]
    /// zstd level, stored as the filter's one parameter.
    public let compressionLevel: Int
    /// Chunks compressed at once.
    public let workers: Int

    /// The level `shard --format hdf5` uses unless told otherwise (docs/PERFORMANCE.md has the
    /// size-versus-speed measurements it was chosen from).
    public static let defaultCompressionLevel = -50

    /// The zstd levels `compressionLevel` may take.
    public static var compressionLevels: ClosedRange<Int> { ZstdCompressor.levels }

    /// Chunks aim at this many bytes: big enough for zstd and for few chunk-index entries, small
    /// enough that a partial read decompresses little it does not need.
    static let targetChunkBytes = 1 << 20

    private let temporary: String
    private var file: HDF5ID?
    /// The tensor whose bytes arrive next, and how many of them have arrived.
    private var index = 0
    private var received = 0
    private var layout = Layout.empty
    /// The chunk being filled.
    private var chunk: Chunk?
    /// Calls not yet made to libhdf5, in stream order, and the chunks among them.
    private var queued: [Operation] = []
    private var queuedChunks = 0
    private var queuedBytes = 0
    private let batchChunks: Int
    private let batchBytes: Int
    /// Chunks (with their buffers) and compressors to reuse.
    private var spareChunks: [Chunk] = []
    private let compressors: ZstdCompressor.Pool
    /// Libhdf5 state while the queue is carried out: datasets `0..<created` exist, the last one open.
    private var created = 0
    private var dataset: HDF5ID?
    private var finished = false

    /// One chunk of one tensor on its way to the file: its bytes, then its shuffled and compressed copies.
    final class Chunk: @unchecked Sendable {
        var tensor = 0
        var firstRow = 0
        var elementSize = 1
        /// Bytes of the chunk (the buffers keep the largest size seen), and of them those that hold data.
        var count = 0
        var filled = 0
        var frameBytes = 0
        var input: [UInt8] = []
        var shuffled: [UInt8] = []
        var frame: [UInt8] = []

        func reset(tensor: Int, firstRow: Int, elementSize: Int, count: Int) {
            self.tensor = tensor
            self.firstRow = firstRow
            self.elementSize = elementSize
            self.count = count
            self.filled = 0
            if input.count < count { input = [UInt8](repeating: 0, count: count) }
        }

        /// Shuffles and compresses the chunk (zero-padded past `filled`) into `frame`.
        func compress(with compressor: ZstdCompressor, file: String) throws {
            let count = self.count
            if filled < count {
                let filled = self.filled
                input.withUnsafeMutableBytes { _ = $0[filled..<count].initializeMemory(as: UInt8.self, repeating: 0) }
            }
            if shuffled.count < count { shuffled = [UInt8](repeating: 0, count: count) }
            let bound = ZstdCompressor.bound(count)
            if frame.count < bound { frame = [UInt8](repeating: 0, count: bound) }
            try input.withUnsafeBytes { source in
                try shuffled.withUnsafeMutableBytes { shuffledBytes in
                    HDF5Writer.shuffle(
                        UnsafeRawBufferPointer(rebasing: source[0..<count]), elementSize: elementSize,
                        into: UnsafeMutableRawBufferPointer(rebasing: shuffledBytes[0..<count]))
                    frameBytes = try frame.withUnsafeMutableBytes { target in
                        try compressor.compress(UnsafeRawBufferPointer(rebasing: shuffledBytes[0..<count]), into: target, file: file)
                    }
                }
            }
        }
    }

    /// A libhdf5 call waiting for its turn.
    private enum Operation {
        /// `H5Dwrite_chunk` of a compressed chunk.
        case chunk(Chunk)
        /// `H5Dwrite` of a scalar's bytes.
        case scalar(tensor: Int, bytes: [UInt8])
    }

    /// How one tensor is stored.
    enum Layout: Equatable {
        /// Zero elements: contiguous, no storage.
        case empty
        /// Rank 0: compact, written with `H5Dwrite`.
        case scalar
        /// Chunks of `rows` rows (elements for a 1-D tensor) of `rowBytes` each.
        case chunked(rows: Int, rowBytes: Int)

        init(_ spec: TensorSpec) {
            if spec.shape.isEmpty {
                self = .scalar
                return
            }
            if spec.shape.contains(0) {
                self = .empty
                return
            }
            let rowBytes = spec.shape.dropFirst().reduce(spec.dtype.size, *)
            let rows = Swift.max(1, Swift.min(spec.shape[0], HDF5Writer.targetChunkBytes / rowBytes))
            self = .chunked(rows: rows, rowBytes: rowBytes)
        }

        /// Bytes in one chunk (edge chunks are padded to this).
        var chunkBytes: Int {
            switch self {
            case .empty: 0
            case .scalar: 0
            case .chunked(let rows, let rowBytes): rows * rowBytes
            }
        }
    }

    /// Creates the temporary file for `tensors`.
    /// - Parameters:
    ///   - workers: chunks compressed at once (the shard run's `--threads`); 1 compresses on the
    ///     calling thread. The file does not depend on it.
    ///   - batchBytes: input bytes of the chunks queued before a batch is compressed and written
    ///     (at least one chunk; about three times this is held at once).
    /// - Throws: ``CheckpointError/hdf5(file:message:stack:)`` for a name HDF5 cannot hold (empty,
    ///   `.`, or containing `/` or NUL), a duplicate name, a row too big for one HDF5 chunk (4 GiB),
    ///   a compression level zstd does not have, or a libhdf5 failure.
    public init(
        path: String, tensors: [TensorSpec], compressionLevel: Int = defaultCompressionLevel, workers: Int = 1, batchBytes: Int = 16 << 20
    ) throws {
        self.path = path
        self.temporary = temporaryPath(for: path)
        self.compressionLevel = compressionLevel
        self.workers = max(1, workers)
        self.batchChunks = self.workers == 1 ? 1 : 2 * self.workers
        self.batchBytes = max(1, batchBytes)
        self.order = tensors.sorted { $0.name.utf8Precedes($1.name) }
        func invalid(_ message: String) -> CheckpointError { .hdf5(file: path, message: message, stack: "") }
        guard Self.compressionLevels.contains(compressionLevel) else {
            throw invalid("zstd compression level \(compressionLevel) is outside \(Self.compressionLevels)")
        }
        for (previous, spec) in zip([nil] + order.map(Optional.some), order) {
            if spec.name.isEmpty || spec.name == "." || spec.name.contains("/") || spec.name.utf8.contains(0) {
                throw invalid(
                    "tensor '\(spec.name)': names that are empty, '.', or contain '/' or NUL can't be HDF5 dataset names"
                )
            }
            if previous?.name == spec.name { throw invalid("tensor '\(spec.name)' is listed twice") }
            if Layout(spec).chunkBytes > Int(UInt32.max) {
                throw invalid(
                    "tensor '\(spec.name)': one row of \(spec.shape) is more than an HDF5 chunk can hold (4 GiB)")
            }
        }
        compressors = ZstdCompressor.Pool(level: compressionLevel, file: path)
        // A level zstd refuses fails here, not at the first chunk.
        try compressors.withCompressor { _ in }
        TemporaryFiles.shared.register(temporary)
        file = try HDF5Library.withLock {
            let access = try HDF5ID(H5Pcreate(fs_H5P_FILE_ACCESS()), file: path, "cannot create a file access list")
            // Strong: closing the file closes anything still open in it, so abort() leaves nothing behind.
            try HDF5Library.check(
                H5Pset_fclose_degree(access.raw, H5F_CLOSE_STRONG), file: path, "cannot set close degree")
            return try HDF5ID(
                H5Fcreate(temporary, fs_H5F_ACC_TRUNC(), fs_H5P_DEFAULT(), access.raw), file: path,
                "cannot create \(temporary)")
        }
        skipEmptyTensors()
    }

    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        var rest = bytes
        while !rest.isEmpty {
            guard index < order.count else {
                throw CheckpointError.io(
                    file: path, operation: "append", reason: "\(rest.count) bytes more than the tensors hold")
            }
            let spec = order[index]
            let chunk = self.chunk ?? startChunk(spec)
            let take = min(rest.count, chunk.count - chunk.filled, spec.byteCount - received)
            chunk.input.withUnsafeMutableBytes { target in
                (target.baseAddress! + chunk.filled).copyMemory(from: rest.baseAddress!, byteCount: take)
            }
            rest = UnsafeRawBufferPointer(rebasing: rest[take...])
            chunk.filled += take
            received += take
            if chunk.filled == chunk.count || received == spec.byteCount { try queue(chunk) }
            if received == spec.byteCount {
                index += 1
                received = 0
                skipEmptyTensors()
            }
        }
    }

    public func finish() throws -> WrittenFile {
        guard index == order.count, !finished else {
            let missing =
                index < order.count
                ? "tensor '\(order[index].name)' has \(received) of \(order[index].byteCount) bytes"
                : "already finished"
            throw CheckpointError.io(file: path, operation: "finish", reason: missing)
        }
        finished = true
        try flush()
        try HDF5Library.withLock { try openDataset(order.count) }
        try file.take()?.close(with: H5Fclose, file: path, "cannot close \(temporary)")
        try FaultInjector.shared.check(.file, path: path)
        try moveIntoPlace(temporary, path)
        TemporaryFiles.shared.unregister(temporary)
        return try Self.digest(of: path)
    }

    public func abort() {
        queued = []
        _ = try? dataset.take()?.close(file: path, "")
        _ = try? file.take()?.close(with: H5Fclose, file: path, "")
        removeFile(temporary)
        TemporaryFiles.shared.unregister(temporary)
    }

    /// Moves past tensors that hold no bytes (their datasets are made in turn by ``openDataset(_:)``)
    /// and sets the layout of the next one.
    private func skipEmptyTensors() {
        while index < order.count, order[index].byteCount == 0 { index += 1 }
        if index < order.count { layout = Layout(order[index]) }
    }

    /// A spare chunk set up for the next bytes of `spec`.
    private func startChunk(_ spec: TensorSpec) -> Chunk {
        let chunk = spareChunks.popLast() ?? Chunk()
        let capacity = layout == .scalar ? spec.dtype.size : layout.chunkBytes
        let firstRow: Int
        if case .chunked(_, let rowBytes) = layout { firstRow = received / rowBytes } else { firstRow = 0 }
        chunk.reset(tensor: index, firstRow: firstRow, elementSize: spec.dtype.size, count: capacity)
        self.chunk = chunk
        return chunk
    }

    /// Queues the filled chunk (the rest of it zero padding), and carries out the queue once it
    /// holds a batch.
    private func queue(_ chunk: Chunk) throws {
        self.chunk = nil
        if layout == .scalar {
            queued.append(.scalar(tensor: chunk.tensor, bytes: Array(chunk.input[0..<chunk.count])))
            spareChunks.append(chunk)
            return
        }
        queued.append(.chunk(chunk))
        queuedChunks += 1
        queuedBytes += chunk.count
        if queuedChunks >= batchChunks || queuedBytes >= batchBytes { try flush() }
    }

    /// Compresses the queued chunks (on up to ``workers`` threads), then makes the queued libhdf5
    /// calls in order.
    private func flush() throws {
        let chunks = queued.compactMap { if case .chunk(let c) = $0 { c } else { nil } }
        let compressors = self.compressors
        let path = self.path
        if chunks.count == 1 || workers == 1 {
            for chunk in chunks { try compressors.withCompressor { try chunk.compress(with: $0, file: path) } }
        } else {
            let failure = Mutex<(any Error)?>(nil)
            DispatchQueue.concurrentPerform(iterations: chunks.count) { i in
                do {
                    try compressors.withCompressor { try chunks[i].compress(with: $0, file: path) }
                } catch {
                    failure.withLock { $0 = $0 ?? error }
                }
            }
            if let error = failure.withLock({ $0 }) { throw error }
        }
        let operations = queued
        queued = []
        queuedChunks = 0
        queuedBytes = 0
        try HDF5Library.withLock {
            for operation in operations {
                switch operation {
                case .chunk(let chunk): try writeChunk(chunk)
                case .scalar(let tensor, let bytes): try writeScalar(tensor, bytes)
                }
            }
        }
        spareChunks += chunks
    }

    /// Makes the datasets of `order[..<tensor]` that do not exist yet, and `order[tensor]`'s (left
    /// open); the previous open one is closed. Holding the HDF5 lock.
    private func openDataset(_ tensor: Int) throws {
        while created <= min(tensor, order.count - 1) {
            try dataset.take()?.close(file: path, "cannot close dataset '\(order[created - 1].name)'")
            dataset = try createDataset(order[created])
            created += 1
        }
        if tensor == order.count {
            try dataset.take()?.close(file: path, "cannot close dataset '\(order[created - 1].name)'")
        }
    }

    private func writeChunk(_ chunk: Chunk) throws {
        try openDataset(chunk.tensor)
        let spec = order[chunk.tensor]
        let offset = [hsize_t(chunk.firstRow)] + spec.shape.dropFirst().map { _ in hsize_t(0) }
        let dataset = self.dataset?.raw ?? -1
        try chunk.frame.withUnsafeBytes { bytes in
            _ = try HDF5Library.check(
                H5Dwrite_chunk(dataset, fs_H5P_DEFAULT(), 0, offset, chunk.frameBytes, bytes.baseAddress), file: path,
                "cannot write tensor '\(spec.name)'")
        }
    }

    private func writeScalar(_ tensor: Int, _ bytes: [UInt8]) throws {
        try openDataset(tensor)
        let spec = order[tensor]
        let type = try Self.fileType(spec.dtype, file: path)
        let dataset = self.dataset?.raw ?? -1
        try bytes.withUnsafeBytes { bytes in
            _ = try HDF5Library.check(
                H5Dwrite(dataset, type.raw, fs_H5S_ALL(), fs_H5S_ALL(), fs_H5P_DEFAULT(), bytes.baseAddress), file: path,
                "cannot write tensor '\(spec.name)'")
        }
    }

    /// Creates the dataset of `spec` (holding the HDF5 lock).
    private func createDataset(_ spec: TensorSpec) throws -> HDF5ID {
        let what = "cannot create dataset '\(spec.name)'"
        let path = self.path
        let level = UInt32(bitPattern: Int32(compressionLevel))
        let space =
            spec.shape.isEmpty
            ? try HDF5ID(H5Screate(H5S_SCALAR), file: path, what)
            : try HDF5ID(H5Screate_simple(Int32(spec.shape.count), spec.shape.map { hsize_t($0) }, nil), file: path, what)
        let properties = try HDF5ID(H5Pcreate(fs_H5P_DATASET_CREATE()), file: path, what)
        try HDF5Library.check(H5Pset_obj_track_times(properties.raw, false), file: path, what)
        switch Layout(spec) {
        case .scalar:
            try HDF5Library.check(H5Pset_layout(properties.raw, H5D_COMPACT), file: path, what)
        case .empty:
            try HDF5Library.check(H5Pset_layout(properties.raw, H5D_CONTIGUOUS), file: path, what)
        case .chunked(let rows, _):
            let chunkDims = [hsize_t(rows)] + spec.shape.dropFirst().map { hsize_t($0) }
            try HDF5Library.check(H5Pset_chunk(properties.raw, Int32(chunkDims.count), chunkDims), file: path, what)
            try HDF5Library.check(H5Pset_shuffle(properties.raw), file: path, what)
            try HDF5Library.check(
                H5Pset_filter(properties.raw, H5Z_filter_t(FS_ZSTD_FILTER_ID), UInt32(H5Z_FLAG_MANDATORY), 1, [level]),
                file: path, what)
        }
        let type = try Self.fileType(spec.dtype, file: path)
        let dataset = try HDF5ID(
            H5Dcreate2(file?.raw ?? -1, spec.name, type.raw, space.raw, fs_H5P_DEFAULT(), properties.raw, fs_H5P_DEFAULT()),
            file: path, what)
        if spec.dtype.isStoredAsInteger {
            try Self.writeStringAttribute("dtype", spec.dtype.numpyName, on: dataset.raw, file: path, what)
        }
        return dataset
    }

    /// The stored type of `dtype`: little-endian IEEE floats (16-bit built as h5py builds its
    /// float16), little-endian integers, h5py's bool enum, and bf16/f8 as unsigned integers.
    private static func fileType(_ dtype: DType, file: String) throws -> HDF5ID {
        let predefined: hid_t
        switch dtype {
        case .f16: return try HDF5ID(fs_create_ieee_f16le(), file: file, "cannot make a float16 type")
        case .bool: return try HDF5ID(fs_create_bool_enum(), file: file, "cannot make a bool type")
        case .f64: predefined = fs_H5T_IEEE_F64LE()
        case .f32: predefined = fs_H5T_IEEE_F32LE()
        case .i64: predefined = fs_H5T_STD_I64LE()
        case .i32: predefined = fs_H5T_STD_I32LE()
        case .i16: predefined = fs_H5T_STD_I16LE()
        case .i8: predefined = fs_H5T_STD_I8LE()
        case .u8, .f8e4m3, .f8e5m2: predefined = fs_H5T_STD_U8LE()
        case .bf16: predefined = fs_H5T_STD_U16LE()
        }
        return try HDF5ID(H5Tcopy(predefined), file: file, "cannot copy a predefined type")
    }

    /// A scalar variable-length UTF-8 string attribute, as h5py writes a Python `str`.
    static func writeStringAttribute(
        _ name: String, _ value: String, on object: hid_t, file: String, _ what: String
    ) throws {
        let type = try HDF5ID(H5Tcopy(fs_H5T_C_S1()), file: file, what)
        try HDF5Library.check(H5Tset_size(type.raw, fs_H5T_VARIABLE()), file: file, what)
        try HDF5Library.check(H5Tset_cset(type.raw, H5T_CSET_UTF8), file: file, what)
        let space = try HDF5ID(H5Screate(H5S_SCALAR), file: file, what)
        let attribute = try HDF5ID(
            H5Acreate2(object, name, type.raw, space.raw, fs_H5P_DEFAULT(), fs_H5P_DEFAULT()), file: file, what)
        try value.withCString { text in
            var pointer: UnsafePointer<CChar>? = text
            try HDF5Library.check(H5Awrite(attribute.raw, type.raw, &pointer), file: file, what)
        }
    }

    /// HDF5's shuffle filter (H5Zshuffle.c, `fs_shuffle`) on whole elements: byte `j` of element
    /// `i` goes to `j * n + i`. Bytes past the last whole element (none in a chunk) are copied as they are.
    static func shuffle(_ source: UnsafeRawBufferPointer, elementSize: Int, into target: UnsafeMutableRawBufferPointer) {
        let n = source.count / elementSize
        guard elementSize > 1, n > 0 else {
            target.copyMemory(from: source)
            return
        }
        fs_shuffle(
            source.baseAddress!.assumingMemoryBound(to: UInt8.self), target.baseAddress!.assumingMemoryBound(to: UInt8.self), n,
            elementSize)
        for k in n * elementSize..<source.count { target[k] = source[k] }
    }

    /// The size and SHA-256 of the finished file, read back because libhdf5 wrote it through its
    /// own file handles.
    private static func digest(of path: String) throws -> WrittenFile {
        let input = try OpenFile.forReading(path)
        let size = try input.size()
        let hex = try sha256(of: input, bufferSize: 8 << 20)
        IOStatistics.written.add(size, ordering: .relaxed)
        return WrittenFile(path: path, bytes: size, sha256: hex)
    }
}
