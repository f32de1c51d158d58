import FineShardSystem
import Foundation
import Synchronization

extension Checkpoint {
    /// The index file of a sharded safetensors checkpoint (Hugging Face convention).
    public static let indexFileName = "model.safetensors.index.json"

    /// Opens a checkpoint: a `.safetensors` or HDF5 file, a folder of them, or a folder with
    /// `model.safetensors.index.json`. Reads and validates headers only.
    public static func open(_ path: String, maxTensors: Int = SafetensorsHeader.defaultMaxTensors) throws -> Checkpoint {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw CheckpointError.unreadable(
                file: path, reason: "no such file or folder (give a .safetensors or HDF5 file, or the folder that holds the checkpoint)")
        }
        if !isDirectory.boolValue {
            let root = (path as NSString).deletingLastPathComponent
            let name = (path as NSString).lastPathComponent
            let format = try sniff(path)
            return try open(root: root.isEmpty ? "." : root, files: [name], format: format, maxTensors: maxTensors)
        }
        let entries = try FileManager.default.contentsOfDirectory(atPath: path).sorted()
        if entries.contains(indexFileName) {
            return try openIndexed(root: path, maxTensors: maxTensors)
        }
        let safetensors = entries.filter { $0.hasSuffix(".safetensors") }
        if !safetensors.isEmpty { return try open(root: path, files: safetensors, format: .safetensors, maxTensors: maxTensors) }
        let hdf5 = entries.filter { $0.hasSuffix(".h5") || $0.hasSuffix(".hdf5") }
        if !hdf5.isEmpty { return try open(root: path, files: hdf5, format: .hdf5, maxTensors: maxTensors) }
        throw CheckpointError.notACheckpoint(
            path: path, reason: "the folder has no \(indexFileName), no .safetensors and no .h5/.hdf5 files")
    }

    /// Opens one tensor file alone, without its folder's `config.json` and other files (a rank file
    /// of an output folder, whose neighbours are not its to read).
    package static func openFile(_ path: String) throws -> Checkpoint {
        let root = (path as NSString).deletingLastPathComponent
        return try open(
            root: root.isEmpty ? "." : root, files: [(path as NSString).lastPathComponent], format: try sniff(path),
            maxTensors: SafetensorsHeader.defaultMaxTensors, withFolder: false)
    }

    /// Tells safetensors from HDF5 by the file's first bytes (HDF5's 8-byte signature).
    static func sniff(_ path: String) throws -> CheckpointFormat {
        let file = try OpenFile.forReading(path)
        let size = try file.size()
        if size >= 8, try file.read(count: 8, at: 0) == [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A] { return .hdf5 }
        if path.hasSuffix(".h5") || path.hasSuffix(".hdf5") { return .hdf5 }
        return .safetensors
    }

    /// An opened safetensors file and its header, or why it could not be read.
    typealias ParsedHeader = Result<(OpenFile, SafetensorsHeader), any Error>

    /// Opens and parses the headers of `files`, in parallel (they are independent), one result per
    /// file; `alongside` runs first, as one more task among them.
    static func readHeaders(root: String, files: [String], maxTensors: Int, alongside: @Sendable () -> Void = {}) -> [ParsedHeader] {
        let results = Mutex<[Int: ParsedHeader]>([:])
        DispatchQueue.concurrentPerform(iterations: files.count + 1) { k in
            guard k > 0 else { return alongside() }
            let result = Result {
                let file = try OpenFile.forReading((root as NSString).appendingPathComponent(files[k - 1]))
                return (file, try SafetensorsHeader.read(file, name: files[k - 1], maxTensors: maxTensors))
            }
            results.withLock { $0[k - 1] = result }
        }
        let parsed = results.withLock { $0 }
        return files.indices.map { parsed[$0]! }
    }

    /// `headers`: those of `files` when already read (safetensors).
    static func open(
        root: String, files: [String], format: CheckpointFormat, maxTensors: Int, withFolder: Bool = true, headers: [ParsedHeader]? = nil
    ) throws -> Checkpoint {
        var tensors: [TensorInfo] = []
        var readers: [String: any TensorStore] = [:]
        var infos: [File] = []
        if format == .safetensors {
            // The first error in file order is the one reported.
            let parsed = headers ?? readHeaders(root: root, files: files, maxTensors: maxTensors)
            for (i, name) in files.enumerated() {
                let (file, header) = try parsed[i].get()
                tensors += header.tensors
                readers[name] = SafetensorsStore(file: file)
                infos.append(File(name: name, bytes: try file.size(), dataStart: header.dataStart))
            }
            return try Checkpoint(
                root: root, format: format, files: infos, tensors: tensors, readers: readers, weightNames: Set(files),
                withFolder: withFolder)
        }
        for name in files {
            let full = (root as NSString).appendingPathComponent(name)
            let reader = try HDF5Reader(path: full, name: name)
            tensors += reader.tensors
            readers[name] = reader
            infos.append(File(name: name, bytes: try OpenFile.forReading(full).size(), dataStart: nil))
        }
        return try Checkpoint(
            root: root, format: format, files: infos, tensors: tensors, readers: readers, weightNames: Set(files), withFolder: withFolder)
    }

    /// A sharded safetensors checkpoint: the index's `weight_map` names the file of every tensor.
    /// Shard names must stay inside the folder as written (no absolute path, no `..`); the file
    /// itself may be a symbolic link anywhere (a Hugging Face cache snapshot).
    static func openIndexed(root: String, maxTensors: Int) throws -> Checkpoint {
        let indexPath = (root as NSString).appendingPathComponent(indexFileName)
        let data = try OpenFile.forReading(indexPath)
        let bytes = try data.read(count: try data.size(), at: 0)
        // The index names the shard files, in practice the folder's .safetensors files: their headers
        // are read while the index is parsed (those of files it does not name are dropped).
        let guessed = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).filter { $0.hasSuffix(".safetensors") }.sorted()
        let index = Mutex<Result<[(String, String)], any Error>?>(nil)
        let early = readHeaders(root: root, files: guessed, maxTensors: maxTensors) {
            let result = Result { try IndexParser.weightMap(bytes, fileName: indexFileName) }
            index.withLock { $0 = result }
        }
        let parsed = try index.withLock { $0 }!.get()
        guard !parsed.isEmpty else { throw CheckpointError.invalidIndex(file: indexFileName, message: "the weight_map names no tensors") }
        var files: [String] = []
        var weightMap: [(String, String)] = []
        var normalized: [String: String] = [:]
        weightMap.reserveCapacity(parsed.count)
        var previous: (raw: String, file: String)?
        for (tensor, raw) in parsed {
            // Neighbouring entries usually name one file: compare before hashing.
            if let previous, previous.raw == raw {
                weightMap.append((tensor, previous.file))
                continue
            }
            if let file = normalized[raw] {
                weightMap.append((tensor, file))
                previous = (raw, file)
                continue
            }
            if let problem = RelativePath.problem(raw) {
                throw CheckpointError.invalidIndex(
                    file: indexFileName,
                    message:
                        "tensor '\(tensor)' is mapped to '\(raw)', which is not a file inside the checkpoint folder: it \(problem) (absolute paths and '..' are refused)"
                )
            }
            // "./a.safetensors" and "a.safetensors" name one file.
            let file = RelativePath.normalized(raw)
            normalized[raw] = file
            previous = (raw, file)
            weightMap.append((tensor, file))
            if !files.contains(file) { files.append(file) }
        }
        files.sort()
        for file in files where !FileManager.default.fileExists(atPath: (root as NSString).appendingPathComponent(file)) {
            let tensor = weightMap.first { $0.1 == file }!.0
            throw CheckpointError.invalidIndex(file: indexFileName, message: "shard file '\(file)' (of tensor '\(tensor)') does not exist")
        }
        let known = Dictionary(uniqueKeysWithValues: zip(guessed, early))
        let others = files.filter { known[$0] == nil }
        let late = Dictionary(uniqueKeysWithValues: zip(others, readHeaders(root: root, files: others, maxTensors: maxTensors)))
        let checkpoint = try open(
            root: root, files: files, format: .safetensors, maxTensors: maxTensors, headers: files.map { known[$0] ?? late[$0]! })
        let tensors = checkpoint.tensors
        var found: Int?
        for (tensor, file) in weightMap {
            // Entries of one module are listed together: look next to the previous one first.
            found = tensors.index(ofName: tensor, near: found.map { $0 + 1 })
            guard let k = found, tensors[k].file == file else {
                throw CheckpointError.invalidIndex(
                    file: indexFileName, message: "tensor '\(tensor)' is mapped to '\(file)', which does not contain it")
            }
        }
        // Names in the map are distinct and all found, so equal counts mean nothing is unlisted.
        if checkpoint.tensors.count != weightMap.count,
            let extra = checkpoint.tensors.first(where: { [mapped = Set(weightMap.map(\.0))] in !mapped.contains($0.name) })
        {
            throw CheckpointError.invalidIndex(
                file: indexFileName, message: "tensor '\(extra.name)' is in '\(extra.file)' but the index does not list it")
        }
        return checkpoint
    }
}

/// Reads the `weight_map` of a `model.safetensors.index.json`, refusing a tensor listed twice
/// (a JSON decoder would silently keep the last mapping).
enum IndexParser {
    static func weightMap(_ bytes: [UInt8], fileName: String) throws -> [(String, String)] {
        // Decoding would turn invalid bytes into U+FFFD and make distinct names collide.
        guard String(validating: bytes, as: UTF8.self) != nil else {
            throw CheckpointError.invalidIndex(file: fileName, message: "the \(bytes.count)-byte index is not valid UTF-8")
        }
        var p = HeaderJSONParser(bytes: bytes, fileName: fileName, maxTensors: .max)
        do {
            return try p.parseIndex()
        } catch CheckpointError.invalidHeader(_, _, let message) {
            throw CheckpointError.invalidIndex(file: fileName, message: message)
        }
    }
}

extension HeaderJSONParser {
    /// The index grammar: an object whose `weight_map` is an object of strings; other members
    /// (`metadata`) are skipped, to a bounded depth.
    mutating func parseIndex() throws -> [(String, String)] {
        guard take(UInt8(ascii: "{")) else { throw fail(.notObject, "the index is not a JSON object") }
        var map: [(String, String)]?
        var keys = Set<String>()
        if !take(UInt8(ascii: "}")) {
            repeat {
                skipSpace()
                let key = try parseString()
                try expect(UInt8(ascii: ":"), "':'")
                guard keys.insert(key).inserted else { throw fail(.duplicateName, "'\(key)' appears twice") }
                if key == "weight_map" {
                    map = try parseStringMap(key)
                } else {
                    try skipValue(depth: 0)
                }
            } while take(UInt8(ascii: ","))
            try expect(UInt8(ascii: "}"), "',' or '}'")
        }
        skipSpace()
        guard i == bytes.count else { throw fail(.notJSON, "unexpected bytes after the index object at byte \(i)") }
        guard let map else { throw fail(.missingField, "the index has no weight_map") }
        return map
    }

    mutating func parseStringMap(_ what: String) throws -> [(String, String)] {
        guard take(UInt8(ascii: "{")) else { throw fail(.notObject, "\(what) is not an object") }
        var result: [(String, String)] = []
        var seen = Set<String>()
        // Real entries take ~100 bytes; sizing the set once saves rehashing it as it grows.
        seen.reserveCapacity((bytes.count - i) / 64)
        result.reserveCapacity((bytes.count - i) / 64)
        if take(UInt8(ascii: "}")) { return result }
        // The raw bytes of the previous value and its string: values repeat (a few files for many tensors).
        var previous: (Range<Int>, String)?
        repeat {
            skipSpace()
            let key = try parseString()
            try expect(UInt8(ascii: ":"), "':'")
            skipSpace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw fail(.notJSON, "\(what) value of '\(key)' is not a string") }
            let value: String
            if let (range, string) = previous, i + range.count <= bytes.count, bytes[range].elementsEqual(bytes[i..<i + range.count]) {
                value = string
                i += range.count
            } else {
                let start = i
                value = try parseString()
                previous = (start..<i, value)
            }
            guard seen.insert(key).inserted else { throw fail(.duplicateName, "tensor '\(key)' is mapped twice in \(what)") }
            result.append((key, value))
        } while take(UInt8(ascii: ","))
        try expect(UInt8(ascii: "}"), "',' or '}' in \(what)")
        return result
    }

    /// Skips any JSON value, refusing nesting deeper than 64 levels and non-finite numbers.
    mutating func skipValue(depth: Int) throws {
        guard depth < 64 else { throw fail(.notJSON, "JSON nested deeper than 64 levels at byte \(i)") }
        skipSpace()
        guard i < bytes.count else { throw syntax("a value") }
        switch bytes[i] {
        case UInt8(ascii: "\""): _ = try parseString()
        case UInt8(ascii: "{"):
            i += 1
            if take(UInt8(ascii: "}")) { return }
            repeat {
                skipSpace()
                _ = try parseString()
                try expect(UInt8(ascii: ":"), "':'")
                try skipValue(depth: depth + 1)
            } while take(UInt8(ascii: ","))
            try expect(UInt8(ascii: "}"), "',' or '}'")
        case UInt8(ascii: "["):
            i += 1
            if take(UInt8(ascii: "]")) { return }
            repeat { try skipValue(depth: depth + 1) } while take(UInt8(ascii: ","))
            try expect(UInt8(ascii: "]"), "',' or ']'")
        default:
            let start = i
            while i < bytes.count, "-+.eE0123456789truefalsn".utf8.contains(bytes[i]) { i += 1 }
            let token = String(decoding: bytes[start..<i], as: UTF8.self)
            guard ["true", "false", "null"].contains(token) || Double(token)?.isFinite == true else {
                i = start
                throw syntax("a JSON value")
            }
        }
    }
}
