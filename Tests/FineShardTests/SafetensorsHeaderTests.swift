import Foundation
import Testing

@testable import FineShard

/// One handwritten file per header rule of docs/SPEC.md §3, with what its error must say.
struct HeaderCase: CustomStringConvertible, Sendable {
    let rule: HeaderRule
    let bytes: [UInt8]
    let mentions: [String]
    var description: String { rule.rawValue }

    init(_ rule: HeaderRule, _ header: String, data: Int = 0, declared: UInt64? = nil, mentions: [String]) {
        self.rule = rule
        self.bytes = safetensorsBytes(header: header, dataSize: data, declaredLength: declared)
        self.mentions = mentions
    }

    init(_ rule: HeaderRule, raw: [UInt8], mentions: [String]) {
        self.rule = rule
        self.bytes = raw
        self.mentions = mentions
    }
}

let t1 = #"{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#

let headerCases: [HeaderCase] = [
    HeaderCase(.fileTooSmall, raw: [1, 0, 0, 0, 0], mentions: ["5 bytes"]),
    HeaderCase(.headerTooLarge, "{}", declared: 100_000_001, mentions: ["100000001", "100000000"]),
    HeaderCase(.headerPastEnd, "{}", declared: 4096, mentions: ["4096", "10 bytes"]),
    HeaderCase(.notUTF8, raw: [3, 0, 0, 0, 0, 0, 0, 0, 0x7B, 0xFF, 0x7D], mentions: ["UTF-8"]),
    HeaderCase(.notJSON, #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]"#, data: 8, mentions: ["byte"]),
    HeaderCase(.notObject, "[1,2]", mentions: ["object"]),
    HeaderCase(.duplicateName, #"{"a":\#(t1),"a":\#(t1)}"#, data: 8, mentions: ["'a'", "twice"]),
    HeaderCase(.missingField, #"{"w":{"dtype":"F32","shape":[2]}}"#, data: 8, mentions: ["'w'", "data_offsets"]),
    HeaderCase(.unknownField, #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}}"#, data: 8, mentions: ["'w'", "'x'"]),
    HeaderCase(.unknownDType, #"{"w":{"dtype":"F17","shape":[2],"data_offsets":[0,8]}}"#, data: 8, mentions: ["'w'", "F17"]),
    HeaderCase(.badShape, #"{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, data: 8, mentions: ["'w'", "-2"]),
    HeaderCase(
        .shapeOverflow, #"{"w":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]}}"#, data: 8,
        mentions: ["'w'", "4294967296"]),
    HeaderCase(.badOffsets, #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[8]}}"#, data: 8, mentions: ["'w'", "[8]"]),
    HeaderCase(.offsetsReversed, #"{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}"#, data: 8, mentions: ["'w'", "[8, 0]"]),
    HeaderCase(
        .sizeMismatch, #"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: 8, mentions: ["'w'", "[3]", "12", "[0, 8]"]),
    HeaderCase(
        .outsideDataArea, #"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, data: 8, mentions: ["'w'", "[0, 16]", "8-byte"]),
    HeaderCase(
        .overlap, #"{"a":\#(t1),"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, data: 12,
        mentions: ["'b'", "'a'", "[4, 12]", "8"]),
    HeaderCase(
        .hole, #"{"a":\#(t1),"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}"#, data: 16, mentions: ["'a'", "'b'", "[8, 12)"]),
    HeaderCase(.trailingBytes, #"{"a":\#(t1)}"#, data: 12, mentions: ["12", "8", "4 trailing"]),
    HeaderCase(.badMetadata, #"{"__metadata__":{"k":1},"a":\#(t1)}"#, data: 8, mentions: ["'k'"]),
    HeaderCase(.tooManyTensors, #"{"a":\#(t1),"b":\#(t1)}"#, data: 16, mentions: ["1 tensors", "--max-tensors"]),
]

@Suite struct SafetensorsHeaderTests {
    @Test(arguments: headerCases)
    func eachBrokenHeaderRuleIsRefusedNamingTheTensorAndNumbers(_ c: HeaderCase) throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        try dir.write("bad.safetensors", c.bytes)
        let file = try OpenFile.forReading(dir.file("bad.safetensors"))
        let error = #expect(throws: CheckpointError.self) {
            _ = try SafetensorsHeader.read(file, name: "bad.safetensors", maxTensors: c.rule == .tooManyTensors ? 1 : 1000)
        }
        guard case .invalidHeader(let fileName, let rule, let message) = error else {
            Issue.record("expected an invalid header error, got \(String(describing: error))")
            return
        }
        #expect(fileName == "bad.safetensors")
        #expect(rule == c.rule, "\(message)")
        for word in c.mentions { #expect(message.contains(word), "'\(message)' should mention \(word)") }
        #expect(error?.exitCode == 2)
    }

    @Test func everyHeaderRuleHasACase() {
        let covered = Set(headerCases.map(\.rule))
        #expect(covered == Set(HeaderRule.allCases))
    }

    @Test func anUnpaddedHeaderWithZeroSizeTensorsIsAccepted() throws {
        let header =
            #"{"e":{"dtype":"I16","shape":[0,3],"data_offsets":[8,8]},"a":\#(t1),"s":{"dtype":"I64","shape":[],"data_offsets":[8,16]}}"#
        let parsed = try SafetensorsHeader.parse(Array(header.utf8), fileName: "x", dataStart: 8 + header.utf8.count, dataSize: 16)
        #expect(parsed.tensors.map(\.name) == ["a", "e", "s"])
        #expect(parsed.tensors[2].shape == [])
        #expect(parsed.tensors[2].offset == 8 + header.utf8.count + 8)
    }

    @Test func escapedNamesAndMetadataDecode() throws {
        let header = #"{"__metadata__":{"format":"pt"},"a\u00e9\"b":\#(t1)}"#
        let parsed = try SafetensorsHeader.parse(Array(header.utf8), fileName: "x", dataStart: 0, dataSize: 8)
        #expect(parsed.tensors[0].name == "aé\"b")
        #expect(parsed.metadata == ["format": "pt"])
    }

    @Test func nonFiniteAndFractionalNumbersAreRefused() throws {
        for shape in ["[NaN]", "[Infinity]", "[2.0]", "[1e3]"] {
            let header = #"{"w":{"dtype":"F32","shape":\#(shape),"data_offsets":[0,8]}}"#
            #expect(throws: CheckpointError.self) {
                _ = try SafetensorsHeader.parse(Array(header.utf8), fileName: "x", dataStart: 0, dataSize: 8)
            }
        }
    }

    @Test func deeplyNestedJSONIsRefusedWithoutRecursion() throws {
        let header = "{\"w\":" + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000) + "}"
        #expect(throws: CheckpointError.self) {
            _ = try SafetensorsHeader.parse(Array(header.utf8), fileName: "x", dataStart: 0, dataSize: 0)
        }
    }

    @Test func theTensorCapStopsAMillionEntryHeaderEarly() throws {
        var header = "{"
        for i in 0..<1_000_000 { header += "\"t\(i)\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}," }
        header.removeLast()
        header += "}"
        let error = #expect(throws: CheckpointError.self) {
            _ = try SafetensorsHeader.parse(Array(header.utf8), fileName: "x", dataStart: 0, dataSize: 0)
        }
        #expect(error?.description.contains("524288") == true)
    }
}
