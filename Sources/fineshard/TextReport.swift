import FineShard

/// Human-readable renderings of the library's reports.
enum TextReport {
    static func bytes(_ n: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(n)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(n) B" : String(format: "%.2f %@", value, units[unit])
    }

    /// Left-aligned columns, two spaces apart.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        let all = ([header] + rows).map { $0.map(printable) }
        let widths = header.indices.map { c in all.map { $0[c].count }.max() ?? 0 }
        return all.map { row in
            row.enumerated().map { c, cell in c == row.count - 1 ? cell : cell.padding(toLength: widths[c], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }.joined(separator: "\n")
    }

    static func inspect(_ r: InspectReport) -> String {
        var out = "checkpoint: \(r.root)\nformat: \(r.format.rawValue)\n"
        out += "files: \(r.files.count)\n"
        for f in r.files { out += "  \(f.name)  \(bytes(f.bytes))\n" }
        out += "tensors: \(r.tensorCount), \(bytes(r.totalBytes))\n"
        out +=
            "dtypes: "
            + r.dtypes.keys.sorted().map { "\($0) \(r.dtypes[$0]!.count) (\(bytes(r.dtypes[$0]!.bytes)))" }.joined(separator: ", ") + "\n\n"
        let hasRoles = r.tensors.contains { $0.role != nil }
        let header = ["name", "dtype", "shape", "bytes"] + (hasRoles ? ["role"] : [])
        let rows = r.tensors.map { t in
            [t.name, t.dtype.rawValue, "[" + t.shape.map(String.init).joined(separator: ", ") + "]", String(t.bytes)]
                + (hasRoles ? [t.role ?? "-"] : [])
        }
        return out + table(header, rows)
    }

    static func plan(_ r: PlanReport) -> String {
        let p = r.parallel
        let m = r.model
        var out = "model: \(m.architecture) (\(m.family.rawValue))"
        if let layers = m.numHiddenLayers { out += ", \(layers) layers" }
        if let v = m.vocabSize { out += ", vocab \(v)" }
        if let h = m.hiddenSize { out += ", hidden \(h)" }
        if let heads = m.numAttentionHeads { out += ", heads \(heads)" + (m.numKeyValueHeads.map { "/\($0) kv" } ?? "") }
        if let e = m.nRoutedExperts { out += ", \(e) routed experts" }
        out += m.tieWordEmbeddings ? ", tied lm_head" : ""
        out += "\nparallel: DP \(p.dp) × TP \(p.tp) = \(r.worldSize) ranks"
        out += p.expertParallel ? ", expert parallel (EP \(r.worldSize))" : ""
        out += ", layout \(p.layout.rawValue), format \(p.format.rawValue)\n"
        let topology = RankTopology(dp: p.dp, tp: p.tp, finegrained: p.finegrained)
        let fg = Component.allCases.map { "\($0.rawValue) \(topology.isFineGrained($0) ? String(p.finegrained[$0]) : "-")" }
        out += "fine-grained TP: " + fg.joined(separator: ", ") + "\n"
        let minRank = r.bytesPerRank.min() ?? 0
        let maxRank = r.bytesPerRank.max() ?? 0
        out +=
            "per rank: min \(bytes(minRank)), max \(bytes(maxRank)); total output \(bytes(r.totalOutputBytes)) (source \(bytes(r.sourceBytes)))\n\n"
        let rows = r.components.map { c in
            [
                c.component.rawValue, String(c.groupSize), c.collective, bytes(c.bytesPerRankWithout), bytes(c.bytesPerRankWith),
                bytes(c.saving),
            ]
        }
        let total = r.components.reduce(0) { $0 + $1.saving }
        out += table(
            ["component", "group", "collective at run time", "per rank without", "per rank with", "saving"],
            rows + [["total", "", "", "", "", bytes(total)]])
        for w in r.warnings { out += "\nwarning: \(w)" }
        for n in r.notes { out += "\nnote: \(n)" }
        if !r.unknownTensors.isEmpty {
            out += "\nunknown tensors (replicated; --strict refuses them): \(r.unknownTensors.count)"
            for name in r.unknownTensors.prefix(20) { out += "\n  \(name)" }
            if r.unknownTensors.count > 20 { out += "\n  …" }
        }
        out += "\nplan fingerprint: \(r.fingerprint)"
        return out
    }
}
