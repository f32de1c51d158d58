import FineShardSystem
import Foundation

/// The name, element type and shape of a tensor to be written.
public struct TensorSpec: Sendable, Hashable, Codable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]

    public init(name: String, dtype: DType, shape: [Int]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }

    public var byteCount: Int { shape.reduce(1, *) * dtype.size }
}

/// A finished output file: where it is, its size and its SHA-256 (lowercase hex).
public struct WrittenFile: Sendable, Hashable, Codable {
    public var path: String
    public var bytes: Int
    public var sha256: String
}

/// A streaming writer of one tensor file. The tensor list is fixed up front; the caller then
/// appends every tensor's bytes, row-major, in ``order``, in pieces of any size, so a writer never
/// needs a whole tensor in memory. Output goes to a temporary name in the destination folder and
/// is renamed into place by ``finish()``; ``abort()`` removes it.
public protocol TensorFileWriter: AnyObject {
    /// The tensors in the order their bytes must be appended (deterministic for a given list).
    var order: [TensorSpec] { get }
    /// Appends the next bytes of the current tensor (and possibly of the ones after it).
    func append(_ bytes: UnsafeRawBufferPointer) throws
    /// Checks that every byte was appended and renames the file into place. It does not fsync: the
    /// executor syncs the output's filesystem once, before it writes the manifest.
    func finish() throws -> WrittenFile
    /// Removes the temporary file; safe to call at any point, also after a failure.
    func abort()
}
