import CLinux

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A byte range of a file mapped read-only (mmap(2), `MAP_POPULATE`) and unmapped in `deinit`:
/// `shard` reads source tensors through these instead of pread(2) into a buffer, which saves the
/// copy out of the page cache and one system call per strided run. Owns its mapping.
///
/// A file that shrinks under a mapping would raise SIGBUS when a page past its new end is touched;
/// the guard in `CLinux` (installed with the first mapping) puts a zero page there instead, and
/// ``checkIntact()`` reports the file as changed, so the run fails with exit 3, never a crash.
/// Mapping counts nothing in ``IOStatistics``: the reader counts the bytes it takes.
public final class MappedRegion: @unchecked Sendable {
    /// The requested bytes.
    public let bytes: UnsafeRawBufferPointer
    public let path: String
    private let base: UnsafeMutableRawPointer?
    private let length: Int
    private let slot: Int32

    private static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Maps `count` bytes at `offset` of `file`. A range past the file's current end means the
    /// file shrank since its header was read.
    init(file: OpenFile, offset: Int, count: Int) throws {
        path = file.path
        guard count > 0 else {
            (bytes, base, length, slot) = (UnsafeRawBufferPointer(start: nil, count: 0), nil, 0, -1)
            return
        }
        let size = try file.size()
        guard offset + count <= size else {
            throw SystemError.sourceChanged(file: file.path, message: "ended at byte \(size), expected \(offset + count)")
        }
        fs_guard_install()
        let start = offset / Self.pageSize * Self.pageSize
        length = offset + count - start
        guard let mapped = mmap(nil, length, PROT_READ, MAP_SHARED | MAP_POPULATE, file.fd, off_t(start)), mapped != fs_map_failed()
        else {
            throw SystemError.io(file: file.path, operation: "mmap of \(count) bytes at \(offset)", reason: OpenFile.errorText(errno))
        }
        base = mapped
        slot = fs_guard_register(mapped, length)
        bytes = UnsafeRawBufferPointer(start: mapped + (offset - start), count: count)
    }

    deinit {
        guard let base else { return }
        if slot >= 0 { _ = fs_guard_unregister(slot) }
        munmap(base, length)
    }

    /// Throws ``SystemError/sourceChanged(file:message:)`` if a page of the range was past the end of
    /// the file when it was read (the bytes read there were zeros, not the file's).
    public func checkIntact() throws {
        if slot >= 0, fs_guard_was_hit(slot) != 0 {
            throw SystemError.sourceChanged(file: path, message: "it shrank while it was being read")
        }
    }
}

extension OpenFile {
    /// Maps `count` bytes at `offset` (see ``MappedRegion``).
    public func map(offset: Int, count: Int) throws -> MappedRegion { try MappedRegion(file: self, offset: offset, count: count) }
}
