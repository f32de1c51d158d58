import Foundation
import Synchronization

/// The output files of a shard run opened for reading, each as a one-file checkpoint (so every
/// header is validated before it is trusted). A tensor is addressed as `file` + `name`.
final class ShardSet: PieceReader, @unchecked Sendable {
    let folder: String
    private let opened = Mutex<[String: Checkpoint]>([:])

    init(folder: String) { self.folder = folder }

    /// The key a merge piece uses for tensor `name` of `file`.
    static func key(file: String, name: String) -> String { file + "\u{0}" + name }

    func checkpoint(_ file: String) throws -> Checkpoint {
        if let c = opened.withLock({ $0[file] }) { return c }
        let c = try Checkpoint.open((folder as NSString).appendingPathComponent(file))
        opened.withLock { $0[file] = c }
        return c
    }

    func tensor(file: String, name: String) throws -> TensorInfo { try checkpoint(file).tensor(name) }

    func read(_ key: String, region: Region, into buffer: UnsafeMutableRawBufferPointer) throws {
        let parts = key.split(separator: "\u{0}", maxSplits: 1).map(String.init)
        let c = try checkpoint(parts[0])
        try c.read(try c.tensor(parts[1]), region: region, into: buffer)
    }
}
