import Foundation

extension ModelConfig {
    /// The text of a `config.json` without its top-level `quantization_config` member (`shard --dtype bf16`
    /// writes the FP8 weights it describes dequantized, so vLLM must load them unquantized); every other byte
    /// is kept, so the file still reads as the user's. Nil when there is no such member. A file that is not
    /// a JSON object, or that does not parse after the removal, is bad input naming `file`.
    public static func removingQuantizationConfig(_ text: [UInt8], file: String) throws -> [UInt8]? {
        let key = Array(#""quantization_config""#.utf8)
        var scanner = JSONMemberScanner(text)
        guard let members = scanner.topLevelMembers() else {
            throw ModelError.badConfig(file: file, field: "quantization_config", message: "config.json is not a JSON object")
        }
        guard let k = members.firstIndex(where: { Array(text[$0.key]) == key }) else { return nil }
        // Remove the member and one separating comma: the one after it, or before it when it is last.
        let range =
            k + 1 < members.count
            ? members[k].key.lowerBound..<members[k + 1].key.lowerBound
            : (k > 0 ? members[k - 1].value.upperBound : members[k].key.lowerBound)..<members[k].value.upperBound
        let out = Array(text[..<range.lowerBound] + text[range.upperBound...])
        guard let object = try? JSONSerialization.jsonObject(with: Data(out)) as? [String: Any], object["quantization_config"] == nil else {
            throw ModelError.badConfig(file: file, field: "quantization_config", message: "cannot be removed leaving valid JSON")
        }
        return out
    }
}

/// Finds the members of a JSON object's top level by their byte ranges (key with its quotes, value),
/// without decoding anything; nil when the text is not an object.
struct JSONMemberScanner {
    let text: [UInt8]
    var i = 0

    init(_ text: [UInt8]) { self.text = text }

    mutating func topLevelMembers() -> [(key: Range<Int>, value: Range<Int>)]? {
        skipSpace()
        guard peek == UInt8(ascii: "{") else { return nil }
        i += 1
        var members: [(key: Range<Int>, value: Range<Int>)] = []
        while true {
            skipSpace()
            if peek == UInt8(ascii: "}") { return members }
            guard peek == UInt8(ascii: "\""), let key = skipValue() else { return nil }
            skipSpace()
            guard peek == UInt8(ascii: ":") else { return nil }
            i += 1
            skipSpace()
            guard let value = skipValue() else { return nil }
            members.append((key, value))
            skipSpace()
            if peek == UInt8(ascii: ",") { i += 1 } else if peek != UInt8(ascii: "}") { return nil }
        }
    }

    var peek: UInt8? { i < text.count ? text[i] : nil }

    mutating func skipSpace() {
        while let c = peek, c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D { i += 1 }
    }

    /// Skips one value (string, object, array or scalar); its byte range.
    mutating func skipValue() -> Range<Int>? {
        let start = i
        var depth = 0
        var inString = false
        while let c = peek {
            i += 1
            if inString {
                if c == UInt8(ascii: "\\") {
                    i += 1
                } else if c == UInt8(ascii: "\"") {
                    inString = false
                    if depth == 0 { return start..<i }
                }
                continue
            }
            switch c {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                if depth == 0 {
                    i -= 1
                    return start..<i
                }
                depth -= 1
                if depth == 0 { return start..<i }
            case UInt8(ascii: ","), 0x20, 0x09, 0x0A, 0x0D:
                if depth == 0 {
                    i -= 1
                    return start..<i
                }
            default: break
            }
        }
        return depth == 0 && !inString && i > start ? start..<i : nil
    }
}
