/// One tensor of a checkpoint: what it is and where its bytes live.
public struct TensorInfo: Sendable, Hashable, Codable {
    /// The tensor's name as the checkpoint spells it (`model.layers.0.self_attn.o_proj.weight`).
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    /// The file that holds the tensor, relative to the checkpoint's root folder.
    public var file: String
    /// Absolute byte offset of the first element in `file` (safetensors); `nil` for formats whose
    /// library places the data (HDF5).
    public var offset: Int?

    public init(name: String, dtype: DType, shape: [Int], file: String, offset: Int?) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.file = file
        self.offset = offset
    }

    /// Number of elements (1 for a scalar). Callers only build `TensorInfo` from validated shapes,
    /// so this cannot overflow.
    public var elementCount: Int { shape.reduce(1, *) }
    public var byteCount: Int { elementCount * dtype.size }
}
