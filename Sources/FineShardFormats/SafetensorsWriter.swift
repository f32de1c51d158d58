import Crypto
import FineShardSystem
import Foundation

/// Streams one safetensors file: the header is computed from the tensor list up front, then the
/// data are appended in ``order`` through a bounded buffer and hashed as they are written.
///
/// Order follows the reference writer (huggingface/safetensors `serialize`): larger dtypes first,
/// then by name, so every tensor is aligned to its element size in an 8-byte-aligned data area.
public final class SafetensorsWriter: TensorFileWriter {
    public let order: [TensorSpec]
    public let path: String
    private let file: OpenFile
    private var hasher = SHA256()
    private var position: Int
    private let endOfData: Int
    private var buffer: [UInt8] = []
    private let bufferLimit: Int

    /// Creates the temporary file and writes the header. `bufferSize` bounds the bytes held
    /// before a pwrite.
    public init(path: String, tensors: [TensorSpec], metadata: [String: String]? = nil, bufferSize: Int = 8 << 20) throws {
        self.path = path
        self.order = tensors.sorted {
            $0.dtype != $1.dtype ? $0.dtype < $1.dtype : $0.name.utf8Precedes($1.name)
        }
        self.bufferLimit = bufferSize
        let header = SafetensorsHeader.encode(order.map { ($0.name, $0.dtype, $0.shape) }, metadata: metadata)
        TemporaryFiles.shared.register(temporaryPath(for: path))
        self.file = try OpenFile.forWriting(temporaryPath(for: path))
        self.position = 0
        self.endOfData = header.count + order.reduce(0) { $0 + $1.byteCount }
        buffer.reserveCapacity(min(bufferSize, endOfData))
        buffer.append(contentsOf: header)
    }

    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        guard position + buffer.count + bytes.count <= endOfData else {
            throw CheckpointError.io(file: path, operation: "append", reason: "more bytes than the header declares (\(endOfData))")
        }
        if buffer.count + bytes.count > bufferLimit { try flush() }
        // Appends of whole blocks go straight out: copying them into the buffer would be one more pass.
        if bytes.count >= min(bufferLimit, 64 << 10) {
            try flush()
            hasher.update(bufferPointer: bytes)
            try file.write(bytes, at: position)
            position += bytes.count
        } else {
            buffer.append(contentsOf: bytes)
        }
    }

    private func flush() throws {
        guard !buffer.isEmpty else { return }
        try buffer.withUnsafeBytes {
            hasher.update(bufferPointer: $0)
            try file.write($0, at: position)
        }
        position += buffer.count
        buffer.removeAll(keepingCapacity: true)
    }

    public func finish() throws -> WrittenFile {
        try flush()
        guard position == endOfData else {
            throw CheckpointError.io(file: path, operation: "finish", reason: "only \(position) of \(endOfData) bytes were written")
        }
        // No fsync per file: the executor syncs the whole output once, before the manifest.
        try FaultInjector.shared.check(.file, path: path)
        try moveIntoPlace(temporaryPath(for: path), path)
        TemporaryFiles.shared.unregister(temporaryPath(for: path))
        return WrittenFile(path: path, bytes: endOfData, sha256: hasher.finalize().hexString)
    }

    public func abort() {
        removeFile(temporaryPath(for: path))
        TemporaryFiles.shared.unregister(temporaryPath(for: path))
    }
}
