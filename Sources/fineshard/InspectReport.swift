import FineShard

/// What `fineshard inspect` reports about a checkpoint; encoded as-is for `--json`.
public struct InspectReport: Codable, Sendable {
    public struct DTypeCount: Codable, Sendable {
        public var count: Int
        public var bytes: Int
    }

    public struct Tensor: Codable, Sendable {
        public var name: String
        public var dtype: DType
        public var shape: [Int]
        public var bytes: Int
        public var file: String
        /// Byte range in the file's data area, as the safetensors header states it (nil for HDF5).
        public var dataOffsets: [Int]?
        /// The tensor's role in the model, once the model is recognized.
        public var role: String?

        enum CodingKeys: String, CodingKey {
            case name, dtype, shape, bytes, file, role
            case dataOffsets = "data_offsets"
        }
    }

    public var root: String
    public var format: CheckpointFormat
    public var files: [Checkpoint.File]
    public var tensorCount: Int
    public var totalBytes: Int
    public var dtypes: [String: DTypeCount]
    public var tensors: [Tensor]

    enum CodingKeys: String, CodingKey {
        case root, format, files, dtypes, tensors
        case tensorCount = "tensor_count"
        case totalBytes = "total_bytes"
    }

    public init(_ checkpoint: Checkpoint, roles: [String: String] = [:]) {
        root = checkpoint.root
        format = checkpoint.format
        files = checkpoint.files
        tensorCount = checkpoint.tensors.count
        totalBytes = checkpoint.totalBytes
        var dtypes: [String: DTypeCount] = [:]
        for t in checkpoint.tensors {
            dtypes[t.dtype.rawValue, default: DTypeCount(count: 0, bytes: 0)].count += 1
            dtypes[t.dtype.rawValue]!.bytes += t.byteCount
        }
        self.dtypes = dtypes
        let starts = Dictionary(uniqueKeysWithValues: checkpoint.files.map { ($0.name, $0.dataStart) })
        tensors = checkpoint.tensors.map { t in
            let offsets = t.offset.flatMap { offset in starts[t.file]!.map { [offset - $0, offset - $0 + t.byteCount] } }
            return Tensor(
                name: t.name, dtype: t.dtype, shape: t.shape, bytes: t.byteCount, file: t.file, dataOffsets: offsets, role: roles[t.name])
        }
    }

    /// The role of every tensor (`o_proj.weight`, `expert_up.per_channel`, `other.weight`), or
    /// none when the model is not recognized (inspect still lists its tensors).
    public static func roles(of checkpoint: Checkpoint) -> [String: String] {
        guard let model = try? Model.recognize(checkpoint) else { return [:] }
        return Dictionary(zip(model.roles.keys, model.roles.values.map(\.label))) { first, _ in first }
    }
}
