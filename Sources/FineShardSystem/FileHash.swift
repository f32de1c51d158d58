import Crypto

/// SHA-256 of a whole file, streamed through a bounded buffer: the one way fineshard hashes a
/// file (output files when they are checked, source files while they are sharded, `verify`).
package func sha256(of file: OpenFile, bufferSize: Int = 4 << 20) throws -> String {
    var hasher = SHA256()
    let size = try file.size()
    var buffer = [UInt8](repeating: 0, count: min(bufferSize, max(size, 1)))
    var offset = 0
    while offset < size {
        let n = min(buffer.count, size - offset)
        try buffer.withUnsafeMutableBytes { b in
            try file.read(into: UnsafeMutableRawBufferPointer(rebasing: b[0..<n]), at: offset)
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: b[0..<n]))
        }
        offset += n
    }
    return hasher.finalize().hexString
}

/// SHA-256 of bytes in memory (small files: journal entries, copied non-weight files).
package func sha256(of bytes: [UInt8]) -> String { SHA256.hash(data: bytes).hexString }

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
