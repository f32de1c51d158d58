import FineShardFormats
import FineShardOutput
import Foundation
import Synchronization

/// The output files of a shard run opened for reading, each as a one-file checkpoint (so every
/// header is validated before it is trusted). A tensor is addressed as `file` + `name`.
package final class ShardSet: PieceReader, @unchecked Sendable {
    package let folder: String
    private let opened = Mutex<[String: Checkpoint]>([:])
    /// The tensors ``checkOnce(_:record:)`` has checked, and how many bytes it hashed.
    let checked = Mutex<(tensors: Set<TensorKey>, hashed: Int, bytesHashed: Int)>(([], 0, 0))

    package init(folder: String) { self.folder = folder }

    package func checkpoint(_ file: String) throws -> Checkpoint {
        if let c = opened.withLock({ $0[file] }) { return c }
        let c = try Checkpoint.openFile(try OutputFolder(folder).inside(file))
        opened.withLock { $0[file] = c }
        return c
    }

    package func tensor(file: String, name: String) throws -> TensorInfo { try checkpoint(file).tensor(name) }

    /// Reads `region` of a shard tensor into `buffer`.
    package func read(_ key: TensorKey, region: Region, into buffer: UnsafeMutableRawBufferPointer) throws {
        let c = try checkpoint(key.file)
        try c.read(try c.tensor(key.name), region: region, into: buffer)
    }

    /// A merge plan's piece: its source is a ``TensorKey/pieceSource``.
    package func read(_ source: String, region: Region, into buffer: UnsafeMutableRawBufferPointer) throws {
        guard let key = TensorKey(pieceSource: source) else { throw CheckpointError.noSuchTensor(name: source) }
        try read(key, region: region, into: buffer)
    }
}
