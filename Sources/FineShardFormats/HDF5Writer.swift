import CHDF5
import FineShardSystem

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Writes one HDF5 file of tensors (docs/SPEC.md §6): one dataset per tensor at the root, named by the
/// full tensor name, chunked along dimension 0 (about 1 MiB per chunk) and filtered by shuffle
/// then zstd (filter 32015, as hdf5plugin registers it), readable by h5py with hdf5plugin and by
/// HDF5 1.10.
///
/// Chunks are shuffled and compressed here and stored with `H5Dwrite_chunk` (filter mask 0), so
/// the filter pipeline recorded in the file is what produced them while the compression itself
/// needs no HDF5 lock. Output is deterministic: datasets and chunks are written in ``order``,
/// object timestamps are off, the library version bounds are HDF5's defaults (the newest formats
/// do not open in HDF5 1.10).
///
/// Memory is bounded by one chunk (plus its shuffled and compressed copies) at a time.
public final class HDF5Writer: TensorFileWriter {
    /// The final path; the file is built at `temporaryPath(for: path)`.
    public let path: String
    public let order: [TensorSpec]
    /// zstd level, stored as the filter's one parameter.
    public let compressionLevel: Int

    /// Chunks aim at this many bytes: big enough for zstd and for few chunk-index entries, small
    /// enough that a partial read decompresses little it does not need.
    static let targetChunkBytes = 1 << 20

    private let temporary: String
    private var file: HDF5ID?
    /// The dataset of `order[index]` while its bytes arrive.
    private var dataset: HDF5ID?
    private var index = 0
    /// Bytes of `order[index]` received so far.
    private var received = 0
    private var layout = Layout.empty
    /// The chunk being filled, its shuffled copy and its compressed copy.
    private var chunk: [UInt8] = []
    private var filled = 0
    private var shuffled: [UInt8] = []
    private var compressed: [UInt8] = []
    private var finished = false

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
    /// - Throws: ``CheckpointError/hdf5(file:message:stack:)`` for a name HDF5 cannot hold (empty,
    ///   `.`, or containing `/` or NUL), a duplicate name, a row too big for one HDF5 chunk (4 GiB),
    ///   a compression level zstd does not have, or a libhdf5 failure.
    public init(path: String, tensors: [TensorSpec], compressionLevel: Int = 3) throws {
        self.path = path
        self.temporary = temporaryPath(for: path)
        self.compressionLevel = compressionLevel
        self.order = tensors.sorted { $0.name.utf8Precedes($1.name) }
        func invalid(_ message: String) -> CheckpointError { .hdf5(file: path, message: message, stack: "") }
        guard (Int(ZSTD_minCLevel())...Int(ZSTD_maxCLevel())).contains(compressionLevel) else {
            throw invalid(
                "zstd compression level \(compressionLevel) is outside \(ZSTD_minCLevel())...\(ZSTD_maxCLevel())")
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
        try startTensors()
    }

    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        var rest = bytes
        while !rest.isEmpty {
            guard index < order.count else {
                throw CheckpointError.io(
                    file: path, operation: "append", reason: "\(rest.count) bytes more than the tensors hold")
            }
            let spec = order[index]
            let capacity = layout == .scalar ? spec.dtype.size : layout.chunkBytes
            if chunk.count != capacity { chunk = [UInt8](repeating: 0, count: capacity) }
            let take = min(rest.count, capacity - filled, spec.byteCount - received)
            chunk.withUnsafeMutableBytes { target in
                (target.baseAddress! + filled).copyMemory(from: rest.baseAddress!, byteCount: take)
            }
            rest = UnsafeRawBufferPointer(rebasing: rest[take...])
            filled += take
            received += take
            if filled == capacity || received == spec.byteCount { try writeChunk() }
            if received == spec.byteCount {
                try closeDataset()
                index += 1
                received = 0
                try startTensors()
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
        try file.take()?.close(with: H5Fclose, file: path, "cannot close \(temporary)")
        try FaultInjector.shared.check(.file, path: path)
        try moveIntoPlace(temporary, path)
        TemporaryFiles.shared.unregister(temporary)
        return try Self.digest(of: path)
    }

    public func abort() {
        _ = try? dataset.take()?.close(file: path, "")
        _ = try? file.take()?.close(with: H5Fclose, file: path, "")
        removeFile(temporary)
        TemporaryFiles.shared.unregister(temporary)
    }

    /// Creates the dataset of `order[index]`, and finishes at once any that hold no bytes.
    private func startTensors() throws {
        while index < order.count {
            let spec = order[index]
            layout = Layout(spec)
            filled = 0
            dataset = try createDataset(spec)
            if spec.byteCount > 0 { return }
            try closeDataset()
            index += 1
        }
    }

    private func closeDataset() throws {
        try dataset.take()?.close(file: path, "cannot close dataset '\(order[index].name)'")
    }

    private func createDataset(_ spec: TensorSpec) throws -> HDF5ID {
        let what = "cannot create dataset '\(spec.name)'"
        let path = self.path
        let level = UInt32(bitPattern: Int32(compressionLevel))
        let layout = self.layout
        return try HDF5Library.withLock {
            let space =
                spec.shape.isEmpty
                ? try HDF5ID(H5Screate(H5S_SCALAR), file: path, what)
                : try HDF5ID(
                    H5Screate_simple(Int32(spec.shape.count), spec.shape.map { hsize_t($0) }, nil), file: path, what)
            let properties = try HDF5ID(H5Pcreate(fs_H5P_DATASET_CREATE()), file: path, what)
            try HDF5Library.check(H5Pset_obj_track_times(properties.raw, false), file: path, what)
            switch layout {
            case .scalar:
                try HDF5Library.check(H5Pset_layout(properties.raw, H5D_COMPACT), file: path, what)
            case .empty:
                try HDF5Library.check(H5Pset_layout(properties.raw, H5D_CONTIGUOUS), file: path, what)
            case .chunked(let rows, _):
                let chunkDims = [hsize_t(rows)] + spec.shape.dropFirst().map { hsize_t($0) }
                try HDF5Library.check(
                    H5Pset_chunk(properties.raw, Int32(chunkDims.count), chunkDims), file: path, what)
                try HDF5Library.check(H5Pset_shuffle(properties.raw), file: path, what)
                try HDF5Library.check(
                    H5Pset_filter(
                        properties.raw, H5Z_filter_t(FS_ZSTD_FILTER_ID), UInt32(H5Z_FLAG_MANDATORY), 1, [level]),
                    file: path, what)
            }
            let type = try Self.fileType(spec.dtype, file: path)
            let dataset = try HDF5ID(
                H5Dcreate2(
                    file?.raw ?? -1, spec.name, type.raw, space.raw, fs_H5P_DEFAULT(), properties.raw, fs_H5P_DEFAULT()),
                file: path, what)
            let marker = spec.dtype.isStoredAsInteger ? spec.dtype.numpyName : nil
            if let marker { try Self.writeStringAttribute("dtype", marker, on: dataset.raw, file: path, what) }
            return dataset
        }
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

    /// Writes the filled chunk (zero-padded past the tensor's end) and empties it.
    private func writeChunk() throws {
        let spec = order[index]
        let path = self.path
        let what = "cannot write tensor '\(spec.name)'"
        defer { filled = 0 }
        guard case .chunked(let rows, let rowBytes) = layout else {
            let dataset = self.dataset?.raw ?? -1
            try HDF5Library.withLock {
                let type = try Self.fileType(spec.dtype, file: path)
                try chunk.withUnsafeBytes { bytes in
                    _ = try HDF5Library.check(
                        H5Dwrite(dataset, type.raw, fs_H5S_ALL(), fs_H5S_ALL(), fs_H5P_DEFAULT(), bytes.baseAddress),
                        file: path, what)
                }
            }
            return
        }
        let firstRow = (received - filled) / rowBytes
        precondition(firstRow % rows == 0)
        if filled < chunk.count {
            chunk.withUnsafeMutableBytes { _ = $0[filled...].initializeMemory(as: UInt8.self, repeating: 0) }
        }
        if shuffled.count != chunk.count { shuffled = [UInt8](repeating: 0, count: chunk.count) }
        Self.shuffle(chunk, elementSize: spec.dtype.size, into: &shuffled)
        let bound = ZSTD_compressBound(chunk.count)
        if compressed.count < bound { compressed = [UInt8](repeating: 0, count: bound) }
        let level = Int32(compressionLevel)
        let size = shuffled.withUnsafeBytes { source in
            compressed.withUnsafeMutableBytes { target in
                ZSTD_compress(target.baseAddress, target.count, source.baseAddress, source.count, level)
            }
        }
        if ZSTD_isError(size) != 0 {
            throw CheckpointError.io(
                file: path, operation: "zstd compression of '\(spec.name)'",
                reason: String(cString: ZSTD_getErrorName(size)))
        }
        let offset = [hsize_t(firstRow)] + spec.shape.dropFirst().map { _ in hsize_t(0) }
        let dataset = self.dataset?.raw ?? -1
        try HDF5Library.withLock {
            try compressed.withUnsafeBytes { bytes in
                _ = try HDF5Library.check(
                    H5Dwrite_chunk(dataset, fs_H5P_DEFAULT(), 0, offset, size, bytes.baseAddress), file: path, what)
            }
        }
    }

    /// HDF5's shuffle filter (H5Zshuffle.c): byte `j` of element `i` goes to `j * n + i`, for
    /// `n` whole elements; a trailing partial element is copied as is.
    static func shuffle(_ input: [UInt8], elementSize: Int, into output: inout [UInt8]) {
        let n = input.count / elementSize
        input.withUnsafeBytes { source in
            output.withUnsafeMutableBytes { target in
                if elementSize == 1 {
                    target.copyMemory(from: source)
                    return
                }
                let from = source.baseAddress!.assumingMemoryBound(to: UInt8.self)
                let to = target.baseAddress!.assumingMemoryBound(to: UInt8.self)
                for j in 0..<elementSize {
                    let plane = to + j * n
                    var at = from + j
                    for i in 0..<n {
                        plane[i] = at.pointee
                        at += elementSize
                    }
                }
                let tail = n * elementSize
                for k in tail..<source.count { target[k] = source[k] }
            }
        }
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
