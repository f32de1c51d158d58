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
    /// Checks that every byte was appended, makes the file durable and renames it into place.
    func finish() throws -> WrittenFile
    /// Removes the temporary file; safe to call at any point, also after a failure.
    func abort()
}

/// The temporary name an output file has until it is complete. The process id keeps processes
/// that write the same file at once (the non-weight files every `--ranks` task copies) apart.
public func temporaryPath(for path: String) -> String { "\(path).\(temporaryTag).fineshard-tmp" }

private let temporaryTag = String(getpid())

extension Sequence<UInt8> {
    /// Lowercase hexadecimal, as SHA-256 digests are written in manifests.
    public var hexString: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        for b in self {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
