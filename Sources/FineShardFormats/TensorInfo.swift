import Foundation

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

extension Array where Element == TensorInfo {
    /// Sorted by name (UTF-8 byte order); checks first, since callers usually pass sorted tables.
    package func sortedByName() -> [TensorInfo] {
        if zip(self, dropFirst()).allSatisfy({ $0.name.utf8Precedes($1.name) }) { return self }
        // Sort indices, not the structs: moving a TensorInfo costs retains and releases.
        let names = map(\.name)
        return indices.sorted { names[$0].utf8Precedes(names[$1]) }.map { self[$0] }
    }
}

extension String {
    /// Byte-wise UTF-8 order (memcmp), the order fineshard sorts names in: deterministic and
    /// fast on the hundreds of thousands of names of a large checkpoint.
    public func utf8Precedes(_ other: String) -> Bool {
        var a = self
        var b = other
        return a.withUTF8 { x in
            b.withUTF8 { y in
                let n = min(x.count, y.count)
                let c = n == 0 ? 0 : memcmp(x.baseAddress!, y.baseAddress!, n)
                return c != 0 ? c < 0 : x.count < y.count
            }
        }
    }
}
