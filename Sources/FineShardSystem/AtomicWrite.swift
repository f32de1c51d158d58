#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The temporary name an output file has until it is complete. The process id keeps processes
/// that write the same file at once (the non-weight files every `--ranks` task copies) apart.
public func temporaryPath(for path: String) -> String { "\(path).\(temporaryTag)\(TemporaryFiles.suffix)" }

private let temporaryTag = String(getpid())

extension TemporaryFiles {
    /// The suffix every temporary file fineshard writes ends with.
    public static let suffix = ".fineshard-tmp"
}

/// Writes `bytes` to `path` through a temporary name and a rename; `durable` adds an fsync before
/// the rename (the manifest). Journal entries and copied files skip it: the executor syncs the
/// output's filesystem once before it writes the manifest, and `--resume` re-hashes what a
/// journal entry claims.
package func writeAtomically(_ bytes: [UInt8], to path: String, durable: Bool = false) throws {
    let temp = temporaryPath(for: path)
    TemporaryFiles.shared.register(temp)
    defer { TemporaryFiles.shared.unregister(temp) }
    do {
        let file = try OpenFile.forWriting(temp)
        try bytes.withUnsafeBytes { try file.write($0, at: 0) }
        if durable { try file.sync() }
    } catch {
        unlink(temp)
        throw error
    }
    do {
        try moveIntoPlace(temp, path)
    } catch {
        unlink(temp)
        throw error
    }
}

/// rename(2) of a finished temporary file to its final name (replacing what was there).
package func moveIntoPlace(_ temp: String, _ path: String) throws {
    guard rename(temp, path) == 0 else {
        throw SystemError.io(file: path, operation: "rename", reason: OpenFile.errorText(errno))
    }
}

/// unlink(2), ignoring a file that is already gone.
package func removeFile(_ path: String) { unlink(path) }
