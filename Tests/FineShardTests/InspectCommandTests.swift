import Foundation
import Testing

@testable import FineShard

/// The `fineshard inspect` command, run as the built binary.
@Suite struct InspectCommandTests {
    @Test func inspectOfTheFixtureListsItsTensorsAndFormat() throws {
        let result = try run(fineshardBinary, ["inspect", Environment.root + "/fixtures/tiny-llama", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        #expect(json["format"] as? String == "safetensors")
        #expect(json["tensor_count"] as? Int == 21)
        let tensors = json["tensors"] as! [[String: Any]]
        let embed = try #require(tensors.first { $0["name"] as? String == "model.embed_tokens.weight" })
        #expect(embed["shape"] as? [Int] == [1000, 64])
        #expect(embed["dtype"] as? String == "BF16")
        #expect((json["dtypes"] as? [String: [String: Int]])?["BF16"]?["count"] == 21)
        let roles = Dictionary(uniqueKeysWithValues: tensors.map { ($0["name"] as! String, $0["role"] as? String) })
        #expect(roles["model.embed_tokens.weight"] == "embedding.weight")
        #expect(roles["lm_head.weight"] == "lm_head.weight")
        #expect(roles["model.layers.1.self_attn.o_proj.weight"] == "o_proj.weight")
        #expect(roles["model.layers.0.mlp.down_proj.weight"] == "down.weight")
        #expect(roles.values.allSatisfy { $0 != nil && $0 != "other.weight" })
    }

    @Test func theHDF5TwinOfTheFixtureHasTheSameTensors() throws {
        let st = try Checkpoint.open(Environment.root + "/fixtures/tiny-llama")
        let h5 = try Checkpoint.open(Environment.root + "/fixtures/tiny-llama-h5")
        #expect(h5.format == .hdf5)
        #expect(st.tensors.map(\.name) == h5.tensors.map(\.name))
        for t in st.tensors {
            let u = try h5.tensor(t.name)
            #expect(u.dtype == t.dtype && u.shape == t.shape)
            #expect(try readAll(st, t.name) == readAll(h5, t.name), "\(t.name)")
        }
    }

    @Test func inspectReadsHeadersOnlySoASparseDataAreaIsNeverTouched() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        // A 64 GiB tensor whose data area is a hole: inspect must not read it.
        let header = #"{"huge":{"dtype":"BF16","shape":[262144,131072],"data_offsets":[0,68719476736]}}"#
        try dir.write("sparse.safetensors", safetensorsBytes(header: header, dataSize: 0))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: dir.file("sparse.safetensors")))
        try handle.truncate(atOffset: UInt64(8 + header.utf8.count) + 68_719_476_736)
        try handle.close()
        let result = try run(fineshardBinary, ["inspect", dir.file("sparse.safetensors")])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("huge"))
        #expect(result.stdout.contains("64.00 GiB"))
    }

    @Test func badInputExitsWithCode2AndNamesTheFile() throws {
        let dir = try TemporaryFolder()
        defer { dir.remove() }
        try dir.write("bad.safetensors", safetensorsBytes(header: #"{"w":{"dtype":"F17","shape":[1],"data_offsets":[0,4]}}"#, dataSize: 4))
        let result = try run(fineshardBinary, ["inspect", dir.file("bad.safetensors")])
        #expect(result.status == 2)
        #expect(result.stderr.contains("bad.safetensors") && result.stderr.contains("F17"))
        let missing = try run(fineshardBinary, ["inspect", dir.file("nope")])
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("nope"))
    }
}
