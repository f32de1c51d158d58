import Crypto
import FineShardFormats
import FineShardOutput
import FineShardPlanning
import FineShardSystem

extension ShardSet {
    /// SHA-256 of a shard tensor's data, row-major and little-endian (what a rank file's
    /// `tensor_sha256` records), read in blocks of whole rows.
    package func sha256(of key: TensorKey, blockBytes: Int = 16 << 20) throws -> String {
        let c = try checkpoint(key.file)
        let info = try c.tensor(key.name)
        var hasher = SHA256()
        var region = Region(whole: info.shape)
        let rowBytes = info.shape.dropFirst().reduce(info.dtype.size, *)
        let rows = info.shape.first ?? 1
        let rowsPerBlock = max(1, blockBytes / max(rowBytes, 1))
        var buffer = [UInt8](repeating: 0, count: min(rows, rowsPerBlock) * rowBytes)
        var r0 = 0
        while r0 < rows, rowBytes > 0 {
            let r1 = min(rows, r0 + rowsPerBlock)
            if !region.ranges.isEmpty { region.ranges[0] = r0..<r1 }
            let count = (r1 - r0) * rowBytes
            try buffer.withUnsafeMutableBytes { b in
                try c.read(info, region: region, into: UnsafeMutableRawBufferPointer(rebasing: b[0..<count]))
                hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: b[0..<count]))
            }
            r0 = r1
        }
        return hasher.finalize().hexString
    }

    /// Checks a rank file against its record and its tensors against the manifest, reading the file
    /// once: its size, its SHA-256 and, in the same pass, each tensor's (a safetensors file holds its
    /// tensors as contiguous byte ranges; an HDF5 file's are hashed as read), and every tensor's dtype
    /// and shape in the header. A difference throws ``ManifestError/shardDiffers(file:tensor:message:)``
    /// naming the tensor whose hash differs where the record has tensor hashes.
    package func check(file record: Manifest.FileRecord, tensors: [PlannedTensor]) throws {
        let path = OutputFolder(folder).path(record.name)
        if let problem = record.presenceProblem(in: OutputFolder(folder)) {
            throw ManifestError.shardDiffers(file: path, tensor: nil, message: problem)
        }
        let c: Checkpoint
        do {
            c = try checkpoint(record.name)
        } catch {
            throw ManifestError.shardDiffers(file: path, tensor: nil, message: "cannot be read as a rank file: \(error)")
        }
        let file = try OpenFile.forReading(try OutputFolder(folder).inside(record.name))
        var hasher = SHA256()
        var tensorHashes: [String: String] = [:]
        let ranges = c.tensors.compactMap { t in t.offset.map { (t.name, $0..<$0 + t.byteCount) } }.sorted {
            $0.1.lowerBound < $1.1.lowerBound
        }
        // The tensors are disjoint byte ranges in offset order: each is hashed as the blocks pass it.
        var current = 0
        var tensorHasher = SHA256()
        func finishTensor() {
            tensorHashes[ranges[current].0] = tensorHasher.finalize().hexString
            tensorHasher = SHA256()
            current += 1
        }
        var buffer = [UInt8](repeating: 0, count: 4 << 20)
        var position = 0
        let size = try file.size()
        while position < size {
            let n = min(buffer.count, size - position)
            try buffer.withUnsafeMutableBytes { b in
                try file.read(into: UnsafeMutableRawBufferPointer(rebasing: b[0..<n]), at: position)
                hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: b[0..<n]))
                while current < ranges.count {
                    let range = ranges[current].1
                    let (lo, hi) = (max(position, range.lowerBound), min(position + n, range.upperBound))
                    if lo < hi { tensorHasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: b[lo - position..<hi - position])) }
                    guard range.upperBound <= position + n else { break }
                    finishTensor()
                }
            }
            position += n
        }
        while current < ranges.count { finishTensor() }
        for t in c.tensors where t.offset == nil { tensorHashes[t.name] = try sha256(of: TensorKey(file: record.name, name: t.name)) }
        let fileDiffers = record.sha256.map { $0 != hasher.finalize().hexString } ?? false
        for t in tensors {
            guard let info = try? c.tensor(t.name), info.dtype == t.dtype, info.shape == t.shape else {
                try check(t, record: nil, hash: false)
                continue
            }
            if let expected = record.tensorSHA256?[t.name], let digest = tensorHashes[t.name], digest != expected {
                throw ManifestError.shardDiffers(
                    file: path, tensor: t.name, message: "its data has SHA-256 \(digest), the manifest says \(expected) (altered)")
            }
        }
        if fileDiffers {
            throw ManifestError.shardDiffers(
                file: path, tensor: nil,
                message: "has SHA-256 \(hasher.finalize().hexString), the manifest says \(record.sha256!) (altered)")
        }
    }

    /// Checks a rank's tensor in its file against the manifest before it is read: the header's dtype
    /// and shape, and with `hash` its SHA-256 where `record` has one. A difference throws
    /// ``ManifestError/shardDiffers(file:tensor:message:)`` (exit 1).
    package func check(_ t: PlannedTensor, record: Manifest.FileRecord?, hash: Bool) throws {
        func differs(_ message: String) -> ManifestError {
            .shardDiffers(file: OutputFolder(folder).path(t.file), tensor: t.name, message: message)
        }
        let info: TensorInfo
        do {
            info = try tensor(file: t.file, name: t.name)
        } catch {
            throw differs("cannot be read: \(error)")
        }
        guard info.dtype == t.dtype, info.shape == t.shape else {
            throw differs("the file holds \(info.dtype.rawValue) \(info.shape), the manifest says \(t.dtype.rawValue) \(t.shape)")
        }
        guard hash, let expected = record?.tensorSHA256?[t.name] else { return }
        let digest = try sha256(of: TensorKey(file: t.file, name: t.name))
        guard digest == expected else { throw differs("its data has SHA-256 \(digest), the manifest says \(expected) (altered)") }
    }

    /// ``check(_:record:hash:)`` with the hash, once per tensor however often it is read (a reader
    /// of some tensors, such as `forward-check`, checks exactly those it reads; a tensor read in part
    /// is hashed whole).
    package func checkOnce(_ t: PlannedTensor, record: Manifest.FileRecord?) throws {
        let key = TensorKey(file: t.file, name: t.name)
        guard !checked.withLock({ $0.tensors.contains(key) }) else { return }
        try check(t, record: record, hash: true)
        let hashed = record?.tensorSHA256?[t.name] != nil
        checked.withLock {
            guard $0.tensors.insert(key).inserted, hashed else { return }
            $0.hashed += 1
            $0.bytesHashed += t.byteCount
        }
    }

    /// How many tensors ``checkOnce(_:record:)`` checked against a recorded hash, and their bytes.
    package var hashChecks: (tensors: Int, bytes: Int) { checked.withLock { ($0.hashed, $0.bytesHashed) } }
}
