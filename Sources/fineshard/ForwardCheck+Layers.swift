import FineShard
import Foundation

extension ForwardCheck {
    /// The text report of `forward-check --layers`: a line per layer (worst rank, routing, bytes read,
    /// time), the first differing module of a failing layer, the hash note and a summary.
    func printLayers(_ report: LayerCheckReport) {
        let inputs: [LayerCheckReport.Input: String] = [
            .embedding: "embedding of the tokens", .previousLayer: "dense output of the layer before", .random: "seeded random rows",
        ]
        func e(_ x: Float) -> String { String(format: "%.2e", x) }
        for l in report.layers {
            var line =
                "layer \(l.layer) (\(l.kind), input: \(inputs[l.input]!)): max rel \(e(l.maxRelError)) (rank \(l.worstRank)) over \(l.ranks.count) ranks"
            if let r = l.routing {
                line +=
                    ", routing \(r.choices) choices (min margin \(r.minMargin.map(e) ?? "-"), \(r.ties) ties, \(r.differences) differ)"
                    + ", experts picked \(r.expertsSelected.count) of \(r.experts), read \(r.expertsReadFromSource.count) from the source and \(r.expertsReadFromShards.count) from the shards"
            }
            line +=
                "; read \(TextReport.bytes(l.sourceBytesRead)) source + \(TextReport.bytes(l.shardBytesRead)) shards, \(String(format: "%.1f", l.seconds)) s — \(l.passed ? "ok" : "MISMATCH")"
            print(line)
            for r in l.ranks where !r.passed {
                print("MISMATCH: layer \(l.layer), rank \(r.rank) (dp \(r.dpRank), tp \(r.tpRank)): max relative error \(e(r.maxRelError))")
            }
            for d in l.firstDifferences { print("FIRST DIFFERENCE: \(d.description)") }
        }
        print("hashes: \(report.hashes.note)")
        let io = report.processBytesRead.map { " (process read \(TextReport.bytes($0)) in all)" } ?? ""
        let layers = report.layers.map { String($0.layer) }.joined(separator: ", ")
        print(
            report.ok
                ? "forward-check passed: layer\(report.layers.count == 1 ? "" : "s") \(layers) of \(report.architecture) match the dense layers on every rank within \(String(format: "%.0e", report.tolerance)); read \(TextReport.bytes(report.sourceBytesRead)) source + \(TextReport.bytes(report.shardBytesRead)) shards\(io) (\(String(format: "%.1f", report.seconds)) s, peak RSS \(TextReport.bytes(report.peakRSSBytes)))"
                : "forward-check FAILED: \(report.layers.filter { !$0.passed }.count) of \(report.layers.count) layers differ from the dense \(report.architecture)"
        )
    }
}
