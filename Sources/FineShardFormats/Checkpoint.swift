import FineShardSystem
import Foundation
import Synchronization

/// The on-disk format of a checkpoint.
public enum CheckpointFormat: String, Sendable, Codable {
    case safetensors
    case hdf5
}

/// A dense checkpoint opened for reading: every tensor's name, dtype, shape and place, read from
/// headers only. Tensor data are read on demand by byte range (safetensors, pread) or hyperslab
/// (HDF5), never whole files.
public final class Checkpoint: Sendable {
    /// One weight file of the checkpoint.
    public struct File: Sendable, Hashable, Codable {
        /// Path relative to ``Checkpoint/root``.
        public var name: String
        public var bytes: Int
        /// Where the data area starts (safetensors: 8 + header length); `nil` for HDF5.
        public var dataStart: Int?
    }

    /// The folder the checkpoint lives in (the file's folder for a single file).
    public let root: String
    public let format: CheckpointFormat
    public let files: [File]
    /// All tensors, sorted by name.
    public let tensors: [TensorInfo]
    /// The raw `config.json` next to the weights, if any.
    public let config: Data?
    /// Files and folders of `root` that are not weights (config, tokenizer…), relative, sorted.
    public let nonWeightFiles: [String]
    let dataRead = Atomic<Int>(0)
    /// Size, modification time and inode of every weight file when it was opened.
    private let identities: [String: OpenFile.Identity]
    let readers: [String: any TensorStore]

    init(
        root: String, format: CheckpointFormat, files: [File], tensors: [TensorInfo], readers: [String: any TensorStore],
        weightNames: Set<String>, withFolder: Bool = true
    ) throws {
        self.root = root
        self.format = format
        self.files = files
        let sorted = tensors.sortedByName()
        self.tensors = sorted
        self.readers = readers
        // Sorted, a name in two files is in neighbouring entries, in file order.
        if !sorted.isSortedByName, let i = sorted.indices.dropFirst().first(where: { sorted[$0 - 1].name == sorted[$0].name }) {
            let (a, b) = (sorted[i - 1], sorted[i])
            throw CheckpointError.notACheckpoint(path: root, reason: "tensor '\(b.name)' is in both \(a.file) and \(b.file)")
        }
        self.identities = try Dictionary(
            uniqueKeysWithValues: files.map { ($0.name, try OpenFile.identity(of: (root as NSString).appendingPathComponent($0.name))) })
        let configPath = (root as NSString).appendingPathComponent("config.json")
        self.config = withFolder ? FileManager.default.contents(atPath: configPath) : nil
        self.nonWeightFiles = withFolder ? Self.listNonWeightFiles(root: root, excluding: weightNames) : []
    }

    /// Throws ``CheckpointError/sourceChanged(file:message:)`` when a weight file was truncated,
    /// rewritten or replaced since the checkpoint was opened (size, modification time, inode).
    public func checkUnchanged() throws {
        for file in files {
            let path = path(of: file.name)
            let now = try OpenFile.identity(of: path)
            guard let then = identities[file.name], now != then else { continue }
            let what =
                now.size != then.size
                ? "its size went from \(then.size) to \(now.size) bytes" : now.inode != then.inode ? "it was replaced" : "it was modified"
            throw CheckpointError.sourceChanged(
                file: path, message: "\(what) since it was opened; its shards are not recorded as complete: run again")
        }
    }

    /// The tensor named `name`.
    public func tensor(_ name: String) throws -> TensorInfo {
        guard let i = tensors.index(ofName: name) else { throw CheckpointError.noSuchTensor(name: name) }
        return tensors[i]
    }

    public func contains(_ name: String) -> Bool { tensors.index(ofName: name) != nil }

    public var totalBytes: Int { tensors.reduce(0) { $0 + $1.byteCount } }

    /// Reads `region` of `tensor` into `buffer` (row-major, `region.elementCount` elements).
    public func read(_ tensor: TensorInfo, region: Region, into buffer: UnsafeMutableRawBufferPointer) throws {
        precondition(buffer.count >= region.elementCount * tensor.dtype.size)
        guard let reader = readers[tensor.file] else { throw CheckpointError.noSuchTensor(name: tensor.name) }
        try reader.read(tensor, region: region, into: buffer)
        dataRead.add(region.elementCount * tensor.dtype.size, ordering: .relaxed)
    }

    /// Tensor data read so far (headers excluded): what a `--ranks` task reports as `bytes_read`
    /// and tests compare with the plan's pieces.
    public var bytesRead: Int { dataRead.load(ordering: .relaxed) }

    /// The absolute path of a file of the checkpoint.
    public func path(of file: String) -> String { (root as NSString).appendingPathComponent(file) }

    private static func listNonWeightFiles(root: String, excluding weights: Set<String>) -> [String] {
        guard let walker = FileManager.default.enumerator(atPath: root) else { return [] }
        var result: [String] = []
        while let item = walker.nextObject() as? String {
            let full = (root as NSString).appendingPathComponent(item)
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: full, isDirectory: &isDirectory), !isDirectory.boolValue else { continue }
            let base = (item as NSString).lastPathComponent
            if weights.contains(item) || item == Checkpoint.indexFileName || base.hasPrefix(".") { continue }
            result.append(item)
        }
        return result.sorted()
    }
}

/// Reads tensor regions from one weight file.
protocol TensorStore: Sendable {
    func read(_ tensor: TensorInfo, region: Region, into buffer: UnsafeMutableRawBufferPointer) throws
}

/// Reads safetensors tensors by pread of the byte runs a region occupies.
final class SafetensorsStore: TensorStore {
    let file: OpenFile

    init(file: OpenFile) { self.file = file }

    func read(_ tensor: TensorInfo, region: Region, into buffer: UnsafeMutableRawBufferPointer) throws {
        let base = tensor.offset!
        let (runLength, runs) = region.runs(in: tensor.shape, elementSize: tensor.dtype.size)
        if runs > 1 && runLength < 1 << 16 { return try gather(tensor, region: region, into: buffer) }
        var out = 0
        try region.forEachRun(in: tensor.shape, elementSize: tensor.dtype.size) { offset in
            try file.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[out..<out + runLength]), at: base + offset)
            out += runLength
        }
    }
}

extension HDF5Reader: TensorStore {}
