import CHDF5
import FineShardSystem

/// Reads the tensors of one HDF5 file (docs/SPEC.md §3): every dataset, recursively through groups, is a
/// tensor named by its path without the leading `/` and with `/` replaced by `.`.
///
/// bfloat16 and float8 are stored as 16/8-bit integers with a string attribute `dtype`
/// (`"bfloat16"`, `"float8_e4m3fn"`, `"float8_e5m2"`), the convention of checkpoints saved from
/// PyTorch through h5py, which has no such types. Chunked datasets with the shuffle filter and/or
/// zstd (filter 32015, as hdf5plugin registers it) read through the filter fineshard registers.
/// All HDF5 calls run under ``HDF5Library``'s lock, so one reader may be shared between threads.
public final class HDF5Reader: @unchecked Sendable {
    /// The file's path on disk.
    public let path: String
    /// How the file is named in errors and in ``TensorInfo/file``.
    public let name: String
    /// Every dataset of the file, sorted by name.
    public let tensors: [TensorInfo]

    private let file: HDF5ID
    /// Tensor name → dataset path inside the file.
    private let datasetPaths: [String: String]
    private let byName: [String: TensorInfo]

    /// Opens `path` read-only and describes every dataset in it.
    /// - Throws: ``SystemError/unreadable(file:reason:)`` if the file cannot be opened,
    ///   ``CheckpointError/hdf5(file:message:stack:)`` if it is not valid HDF5 or holds a dataset
    ///   fineshard cannot represent.
    public init(path: String, name: String) throws {
        _ = try OpenFile.forReading(path)
        self.path = path
        self.name = name
        let file = try HDF5Library.withLock {
            try HDF5ID(
                H5Fopen(path, fs_H5F_ACC_RDONLY(), fs_H5P_DEFAULT()), file: name, "cannot open as an HDF5 file")
        }
        var tensors: [TensorInfo] = []
        var paths: [String: String] = [:]
        try HDF5Library.withLock {
            for datasetPath in try Self.datasetPaths(in: file.raw, file: name) {
                let tensorName = datasetPath.split(separator: "/", omittingEmptySubsequences: true).joined(
                    separator: ".")
                if let other = paths[tensorName] {
                    throw CheckpointError.hdf5(
                        file: name,
                        message:
                            "datasets '/\(other)' and '/\(datasetPath)' both map to the tensor name '\(tensorName)'",
                        stack: "")
                }
                paths[tensorName] = datasetPath
                let (dtype, shape) = try Self.describe(datasetPath, in: file.raw, file: name)
                tensors.append(TensorInfo(name: tensorName, dtype: dtype, shape: shape, file: name, offset: nil))
            }
        }
        self.file = file
        self.tensors = tensors.sorted { $0.name.utf8Precedes($1.name) }
        self.datasetPaths = paths
        self.byName = Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, $0) })
    }

    /// Reads `region` of `tensor` into `buffer`, row-major and little-endian: a hyperslab of the
    /// dataset read into a simple memory space of `region.shape` (`H5Sselect_hyperslab`, `H5Dread`).
    /// - Throws: ``CheckpointError/noSuchTensor(name:)`` for a tensor this file lacks or a region
    ///   outside its shape; ``CheckpointError/damagedChunk(file:dataset:chunk:offset:reason:)``
    ///   for a chunk the zstd filter refuses (checksum, frame, size), named by index and offset;
    ///   ``CheckpointError/hdf5(file:message:stack:)`` when libhdf5 fails otherwise (a truncated file).
    public func read(_ tensor: TensorInfo, region: Region, into buffer: UnsafeMutableRawBufferPointer) throws {
        guard let info = byName[tensor.name], let datasetPath = datasetPaths[tensor.name] else {
            throw CheckpointError.noSuchTensor(name: tensor.name)
        }
        guard region.ranges.count == info.shape.count,
            zip(region.ranges, info.shape).allSatisfy({ $0.lowerBound >= 0 && $0.upperBound <= $1 })
        else { throw CheckpointError.noSuchTensor(name: "\(tensor.name)\(region.ranges.spelled)") }
        let byteCount = region.elementCount * info.dtype.size
        guard buffer.count == byteCount else {
            throw CheckpointError.hdf5(
                file: name,
                message:
                    "a buffer of \(buffer.count) bytes cannot hold \(region.ranges.spelled) of '\(tensor.name)' (\(byteCount) bytes)",
                stack: "")
        }
        guard byteCount > 0, let base = buffer.baseAddress else { return }
        let fileName = name
        let what = "cannot read \(region.ranges.spelled) of dataset '/\(datasetPath)'"
        try HDF5Library.withLock {
            let dataset = try HDF5ID(H5Dopen2(file.raw, datasetPath, fs_H5P_DEFAULT()), file: fileName, what)
            let fileType = try HDF5ID(H5Dget_type(dataset.raw), file: fileName, what)
            let memoryType = try HDF5ID(
                info.dtype == .f16
                    ? fs_create_ieee_f16le()
                    : H5Tget_native_type(fileType.raw, H5T_DIR_ASCEND),
                file: fileName, what)
            guard H5Tget_size(memoryType.raw) == info.dtype.size else {
                throw CheckpointError.hdf5(
                    file: fileName, message: "\(what): no native type of \(info.dtype.size) bytes", stack: "")
            }
            // The zstd filter checks every chunk decodes to exactly the dataset's chunk size, and
            // its frame checksum where the frame has one.
            let creation = try HDF5ID(H5Dget_create_plist(dataset.raw), file: fileName, what)
            var chunk = [hsize_t](repeating: 0, count: max(info.shape.count, 1))
            let chunkRank =
                H5Pget_layout(creation.raw) == H5D_CHUNKED ? H5Pget_chunk(creation.raw, Int32(chunk.count), &chunk) : 0
            let chunkBytes = chunkRank > 0 ? chunk[0..<Int(chunkRank)].reduce(1) { $0 * Int($1) } * H5Tget_size(fileType.raw) : 0
            HDF5Library.expectChunkBytes(chunkBytes)
            if info.shape.isEmpty {
                let memorySpace = try HDF5ID(H5Screate(H5S_SCALAR), file: fileName, what)
                try HDF5Library.check(
                    H5Dread(dataset.raw, memoryType.raw, memorySpace.raw, fs_H5S_ALL(), fs_H5P_DEFAULT(), base),
                    file: fileName, what)
                return
            }
            let fileSpace = try HDF5ID(H5Dget_space(dataset.raw), file: fileName, what)
            /// `H5Dread` of the box `ranges` into `target`; a negative status on failure.
            func readBox(_ ranges: [Range<Int>], into target: UnsafeMutableRawPointer) throws -> herr_t {
                let start = ranges.map { hsize_t($0.lowerBound) }
                let count = ranges.map { hsize_t($0.count) }
                try HDF5Library.check(
                    H5Sselect_hyperslab(fileSpace.raw, fs_H5S_SELECT_SET(), start, nil, count, nil), file: fileName, what)
                let memorySpace = try HDF5ID(H5Screate_simple(Int32(count.count), count, nil), file: fileName, what)
                return H5Dread(dataset.raw, memoryType.raw, memorySpace.raw, fileSpace.raw, fs_H5P_DEFAULT(), target)
            }
            guard try readBox(region.ranges, into: base) < 0 else { return }
            let reason = HDF5Library.zstdFailure()
            let failure = HDF5Library.failure(file: fileName, what)
            guard !reason.isEmpty, Int(chunkRank) == info.shape.count else { throw failure }
            // The zstd filter failed on some chunk, and libhdf5 does not say which: read the
            // chunks of the region one at a time to name it.
            let chunkShape = chunk.prefix(info.shape.count).map { Int($0) }
            var scratch = [UInt8](repeating: 0, count: chunkShape.reduce(info.dtype.size, *))
            let grid = zip(info.shape, chunkShape).map { ($0 + $1 - 1) / $1 }
            let cells = zip(region.ranges, chunkShape).map { $0.lowerBound / $1..<($0.upperBound - 1) / $1 + 1 }
            for k in 0..<cells.reduce(1, { $0 * $1.count }) {
                var rest = k
                var cell = [Int](repeating: 0, count: cells.count)
                for d in cells.indices.reversed() {
                    cell[d] = cells[d].lowerBound + rest % cells[d].count
                    rest /= cells[d].count
                }
                let box = zip(zip(cell, chunkShape), region.ranges).map { cellAndSize, range in
                    max(cellAndSize.0 * cellAndSize.1, range.lowerBound)..<min((cellAndSize.0 + 1) * cellAndSize.1, range.upperBound)
                }
                HDF5Library.expectChunkBytes(chunkBytes)
                let status = try scratch.withUnsafeMutableBytes { try readBox(box, into: $0.baseAddress!) }
                guard status < 0 else { continue }
                let reason = HDF5Library.zstdFailure()
                let cellFailure = HDF5Library.failure(file: fileName, what)
                let index = zip(cell, grid).reduce(0) { $0 * $1.1 + $1.0 }
                throw CheckpointError.damagedChunk(
                    file: fileName, dataset: datasetPath, chunk: index, offset: zip(cell, chunkShape).map { $0 * $1 },
                    reason: reason.isEmpty ? "\(cellFailure)" : reason)
            }
            throw failure
        }
    }

    /// The first chunk of the file that does not decode (its zstd checksum fails, say), found by
    /// reading every tensor in blocks of rows; `nil` if every chunk decodes. Other read errors end
    /// the search of that tensor: they are not about one chunk.
    public func firstDamagedChunk() -> CheckpointError? {
        for info in tensors where info.shape.count > 0 && !info.shape.contains(0) {
            let rowBytes = info.shape.dropFirst().reduce(info.dtype.size, *)
            let rows = max(1, (4 << 20) / rowBytes)
            var buffer = [UInt8](repeating: 0, count: min(rows, info.shape[0]) * rowBytes)
            for start in stride(from: 0, to: info.shape[0], by: rows) {
                var region = Region(whole: info.shape)
                region.ranges[0] = start..<min(start + rows, info.shape[0])
                do {
                    try buffer.withUnsafeMutableBytes {
                        try read(
                            info, region: region,
                            into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<region.elementCount * info.dtype.size]))
                    }
                } catch let error as CheckpointError {
                    if case .damagedChunk = error { return error }
                    break
                } catch {
                    break
                }
            }
        }
        return nil
    }

    /// ``firstDamagedChunk()`` of the HDF5 file at `path`; `nil` if it does not open as one.
    public static func firstDamagedChunk(path: String, name: String) -> CheckpointError? {
        (try? HDF5Reader(path: path, name: name))?.firstDamagedChunk()
    }

    /// The paths (without the leading `/`) of every dataset reachable from the root, each object
    /// once, in name order (`H5Ovisit2`).
    private static func datasetPaths(in file: hid_t, file name: String) throws -> [String] {
        var paths: [String] = []
        let visitor: H5O_iterate_t = { _, objectName, info, data in
            guard let objectName, let info, let data else { return -1 }
            if info.pointee.type == H5O_TYPE_DATASET {
                data.assumingMemoryBound(to: [String].self).pointee.append(String(cString: objectName))
            }
            return 0
        }
        let status = withUnsafeMutablePointer(to: &paths) {
            H5Ovisit2(file, H5_INDEX_NAME, H5_ITER_INC, visitor, UnsafeMutableRawPointer($0), UInt32(H5O_INFO_BASIC))
        }
        try HDF5Library.check(status, file: name, "cannot list the objects of the file")
        return paths
    }

    /// The dtype and shape of one dataset, from its stored type and its `dtype` attribute.
    private static func describe(_ datasetPath: String, in file: hid_t, file name: String) throws -> (DType, [Int]) {
        let what = "cannot describe dataset '/\(datasetPath)'"
        func unsupported(_ reason: String) -> CheckpointError {
            .hdf5(file: name, message: "dataset '/\(datasetPath)': \(reason)", stack: "")
        }
        let dataset = try HDF5ID(H5Dopen2(file, datasetPath, fs_H5P_DEFAULT()), file: name, what)
        let space = try HDF5ID(H5Dget_space(dataset.raw), file: name, what)
        let rank = try HDF5Library.check(H5Sget_simple_extent_ndims(space.raw), file: name, what)
        if H5Sget_simple_extent_type(space.raw) == H5S_NULL { throw unsupported("has a null dataspace (no data)") }
        var dims = [hsize_t](repeating: 0, count: Int(rank))
        try HDF5Library.check(H5Sget_simple_extent_dims(space.raw, &dims, nil), file: name, what)
        guard dims.allSatisfy({ $0 <= hsize_t(Int.max) }) else { throw unsupported("dimensions \(dims) too large") }
        let shape = dims.map { Int($0) }

        let type = try HDF5ID(H5Dget_type(dataset.raw), file: name, what)
        let size = H5Tget_size(type.raw)
        let typeClass = H5Tget_class(type.raw)
        let stored: DType?
        switch typeClass {
        case H5T_FLOAT:
            switch size {
            case 8: stored = .f64
            case 4: stored = .f32
            case 2:
                var signPosition = 0
                var exponentPosition = 0
                var exponentSize = 0
                var mantissaPosition = 0
                var mantissaSize = 0
                try HDF5Library.check(
                    H5Tget_fields(
                        type.raw, &signPosition, &exponentPosition, &exponentSize, &mantissaPosition, &mantissaSize),
                    file: name, what)
                guard
                    (signPosition, exponentPosition, exponentSize, mantissaPosition, mantissaSize) == (
                        15, 10, 5, 0, 10
                    ),
                    H5Tget_ebias(type.raw) == 15
                else { throw unsupported("16-bit float type is not IEEE binary16") }
                stored = .f16
            default: stored = nil
            }
        case H5T_INTEGER:
            let signed = H5Tget_sign(type.raw) == H5T_SGN_2
            switch (size, signed) {
            case (8, true): stored = .i64
            case (4, true): stored = .i32
            case (2, true): stored = .i16
            case (1, true): stored = .i8
            case (1, false): stored = .u8
            default: stored = nil  // uint16 and wider: only meaningful with a `dtype` attribute
            }
        case H5T_ENUM:
            guard try isH5pyBool(type.raw, file: name, what) else {
                throw unsupported("enum types other than h5py's bool")
            }
            stored = .bool
        default:
            throw unsupported("unsupported type class \(typeClass.rawValue)")
        }

        guard let attribute = try stringAttribute("dtype", of: dataset.raw, file: name, what) else {
            guard let stored else { throw unsupported("unsupported \(size)-byte integer type") }
            return (stored, shape)
        }
        guard let declared = DType.allCases.first(where: { $0.numpyName == attribute }) else {
            throw unsupported("unknown dtype attribute '\(attribute)'")
        }
        guard declared.size == size else {
            throw unsupported(
                "dtype attribute '\(attribute)' has \(declared.size)-byte elements but the stored type has \(size)-byte elements"
            )
        }
        switch declared {
        case _ where declared.isStoredAsInteger:
            guard typeClass == H5T_INTEGER else {
                throw unsupported("dtype attribute '\(attribute)' needs an integer stored type")
            }
        case .bool where typeClass == H5T_INTEGER:
            break  // uint8/int8 marked as bool, for writers that avoid the enum
        default:
            guard declared == stored else {
                throw unsupported("dtype attribute '\(attribute)' disagrees with the stored type")
            }
        }
        return (declared, shape)
    }

    /// h5py stores numpy bool as an enum over int8 with FALSE = 0 and TRUE = 1.
    private static func isH5pyBool(_ type: hid_t, file: String, _ what: String) throws -> Bool {
        let base = try HDF5ID(H5Tget_super(type), file: file, what)
        guard H5Tget_class(base.raw) == H5T_INTEGER, H5Tget_size(base.raw) == 1,
            try HDF5Library.check(H5Tget_nmembers(type), file: file, what) == 2
        else { return false }
        for (index, expected) in ["FALSE", "TRUE"].enumerated() {
            guard let member = H5Tget_member_name(type, UInt32(index)) else { return false }
            let memberName = String(cString: member)
            H5free_memory(member)
            var value: Int8 = -1
            try HDF5Library.check(H5Tget_member_value(type, UInt32(index), &value), file: file, what)
            guard memberName == expected, Int(value) == index else { return false }
        }
        return true
    }

    /// A scalar string attribute, fixed-length or variable-length as h5py writes them; `nil` if
    /// absent. Read with the stored character set: HDF5 1.10 cannot convert ASCII to UTF-8.
    static func stringAttribute(
        _ attributeName: String, of object: hid_t, file: String, _ what: String
    ) throws
        -> String?
    {
        guard try HDF5Library.check(H5Aexists(object, attributeName), file: file, what) > 0 else { return nil }
        func invalid(_ reason: String) -> CheckpointError {
            .hdf5(file: file, message: "\(what): attribute '\(attributeName)' \(reason)", stack: "")
        }
        let attribute = try HDF5ID(H5Aopen(object, attributeName, fs_H5P_DEFAULT()), file: file, what)
        let type = try HDF5ID(H5Aget_type(attribute.raw), file: file, what)
        guard H5Tget_class(type.raw) == H5T_STRING else { throw invalid("is not a string") }
        let space = try HDF5ID(H5Aget_space(attribute.raw), file: file, what)
        guard H5Sget_simple_extent_npoints(space.raw) == 1 else { throw invalid("is not a single string") }
        let memoryType = try HDF5ID(H5Tcopy(fs_H5T_C_S1()), file: file, what)
        try HDF5Library.check(H5Tset_cset(memoryType.raw, H5Tget_cset(type.raw)), file: file, what)
        if try HDF5Library.check(H5Tis_variable_str(type.raw), file: file, what) > 0 {
            try HDF5Library.check(H5Tset_size(memoryType.raw, fs_H5T_VARIABLE()), file: file, what)
            var pointer: UnsafeMutablePointer<CChar>? = nil
            try HDF5Library.check(H5Aread(attribute.raw, memoryType.raw, &pointer), file: file, what)
            defer { H5Dvlen_reclaim(memoryType.raw, space.raw, fs_H5P_DEFAULT(), &pointer) }
            return pointer.map { String(cString: $0) } ?? ""
        }
        let size = H5Tget_size(type.raw)
        guard size > 0, size < 1 << 20 else { throw invalid("has an unusable size of \(size) bytes") }
        try HDF5Library.check(H5Tset_size(memoryType.raw, size), file: file, what)
        try HDF5Library.check(H5Tset_strpad(memoryType.raw, H5T_STR_NULLPAD), file: file, what)
        var bytes = [UInt8](repeating: 0, count: size)
        try HDF5Library.check(H5Aread(attribute.raw, memoryType.raw, &bytes), file: file, what)
        let text = bytes.prefix { $0 != 0 }
        return String(decoding: text, as: UTF8.self).trimmingSuffix(" ")
    }
}

extension [Range<Int>] {
    /// `[0..<4, 10..<20]`, for messages.
    fileprivate var spelled: String {
        "[" + map { "\($0.lowerBound)..<\($0.upperBound)" }.joined(separator: ", ") + "]"
    }
}

extension String {
    /// Drops trailing `character`s (HDF5's space-padded fixed strings).
    fileprivate func trimmingSuffix(_ character: Character) -> String {
        var result = self
        while result.last == character { result.removeLast() }
        return result
    }
}

extension DType {
    /// HDF5 has no bf16 or f8 type: these are stored as unsigned integers of their size, marked
    /// with a `dtype` attribute that names them (what the writer sets and the reader requires).
    var isStoredAsInteger: Bool { self == .bf16 || self == .f8e4m3 || self == .f8e5m2 }

    /// The numpy name of this dtype, as a `dtype` attribute spells it (the one table of HDF5
    /// dtype names, for the reader and the writer).
    var numpyName: String {
        switch self {
        case .f64: "float64"
        case .f32: "float32"
        case .f16: "float16"
        case .bf16: "bfloat16"
        case .f8e4m3: "float8_e4m3fn"
        case .f8e5m2: "float8_e5m2"
        case .i64: "int64"
        case .i32: "int32"
        case .i16: "int16"
        case .i8: "int8"
        case .u8: "uint8"
        case .bool: "bool"
        }
    }
}
