/// A parser for exactly the JSON a safetensors header may hold, and nothing more.
///
/// A general JSON decoder would silently keep the last of two equal keys, build the whole tree
/// before a count could be checked, and recurse on nesting an attacker chooses. This one knows
/// the grammar (an object of tensor objects and one `__metadata__` string map), so it detects
/// duplicates, applies the tensor cap as it goes, and never nests deeper than two levels.
struct HeaderJSONParser {
    struct Entry {
        var name: String
        var dtype: String
        var shape: [Int]
        var offsets: (Int, Int)
    }

    let bytes: [UInt8]
    let fileName: String
    let maxTensors: Int
    var i = 0

    init(bytes: [UInt8], fileName: String, maxTensors: Int) {
        self.bytes = bytes
        self.fileName = fileName
        self.maxTensors = maxTensors
    }

    func fail(_ rule: HeaderRule, _ message: String) -> CheckpointError {
        .invalidHeader(file: fileName, rule: rule, message: message)
    }

    func syntax(_ expected: String) -> CheckpointError {
        if i >= bytes.count { return fail(.notJSON, "expected \(expected) at byte \(i), found the end of the header") }
        let found = String(decoding: bytes[i..<min(bytes.count, i + 12)], as: UTF8.self)
        return fail(.notJSON, "expected \(expected) at byte \(i), found '\(found)'")
    }

    mutating func skipSpace() {
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
    }

    /// Consumes `byte` (after whitespace) or fails naming `what` was expected; `what` is only built
    /// on failure (the parser calls this for every tensor of a large header).
    mutating func expect(_ byte: UInt8, _ what: @autoclosure () -> String) throws {
        skipSpace()
        guard i < bytes.count, bytes[i] == byte else { throw syntax(what()) }
        i += 1
    }

    /// Consumes `byte` if it is next (after whitespace).
    mutating func take(_ byte: UInt8) -> Bool {
        skipSpace()
        if i < bytes.count, bytes[i] == byte {
            i += 1
            return true
        }
        return false
    }

    mutating func parseHeader() throws -> (tensors: [Entry], metadata: [String: String]?) {
        guard bytes.first == UInt8(ascii: "{") else {
            throw fail(.notObject, "the header must be a JSON object starting with '{' at its first byte")
        }
        i = 1
        var tensors: [Entry] = []
        var metadata: [String: String]?
        var names = Set<String>()
        // A tensor entry takes more than 64 bytes; sizing the set once saves rehashing it as it grows.
        names.reserveCapacity(min(bytes.count / 64, maxTensors))
        if !take(UInt8(ascii: "}")) {
            repeat {
                skipSpace()
                let key = try parseString()
                try expect(UInt8(ascii: ":"), "':'")
                guard names.insert(key).inserted else {
                    throw fail(.duplicateName, "'\(key)' appears twice in the header")
                }
                if key == "__metadata__" {
                    metadata = try parseMetadata()
                } else {
                    guard tensors.count < maxTensors else {
                        throw fail(.tooManyTensors, "more than \(maxTensors) tensors (the --max-tensors cap)")
                    }
                    tensors.append(try parseTensor(key))
                }
            } while take(UInt8(ascii: ","))
            try expect(UInt8(ascii: "}"), "',' or '}'")
        }
        skipSpace()
        guard i == bytes.count else { throw fail(.notJSON, "unexpected bytes after the header object at byte \(i)") }
        return (tensors, metadata)
    }

    mutating func parseMetadata() throws -> [String: String] {
        skipSpace()
        guard take(UInt8(ascii: "{")) else { throw fail(.badMetadata, "__metadata__ must be an object of strings") }
        var result: [String: String] = [:]
        if take(UInt8(ascii: "}")) { return result }
        repeat {
            skipSpace()
            let key = try parseString()
            try expect(UInt8(ascii: ":"), "':'")
            skipSpace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else {
                throw fail(.badMetadata, "__metadata__ value of '\(key)' is not a string")
            }
            guard result.updateValue(try parseString(), forKey: key) == nil else {
                throw fail(.badMetadata, "__metadata__ key '\(key)' appears twice")
            }
        } while take(UInt8(ascii: ","))
        try expect(UInt8(ascii: "}"), "',' or '}' in __metadata__")
        return result
    }

    mutating func parseTensor(_ name: String) throws -> Entry {
        guard take(UInt8(ascii: "{")) else {
            throw fail(.notObject, "tensor '\(name)' must be an object with dtype, shape and data_offsets")
        }
        var dtype: String?
        var shape: [Int]?
        var offsets: [Int]?
        if !take(UInt8(ascii: "}")) {
            repeat {
                skipSpace()
                let field = try parseString()
                try expect(UInt8(ascii: ":"), "':'")
                skipSpace()
                switch field {
                case "dtype" where dtype == nil:
                    guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else {
                        throw fail(.unknownDType, "tensor '\(name)' has a dtype that is not a string")
                    }
                    dtype = try parseString()
                case "shape" where shape == nil:
                    shape = try parseIntegers(name, field)
                case "data_offsets" where offsets == nil:
                    offsets = try parseIntegers(name, field)
                case "dtype", "shape", "data_offsets":
                    throw fail(.duplicateName, "tensor '\(name)' has field '\(field)' twice")
                default:
                    throw fail(.unknownField, "tensor '\(name)' has unknown field '\(field)'")
                }
            } while take(UInt8(ascii: ","))
            try expect(UInt8(ascii: "}"), "',' or '}' in tensor '\(name)'")
        }
        guard let dtype else { throw fail(.missingField, "tensor '\(name)' has no dtype") }
        guard let shape else { throw fail(.missingField, "tensor '\(name)' has no shape") }
        guard let offsets else { throw fail(.missingField, "tensor '\(name)' has no data_offsets") }
        guard offsets.count == 2 else {
            throw fail(.badOffsets, "tensor '\(name)' has \(offsets.count) data_offsets \(offsets), not 2")
        }
        return Entry(name: name, dtype: dtype, shape: shape, offsets: (offsets[0], offsets[1]))
    }

    /// A JSON array of non-negative integers that fit in an Int.
    mutating func parseIntegers(_ name: String, _ field: String) throws -> [Int] {
        let rule: HeaderRule = field == "shape" ? .badShape : .badOffsets
        guard take(UInt8(ascii: "[")) else { throw fail(rule, "tensor '\(name)' has a \(field) that is not an array of integers") }
        var values: [Int] = []
        if take(UInt8(ascii: "]")) { return values }
        values.reserveCapacity(4)
        repeat {
            skipSpace()
            let start = i
            var value = 0
            while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 {
                let (a, o1) = value.multipliedReportingOverflow(by: 10)
                let (b, o2) = a.addingReportingOverflow(Int(bytes[i] - 0x30))
                if o1 || o2 {
                    throw fail(
                        field == "shape" ? .shapeOverflow : .badOffsets, "tensor '\(name)' has a \(field) value that overflows 64 bits")
                }
                value = b
                i += 1
            }
            guard i > start, i >= bytes.count || !"-.eE+".utf8.contains(bytes[i]) else {
                var end = start
                while end < bytes.count, end - start < 24, bytes[end] != UInt8(ascii: ","), bytes[end] != UInt8(ascii: "]") { end += 1 }
                let token = String(decoding: bytes[start..<end], as: UTF8.self)
                throw fail(rule, "tensor '\(name)' has \(field) entry '\(token)' that is not a non-negative integer")
            }
            guard i - start == 1 || bytes[start] != 0x30 else {
                throw fail(.notJSON, "tensor '\(name)' has \(field) entry with a leading zero")
            }
            values.append(value)
            guard values.count <= 64 else { throw fail(rule, "tensor '\(name)' has a \(field) of more than 64 entries") }
        } while take(UInt8(ascii: ","))
        try expect(UInt8(ascii: "]"), "',' or ']' in the \(field) of '\(name)'")
        return values
    }

    /// A JSON string at the cursor, escapes decoded.
    mutating func parseString() throws -> String {
        guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw syntax("a string") }
        i += 1
        // Fast path: no escape and no control character, one String made from the bytes as they are.
        var end = i
        while end < bytes.count, bytes[end] != UInt8(ascii: "\""), bytes[end] != UInt8(ascii: "\\"), bytes[end] >= 0x20 { end += 1 }
        if end < bytes.count, bytes[end] == UInt8(ascii: "\"") {
            defer { i = end + 1 }
            return bytes.withUnsafeBufferPointer { String(decoding: UnsafeBufferPointer(rebasing: $0[i..<end]), as: UTF8.self) }
        }
        var out = [UInt8]()
        while true {
            guard i < bytes.count else { throw syntax("the end of a string") }
            let c = bytes[i]
            i += 1
            switch c {
            case UInt8(ascii: "\""):
                return String(decoding: out, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard i < bytes.count else { throw syntax("an escape") }
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try parseHex4()
                    if (0xD800..<0xDC00).contains(scalar) {
                        guard i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") else {
                            throw fail(.notJSON, "unpaired surrogate in a string at byte \(i)")
                        }
                        i += 2
                        let low = try parseHex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw fail(.notJSON, "unpaired surrogate in a string at byte \(i)") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let u = Unicode.Scalar(scalar) else { throw fail(.notJSON, "invalid \\u escape at byte \(i)") }
                    out.append(contentsOf: Array(String(Character(u)).utf8))
                default:
                    i -= 1
                    throw syntax("a valid escape")
                }
            case 0..<0x20:
                i -= 1
                throw fail(.notJSON, "control character 0x\(String(c, radix: 16)) inside a string at byte \(i)")
            default:
                out.append(c)
            }
        }
    }

    mutating func parseHex4() throws -> UInt32 {
        guard i + 4 <= bytes.count else { throw syntax("four hex digits") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard let digit = Character(UnicodeScalar(bytes[i])).hexDigitValue else { throw syntax("a hex digit") }
            value = value * 16 + UInt32(digit)
            i += 1
        }
        return value
    }
}
