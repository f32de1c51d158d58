import FineShardSystem

/// A validated safetensors header: the file's tensors and where their bytes are.
///
/// The format (huggingface/safetensors README): 8 bytes little-endian header length N, N bytes of
/// UTF-8 JSON mapping tensor names to `{dtype, shape, data_offsets}` (plus an optional
/// `__metadata__` string map), then the data area. Every rule of docs/SPEC.md §3 is checked before a
/// number is trusted; stricter than the reference where it is lax (duplicate names, a tensor cap
/// applied while parsing, unknown fields).
public struct SafetensorsHeader: Sendable {
    /// The reference implementation's cap on the header length.
    public static let maxHeaderLength = 100_000_000
    /// Default cap on the number of tensors: twice the ~210k tensors of the largest real checkpoints.
    public static let defaultMaxTensors = 524_288

    /// Tensors in data-area order; `offset` is absolute in the file.
    public var tensors: [TensorInfo]
    public var metadata: [String: String]?
    /// Absolute offset of the data area (8 + N).
    public var dataStart: Int

    /// Reads and validates the header of the open safetensors `file`.
    /// `name` is how the file is named in errors and in the returned tensors' `file`.
    public static func read(
        _ file: OpenFile, name: String, maxTensors: Int = defaultMaxTensors
    ) throws -> SafetensorsHeader {
        let fileSize = try file.size()
        func fail(_ rule: HeaderRule, _ message: String) -> CheckpointError {
            .invalidHeader(file: name, rule: rule, message: message)
        }
        guard fileSize >= 8 else { throw fail(.fileTooSmall, "the file has \(fileSize) bytes, fewer than the 8 of the header length") }
        let prefix = try file.read(count: 8, at: 0)
        let declared = prefix.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard declared <= UInt64(maxHeaderLength) else {
            throw fail(.headerTooLarge, "header length \(declared) exceeds the limit of \(maxHeaderLength) bytes")
        }
        let headerLength = Int(declared)
        guard 8 + headerLength <= fileSize else {
            throw fail(.headerPastEnd, "header length \(headerLength) runs past the end of the file (\(fileSize) bytes)")
        }
        let bytes = try file.read(count: headerLength, at: 8)
        return try parse(bytes, fileName: name, dataStart: 8 + headerLength, dataSize: fileSize - 8 - headerLength, maxTensors: maxTensors)
    }

    /// Parses and validates header JSON `bytes` for a data area of `dataSize` bytes.
    public static func parse(
        _ bytes: [UInt8], fileName: String, dataStart: Int, dataSize: Int, maxTensors: Int = defaultMaxTensors
    ) throws -> SafetensorsHeader {
        func fail(_ rule: HeaderRule, _ message: String) -> CheckpointError {
            .invalidHeader(file: fileName, rule: rule, message: message)
        }
        guard String(validating: bytes, as: UTF8.self) != nil else {
            throw fail(.notUTF8, "the \(bytes.count)-byte header is not valid UTF-8")
        }
        var parser = HeaderJSONParser(bytes: bytes, fileName: fileName, maxTensors: maxTensors)
        let entries = try parser.parseHeader()

        var tensors: [TensorInfo] = []
        var ranges: [(start: Int, end: Int, name: String)] = []
        tensors.reserveCapacity(entries.tensors.count)
        for entry in entries.tensors {
            guard let dtype = DType(rawValue: entry.dtype) else {
                throw fail(
                    .unknownDType,
                    "tensor '\(entry.name)' has unknown dtype '\(entry.dtype)' (known: \(DType.allCases.map(\.rawValue).joined(separator: ", ")))"
                )
            }
            var elements = 1
            for d in entry.shape {
                let (product, overflow) = elements.multipliedReportingOverflow(by: d)
                guard !overflow else {
                    throw fail(.shapeOverflow, "tensor '\(entry.name)' has shape \(entry.shape) whose element count overflows")
                }
                elements = product
            }
            let (byteCount, overflow) = elements.multipliedReportingOverflow(by: dtype.size)
            guard !overflow else {
                throw fail(.shapeOverflow, "tensor '\(entry.name)' has shape \(entry.shape) × \(dtype.size) bytes, which overflows")
            }
            let (start, end) = (entry.offsets.0, entry.offsets.1)
            guard start <= end else {
                throw fail(.offsetsReversed, "tensor '\(entry.name)' has data_offsets [\(start), \(end)]: the end is before the start")
            }
            guard end - start == byteCount else {
                throw fail(
                    .sizeMismatch,
                    "tensor '\(entry.name)' has shape \(entry.shape) of \(dtype.rawValue) = \(byteCount) bytes but data_offsets [\(start), \(end)] span \(end - start)"
                )
            }
            guard end <= dataSize else {
                throw fail(
                    .outsideDataArea,
                    "tensor '\(entry.name)' has data_offsets [\(start), \(end)] past the end of the \(dataSize)-byte data area")
            }
            tensors.append(TensorInfo(name: entry.name, dtype: dtype, shape: entry.shape, file: fileName, offset: dataStart + start))
            ranges.append((start, end, entry.name))
        }
        // Contiguity: sorted by offsets, every tensor starts where the previous one ended.
        let order = ranges.indices.sorted { (ranges[$0].start, ranges[$0].end) < (ranges[$1].start, ranges[$1].end) }
        var position = 0
        var last: Int?
        for i in order {
            let r = ranges[i]
            // Named in messages only: built on failure.
            var previous: String { last.map { "tensor '\(ranges[$0].name)'" } ?? "the start of the data area" }
            if r.start < position {
                throw fail(
                    .overlap, "tensor '\(r.name)' at data_offsets [\(r.start), \(r.end)] overlaps \(previous), which ends at \(position)")
            }
            if r.start > position {
                throw fail(.hole, "bytes [\(position), \(r.start)) between \(previous) and tensor '\(r.name)' belong to no tensor")
            }
            position = r.end
            last = i
        }
        guard position == dataSize else {
            throw fail(
                .trailingBytes,
                "the data area has \(dataSize) bytes but the tensors end at \(position): \(dataSize - position) trailing bytes")
        }
        return SafetensorsHeader(tensors: order.map { tensors[$0] }, metadata: entries.metadata, dataStart: dataStart)
    }

    /// Serializes a header for `tensors` laid out in the given order, padded with spaces so the
    /// data area starts at a multiple of 8 (as the reference writer does). Keys are emitted in
    /// sorted order, `__metadata__` first.
    public static func encode(_ tensors: [(name: String, dtype: DType, shape: [Int])], metadata: [String: String]?) -> [UInt8] {
        var offset = 0
        var entries: [(String, String)] = []
        for t in tensors {
            let size = t.shape.reduce(1, *) * t.dtype.size
            let shape = t.shape.map(String.init).joined(separator: ",")
            entries.append(
                (t.name, "{\"dtype\":\"\(t.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + size)]}"))
            offset += size
        }
        entries.sort { $0.0.utf8Precedes($1.0) }
        var json = "{"
        if let metadata {
            let pairs = metadata.sorted { $0.key.utf8Precedes($1.key) }
                .map { "\(jsonString($0.key)):\(jsonString($0.value))" }
            json += "\"__metadata__\":{\(pairs.joined(separator: ","))}"
            if !entries.isEmpty { json += "," }
        }
        json += entries.map { "\(jsonString($0.0)):\($0.1)" }.joined(separator: ",")
        json += "}"
        var bytes = Array(json.utf8)
        while (8 + bytes.count) % 8 != 0 { bytes.append(0x20) }
        var out = [UInt8]()
        out.reserveCapacity(8 + bytes.count)
        withUnsafeBytes(of: UInt64(bytes.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: bytes)
        return out
    }

    /// A JSON string literal, escaping what JSON requires.
    package static func jsonString(_ s: String) -> String {
        if !s.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) { return "\"" + s + "\"" }
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
