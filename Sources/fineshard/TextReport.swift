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
        let all = [header] + rows
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
        out += "dtypes: " + r.dtypes.keys.sorted().map { "\($0) \(r.dtypes[$0]!.count) (\(bytes(r.dtypes[$0]!.bytes)))" }.joined(separator: ", ") + "\n\n"
        let hasRoles = r.tensors.contains { $0.role != nil }
        let header = ["name", "dtype", "shape", "bytes"] + (hasRoles ? ["role"] : [])
        let rows = r.tensors.map { t in
            [t.name, t.dtype.rawValue, "[" + t.shape.map(String.init).joined(separator: ", ") + "]", String(t.bytes)] + (hasRoles ? [t.role ?? "-"] : [])
        }
        return out + table(header, rows)
    }
}
