import FineShard
import Foundation

/// A mistake about which folder is which, found before anything is read or written (issue 19):
/// exit 2, naming the path.
struct FolderError: FineShardError {
    let path: String
    let option: String?
    let message: String

    init(path: String, option: String? = nil, _ message: String) {
        self.path = path
        self.option = option
        self.message = message
    }

    var exitCode: Int32 { 2 }
    var description: String { option.map { "\($0): \(path): \(message)" } ?? "\(path): \(message)" }
}

/// What a path given as a checkpoint or an output folder turns out to be.
enum FolderKind: Equatable {
    /// A folder with `manifest.json` or partial manifests: the OUT of `fineshard shard`.
    case output
    /// A folder with rank files or fineshard's journal but no manifest: a run that did not finish.
    case unfinished
    /// Anything else (a checkpoint, an empty or missing folder, a file).
    case other

    static func of(_ path: String) -> FolderKind {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            return .other
        }
        let names = OutputFolder(path).contents()
        if names.contains(where: OutputFolder.isManifestName) { return .output }
        let unfinished = names.contains {
            OutputFolder.isJournal($0) || OutputFolder.isTemporary($0) || $0.hasPrefix("model-rank-")
        }
        return unfinished ? .unfinished : .other
    }

    /// Refuses a fineshard output folder where a dense checkpoint is expected, saying what it is.
    static func refuseAsCheckpoint(_ path: String, option: String? = nil, hint: String) throws {
        switch of(path) {
        case .output:
            throw FolderError(
                path: path, option: option,
                "is a fineshard output folder (it has a manifest), not a dense checkpoint; \(hint)")
        case .unfinished:
            throw FolderError(
                path: path, option: option,
                "holds rank files of fineshard but no manifest, not a dense checkpoint: an unfinished run? finish it with `fineshard shard SOURCE -o \(path) --resume` (same options)"
            )
        case .other: break
        }
    }
}

/// `path` made absolute, `.`/`..` removed and symbolic links of its existing part resolved, so two
/// spellings of one folder compare equal.
func canonicalPath(_ path: String) -> String {
    var url = URL(fileURLWithPath: path).standardizedFileURL
    var missing: [String] = []
    while !FileManager.default.fileExists(atPath: url.path), url.path != "/" {
        missing.insert(url.lastPathComponent, at: 0)
        url.deleteLastPathComponent()
    }
    var resolved = url.resolvingSymlinksInPath()
    for component in missing { resolved.appendPathComponent(component) }
    return resolved.path
}

/// True when `inner` is `outer` or lies inside it (both canonical).
func isSameOrInside(_ inner: String, _ outer: String) -> Bool {
    inner == outer || inner.hasPrefix(outer.hasSuffix("/") ? outer : outer + "/")
}

/// `shard`: OUT must not be the source, lie inside it or contain it (docs/SPEC.md §2).
func refuseShardOutput(source: String, output: String) throws {
    let src = canonicalPath(source)
    let out = canonicalPath(output)
    if src == out {
        throw FolderError(
            path: output, option: "--output",
            "is the source checkpoint itself; the rank files would be written next to its tensors and the source would no longer open as a checkpoint. Choose another folder, e.g. -o \(output)-shards"
        )
    }
    if isSameOrInside(out, src) {
        throw FolderError(
            path: output, option: "--output",
            "lies inside the source checkpoint \(source); the source would no longer open as a checkpoint. Choose a folder outside it")
    }
    if isSameOrInside(src, out) {
        throw FolderError(
            path: output, option: "--output",
            "contains the source checkpoint \(source); shard into a folder of its own that does not hold the source")
    }
}

/// `merge`: the dense output must not be the shard folder, lie inside it, or be a non-empty folder
/// (unless `force`); checked before anything is read.
func refuseMergeOutput(shards: String, output: String, force: Bool) throws {
    let input = canonicalPath(shards)
    let out = canonicalPath(output)
    if input == out {
        throw FolderError(
            path: output, option: "--output",
            "is the shard folder being merged; the dense checkpoint would land in it and `verify` would then fail. Choose another folder, e.g. -o \(output)-merged"
        )
    }
    if isSameOrInside(out, input) {
        throw FolderError(
            path: output, option: "--output", "lies inside the shard folder \(shards); choose a folder outside it")
    }
    if !force, let names = try? FileManager.default.contentsOfDirectory(atPath: output), !names.isEmpty {
        throw FolderError(
            path: output, option: "--output",
            "is not empty (\(names.count) entr\(names.count == 1 ? "y" : "ies"), e.g. \(names.sorted()[0])); choose an empty or new folder, or pass --force to write into it"
        )
    }
}

/// Where an output folder is expected (`verify OUT`, `forward-check OUT`): a folder without any
/// manifest is named as what it is — an unfinished run, or not a fineshard output at all.
func requireOutputFolder(_ path: String, command: String) throws {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return }
    switch FolderKind.of(path) {
    case .output: return
    case .unfinished:
        throw FolderError(
            path: path,
            "has rank files but no manifest.json or manifest.ranks-*.json: an unfinished run? finish it with `fineshard shard SOURCE -o \(path) --resume` (same options), then \(command) again"
        )
    case .other:
        let looksDense = (try? Checkpoint.open(path)) != nil
        throw FolderError(
            path: path,
            looksDense
                ? "is a dense checkpoint, not a fineshard output folder (it has no manifest.json); did you swap OUT and --source? usage: fineshard \(command) OUT --source CHECKPOINT"
                : "is not a fineshard output folder: it has no manifest.json or manifest.ranks-*.json")
    }
}

/// An error about an input whose message did not name it: the path first, then the message.
struct InputError: FineShardError {
    let path: String
    let underlying: any FineShardError

    var exitCode: Int32 { underlying.exitCode }
    var description: String {
        // A message that starts with the file's name relative to its folder gets the whole path instead.
        let text = underlying.description
        let name = (path as NSString).lastPathComponent
        if text.hasPrefix(name + ": ") { return path + text.dropFirst(name.count) }
        return "\(path): \(text)"
    }
}

/// Runs `body`, which reads the input at `path`; an error whose message does not name `path`
/// (a model that is not recognized, a shape that does not fit) gets it in front.
func namingInput<T>(_ path: String, _ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as any FineShardError {
        if error is FolderError || error.description.contains(path) || error.exitCode != 2 { throw error }
        if case PlanError.badOption = error { throw error }
        throw InputError(path: path, underlying: error)
    }
}
