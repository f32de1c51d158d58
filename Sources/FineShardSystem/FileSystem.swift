#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Questions about folders that the executor asks before it writes.
package enum FileSystem {
    /// access(2) with `W_OK`: nil when `path` is writable, otherwise the C library's reason.
    package static func whyNotWritable(_ path: String) -> String? {
        access(path, W_OK) == 0 ? nil : OpenFile.errorText(errno)
    }

    /// statvfs(2): the bytes an unprivileged process may still write to the filesystem holding
    /// `path`, or nil when it cannot be asked.
    package static func availableBytes(at path: String) -> Int? {
        var st = statvfs()
        guard statvfs(path, &st) == 0 else { return nil }
        return Int(st.f_bavail) * Int(st.f_frsize)
    }
}
