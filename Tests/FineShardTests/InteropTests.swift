import Crypto
import Foundation
import Testing

@testable import FineShard

/// Interop with the official Python `safetensors` library, both ways, and with a real checkpoint
/// nobody here wrote. These need the test script's venv (`FINESHARD_PYTHON`), which CI always has.
@Suite(.enabled(if: Environment.python != nil, "needs FINESHARD_PYTHON (scripts/test.sh sets it)"))
struct SafetensorsInteropTests {
    static func sha256(_ bytes: [UInt8]) -> String { SHA256.hash(data: bytes).hexString }

    @Test func theOfficialLibraryReadsEveryDTypeFineshardWrites() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let specs =
            DType.allCases.enumerated().map { i, d in TensorSpec(name: "t.\(d.rawValue.lowercased())", dtype: d, shape: [i % 3 + 1, 5]) }
            + [TensorSpec(name: "scalar", dtype: .f32, shape: []), TensorSpec(name: "empty", dtype: .bf16, shape: [0, 4])]
        let tensors = specs.enumerated().map { i, s in
            // BOOL must hold 0/1 for numpy; other bytes are arbitrary patterns.
            (s, s.dtype == .bool ? randomBytes(s.byteCount, seed: 1).map { $0 & 1 } : randomBytes(s.byteCount, seed: UInt64(i)))
        }
        try writeSafetensors(dir.file("out.safetensors"), tensors, metadata: ["format": "pt"])
        let report = try runPython("st_read.py", [dir.file("out.safetensors")])
        let read = report["tensors"] as! [String: [String: Any]]
        #expect(report["metadata"] as? [String: String] == ["format": "pt"])
        #expect(Set(read.keys) == Set(specs.map(\.name)))
        for (spec, data) in tensors {
            let r = read[spec.name]!
            #expect(r["dtype"] as? String == spec.dtype.rawValue)
            #expect(r["shape"] as? [Int] == spec.shape)
            #expect(r["sha256"] as? String == Self.sha256(data), "\(spec.name)")
        }
    }

    @Test func fineshardReadsWhatTheOfficialLibraryWrites() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        let report = try runPython("st_write.py", [dir.file("py.safetensors"), "7"])
        let expected = report["tensors"] as! [String: [String: Any]]
        let checkpoint = try Checkpoint.open(dir.file("py.safetensors"))
        #expect(checkpoint.tensors.count == expected.count)
        #expect(Set(checkpoint.tensors.map(\.dtype)) == Set(DType.allCases))
        for (name, e) in expected {
            let t = try checkpoint.tensor(name)
            #expect(t.dtype.rawValue == e["dtype"] as? String)
            #expect(t.shape == e["shape"] as? [Int])
            #expect(Self.sha256(try readAll(checkpoint, name)) == e["sha256"] as? String, "\(name)")
        }
    }

    @Test(.enabled(if: Environment.minilm != nil, "needs FINESHARD_MINILM (scripts/test.sh fetches it)"))
    func inspectListsEveryTensorOfARealCheckpointAsTheOfficialLibraryDoes() throws {
        let model = Environment.minilm! + "/model.safetensors"
        let reference = try runPython("st_read.py", [model])["tensors"] as! [String: [String: Any]]
        let result = try run(fineshardBinary, ["inspect", model, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        let tensors = json["tensors"] as! [[String: Any]]
        #expect(tensors.count == 104)
        #expect(json["tensor_count"] as? Int == 104)
        #expect(tensors.contains { $0["dtype"] as? String == "I64" })
        for t in tensors {
            let name = t["name"] as! String
            let r = try #require(reference[name], "\(name)")
            #expect(t["dtype"] as? String == r["dtype"] as? String)
            #expect(t["shape"] as? [Int] == r["shape"] as? [Int])
            #expect(t["data_offsets"] as? [Int] == r["offsets"] as? [Int])
        }
    }
}
