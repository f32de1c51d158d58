import FineShardFormats
import FineShardSystem
import Foundation

extension Manifest {
    /// The manifests of an output folder: `manifest.json` when it exists, otherwise every partial
    /// manifest of a `--ranks` fan-out (docs/SPEC.md §5), sorted by name.
    public static func load(folder: String) throws -> [Manifest] {
        let out = OutputFolder(folder)
        let full = out.path(OutputFolder.manifestName)
        if FileManager.default.fileExists(atPath: full) { return [try read(full)] }
        guard (try? FileManager.default.contentsOfDirectory(atPath: folder)) != nil else {
            throw CheckpointError.unreadable(file: folder, reason: "no such folder (give the output folder of `fineshard shard`)")
        }
        let partial = out.partialManifestNames()
        guard !partial.isEmpty else {
            throw ManifestError.invalid(file: full, message: "the folder has no manifest.json and no manifest.ranks-*.json")
        }
        return try partial.map { try read(out.path($0)) }
    }

    /// Merges partial manifests into one, after checking that they share one plan fingerprint
    /// and one list of copied files. With `requireAllRanks`, every rank of the world must be
    /// covered exactly once; otherwise the ranks no manifest covers are returned.
    public static func combine(_ parts: [Manifest], requireAllRanks: Bool) throws -> (Manifest, missing: [Int]) {
        guard var combined = parts.first else { throw ManifestError.cannotCombine(.noParts) }
        for m in parts.dropFirst() {
            guard m.planFingerprint == combined.planFingerprint else {
                throw ManifestError.cannotCombine(.fingerprintsDiffer(combined.planFingerprint, m.planFingerprint))
            }
            guard m.copied == combined.copied else {
                throw ManifestError.cannotCombine(.copiedFilesDiffer)
            }
            // One fingerprint means one plan; a part whose other fields say otherwise was edited.
            let disagreeing: [(String, Bool)] = [
                ("parallel", m.parallel == combined.parallel), ("source.format", m.source.format == combined.source.format),
                ("source.model", m.source.model == combined.source.model), ("source.tensors", m.source.tensors == combined.source.tensors),
                (
                    "source.files",
                    m.source.files.map { [$0.name, String($0.bytes)] } == combined.source.files.map { [$0.name, String($0.bytes)] }
                ),
            ]
            if let (field, _) = disagreeing.first(where: { !$0.1 }) {
                throw ManifestError.cannotCombine(.partsDisagree(field: field))
            }
        }
        var seen: [Int: Int] = [:]
        for m in parts { for r in m.ranks { seen[r.rank, default: 0] += 1 } }
        if let twice = seen.filter({ $0.value > 1 }).keys.sorted().first {
            throw ManifestError.cannotCombine(.rankInSeveralParts(rank: twice))
        }
        let world = combined.parallel.dp * combined.parallel.tp
        let missing = (0..<world).filter { seen[$0] == nil }
        if requireAllRanks, !missing.isEmpty {
            throw ManifestError.cannotCombine(.ranksMissing(missing, forMerge: false))
        }
        combined.ranks = parts.flatMap(\.ranks).sorted { $0.rank < $1.rank }
        // A source hash survives only where every part recorded the same one.
        combined.source.files = combined.source.files.map { f in
            var f = f
            if parts.contains(where: { $0.source.files.first { $0.name == f.name }?.sha256 != f.sha256 }) { f.sha256 = nil }
            return f
        }
        return (combined, missing)
    }
}

/// Rank lists as users write them: `0-3,7`.
public enum RankList {
    public static func describe(_ ranks: [Int]) -> String {
        var parts: [String] = []
        var i = 0
        let sorted = ranks.sorted()
        while i < sorted.count {
            var j = i
            while j + 1 < sorted.count && sorted[j + 1] == sorted[j] + 1 { j += 1 }
            parts.append(i == j ? "\(sorted[i])" : "\(sorted[i])-\(sorted[j])")
            i = j + 1
        }
        return parts.joined(separator: ",")
    }
}
