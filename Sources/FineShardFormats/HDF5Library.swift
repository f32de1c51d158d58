import CHDF5

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// fineshard's one door into libhdf5.
///
/// Debian's libhdf5 is built thread-safe behind a global lock of its own, but a serial build is
/// not, and even the thread-safe one keeps error stacks and the automatic error printing per
/// thread; so every HDF5 call in fineshard runs inside ``withLock(_:)``, which also silences
/// libhdf5's printing on the calling thread and registers the zstd filter once. Failures go
/// through ``check(_:file:_:)``, which turns libhdf5's own error stack (`H5Ewalk2`) into a
/// ``CheckpointError/hdf5(file:message:stack:)``.
enum HDF5Library {
    /// A recursive lock, so that a handle's `deinit` may close its id while the lock is held.
    private final class RecursiveLock: @unchecked Sendable {
        private let mutex: UnsafeMutablePointer<pthread_mutex_t>
        /// Guarded by `mutex`.
        var zstdRegistered = false

        init() {
            mutex = .allocate(capacity: 1)
            var attributes = pthread_mutexattr_t()
            pthread_mutexattr_init(&attributes)
            pthread_mutexattr_settype(&attributes, Int32(PTHREAD_MUTEX_RECURSIVE))
            pthread_mutex_init(mutex, &attributes)
            pthread_mutexattr_destroy(&attributes)
        }

        func lock() { pthread_mutex_lock(mutex) }
        func unlock() { pthread_mutex_unlock(mutex) }
    }

    private static let lock = RecursiveLock()

    /// Runs `body` holding the process-wide HDF5 lock. Reentrant.
    @discardableResult
    static func withLock<R: ~Copyable>(_ body: () throws -> R) throws -> R {
        lock.lock()
        defer { lock.unlock() }
        // Per thread in a thread-safe build, so set on every entry: libhdf5 must not print.
        H5Eset_auto2(fs_H5E_DEFAULT(), nil, nil)
        if !lock.zstdRegistered {
            if fs_register_zstd() < 0 {
                throw failure(file: "libhdf5", "cannot register the zstd filter (id 32015)")
            }
            lock.zstdRegistered = true
        }
        return try body()
    }

    /// Returns `status` if it is not negative; otherwise throws ``failure(file:_:)``.
    /// Works for `herr_t`, `hid_t`, `htri_t` and `ssize_t` returns alike.
    @discardableResult
    static func check<T: BinaryInteger>(_ status: T, file: String, _ message: @autoclosure () -> String) throws -> T {
        if status < 0 { throw failure(file: file, message()) }
        return status
    }

    /// Tells the zstd filter how many bytes every chunk of the next read must decode to (0:
    /// unknown). Lives here because the filter's state is per Swift object file (see shim.h).
    static func expectChunkBytes(_ bytes: Int) { fs_zstd_expect(bytes) }

    /// Why the zstd filter failed since the last ``expectChunkBytes(_:)``; empty if it did not.
    static func zstdFailure() -> String { String(cString: fs_zstd_last_error()) }

    /// The error for a failed HDF5 call: `message` (with the zstd filter's reason, if it failed)
    /// plus libhdf5's error stack of this thread; both are then cleared. Call it right after the
    /// failing call, holding the lock.
    static func failure(file: String, _ message: String) -> CheckpointError {
        var lines: [String] = []
        let walker: H5E_walk2_t = { n, error, data in
            guard let error, let data else { return 0 }
            let major = HDF5Library.errorMessage(error.pointee.maj_num)
            let minor = HDF5Library.errorMessage(error.pointee.min_num)
            let function = error.pointee.func_name.map { String(cString: $0) } ?? "?"
            let description = error.pointee.desc.map { String(cString: $0) } ?? ""
            data.assumingMemoryBound(to: [String].self).pointee.append(
                "#\(n) \(function)(): \(description) [\(major): \(minor)]")
            return 0
        }
        withUnsafeMutablePointer(to: &lines) { pointer in
            _ = H5Ewalk2(fs_H5E_DEFAULT(), H5E_WALK_DOWNWARD, walker, UnsafeMutableRawPointer(pointer))
        }
        H5Eclear2(fs_H5E_DEFAULT())
        let zstd = zstdFailure()
        fs_zstd_error_slot()[0] = 0
        return .hdf5(file: file, message: zstd.isEmpty ? message : "\(message): \(zstd)", stack: lines.joined(separator: "; "))
    }

    private static func errorMessage(_ id: hid_t) -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        let length = H5Eget_msg(id, nil, &buffer, buffer.count)
        guard length > 0 else { return "?" }
        return String(
            decoding: buffer.prefix(min(Int(length), buffer.count - 1)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// An HDF5 id this process owns (file, group, dataset, dataspace, datatype, attribute or property
/// list). Owns one reference and drops it in `deinit` under the HDF5 lock, so an early `throw`
/// never leaks an id. Never wrap a predefined id (`H5T_NATIVE_*`): they are not ours to close.
struct HDF5ID: ~Copyable {
    let raw: hid_t

    /// Takes ownership of `raw`, throwing libhdf5's diagnosis if the call that made it failed.
    init(_ raw: hid_t, file: String, _ message: @autoclosure () -> String) throws {
        try HDF5Library.check(raw, file: file, message())
        self.raw = raw
    }

    /// Closes the id now with `closer` (e.g. `H5Fclose`, where a file's last writes can fail)
    /// and reports failure.
    consuming func close(
        with closer: (hid_t) -> Int32 = H5Idec_ref, file: String, _ message: @autoclosure () -> String
    ) throws {
        let raw = self.raw
        discard self
        try HDF5Library.withLock {
            try HDF5Library.check(closer(raw), file: file, message())
        }
    }

    deinit {
        let raw = self.raw
        _ = try? HDF5Library.withLock { H5Idec_ref(raw) }
    }
}
