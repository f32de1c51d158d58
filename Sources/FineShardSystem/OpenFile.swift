import CLinux
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Counters of the bytes fineshard moves, process-wide: tests use them to show that a cut reads
/// only what it needs, and `--json` summaries report them.
public enum IOStatistics {
    package static let read = Atomic<Int>(0)
    package static let written = Atomic<Int>(0)
    public static var bytesRead: Int { read.load(ordering: .relaxed) }
    public static var bytesWritten: Int { written.load(ordering: .relaxed) }
}

/// An open file descriptor. Owns the descriptor and closes it in `deinit`; every read and write
/// of file contents in fineshard goes through this type (pread(2), pwrite(2)),
/// which is where faults are injected in tests.
public final class OpenFile: @unchecked Sendable {
    public let path: String
    package let fd: Int32

    private init(path: String, fd: Int32) {
        self.path = path
        self.fd = fd
    }

    deinit { close(fd) }

    package static func errorText(_ code: Int32) -> String { String(cString: strerror(code)) }

    /// open(2) for reading a regular file. A missing, unreadable or special file (a folder, a
    /// FIFO, a device) is bad input (exit 2); `O_NONBLOCK` keeps a FIFO from blocking the open.
    public static func forReading(_ path: String) throws -> OpenFile {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw SystemError.unreadable(file: path, reason: errorText(errno)) }
        let file = OpenFile(path: path, fd: fd)
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw SystemError.unreadable(file: path, reason: errorText(errno)) }
        switch st.st_mode & S_IFMT {
        case S_IFREG: return file
        case S_IFDIR: throw SystemError.unreadable(file: path, reason: "is a folder, not a file")
        default: throw SystemError.unreadable(file: path, reason: "is not a regular file (a FIFO, socket or device)")
        }
    }

    /// open(2) of a folder, to fsync(2) it after a rename so the new name is durable.
    public static func folder(_ path: String) throws -> OpenFile {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_DIRECTORY)
        guard fd >= 0 else { throw SystemError.io(file: path, operation: "open folder", reason: errorText(errno)) }
        return OpenFile(path: path, fd: fd)
    }

    /// open(2) with `O_CREAT | O_TRUNC` for writing a new file (a temporary name).
    public static func forWriting(_ path: String, mode: mode_t = 0o644) throws -> OpenFile {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw SystemError.io(file: path, operation: "create", reason: errorText(errno)) }
        return OpenFile(path: path, fd: fd)
    }

    /// What identifies a file's contents cheaply: size, modification time and inode (fstat(2)).
    public struct Identity: Sendable, Hashable {
        public var size: Int
        public var modified: Int
        public var inode: UInt64
    }

    public func identity() throws -> Identity {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw SystemError.io(file: path, operation: "stat", reason: Self.errorText(errno)) }
        return Identity(
            size: Int(st.st_size), modified: Int(st.st_mtim.tv_sec) * 1_000_000_000 + Int(st.st_mtim.tv_nsec), inode: UInt64(st.st_ino))
    }

    /// stat(2) of a path (following links), for noticing that a file was replaced.
    public static func identity(of path: String) throws -> Identity {
        var st = stat()
        guard stat(path, &st) == 0 else { throw SystemError.sourceChanged(file: path, message: "it is gone (\(errorText(errno)))") }
        return Identity(
            size: Int(st.st_size), modified: Int(st.st_mtim.tv_sec) * 1_000_000_000 + Int(st.st_mtim.tv_nsec), inode: UInt64(st.st_ino))
    }

    /// fstat(2): the file's size in bytes.
    public func size() throws -> Int {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw SystemError.io(file: path, operation: "stat", reason: Self.errorText(errno)) }
        return Int(st.st_size)
    }

    /// pread(2) until `buffer` is full. Reaching the end of the file first means the file is
    /// shorter than its header promised, or shrank while we ran.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError.io(file: path, operation: "read of \(buffer.count) bytes at \(offset)", reason: Self.errorText(errno))
            }
            if n == 0 {
                throw SystemError.sourceChanged(
                    file: path, message: "ended at byte \(offset + done), expected \(offset + buffer.count)")
            }
            done += n
        }
        IOStatistics.read.add(buffer.count, ordering: .relaxed)
    }

    /// Reads `count` bytes at `offset` into a new array (headers and other small reads only).
    public func read(count: Int, at offset: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { try read(into: $0, at: offset) }
        return bytes
    }

    /// pwrite(2) of the whole buffer.
    public func write(_ buffer: UnsafeRawBufferPointer, at offset: Int) throws {
        var done = 0
        while done < buffer.count {
            try FaultInjector.shared.check(.write, path: path)
            let n = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError.io(file: path, operation: "write", reason: Self.errorText(errno))
            }
            done += n
        }
        IOStatistics.written.add(buffer.count, ordering: .relaxed)
    }

    /// syncfs(2) of the filesystem that holds `path`: every dirty page of it reaches the disk.
    public static func syncFilesystem(holding path: String) throws {
        let folder = try OpenFile.folder(path)
        guard fs_syncfs(folder.fd) == 0 else {
            throw SystemError.io(file: path, operation: "syncfs", reason: errorText(errno))
        }
    }

    /// fsync(2).
    public func sync() throws {
        guard fsync(fd) == 0 else { throw SystemError.io(file: path, operation: "fsync", reason: Self.errorText(errno)) }
    }
}
