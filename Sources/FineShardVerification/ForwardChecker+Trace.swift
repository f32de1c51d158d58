import FineShardFormats
import FineShardModel
import FineShardPlanning
import Foundation

extension ForwardChecker {
    /// A token row's identity in both passes: its DP rank's batch and its position in it.
    struct RowID: Hashable, Sendable {
        var batch: Int
        var position: Int
    }

    /// The points of a layer where both passes record what a module computed, in pass order.
    enum Stage: Int, Comparable, Sendable {
        case query, keyValue, attention, oProj, router, expertGate, expertUp, expertDown, sharedExpert, mlp

        static func < (a: Stage, b: Stage) -> Bool { a.rawValue < b.rawValue }

        var label: String {
            switch self {
            case .query: "query projection"
            case .keyValue: "key/value projection"
            case .attention: "attention output"
            case .oProj: "o_proj output"
            case .router: "routing"
            case .expertGate: "gate_proj output"
            case .expertUp: "up_proj output"
            case .expertDown: "down_proj output"
            case .sharedExpert: "shared expert output"
            case .mlp: "MLP output"
            }
        }
    }

    /// What a pass computed module by module ("probes"), and its routing choices. The sharded pass's
    /// probes are compared with the dense pass's on the same token rows and output columns; the first
    /// module (in pass order) that differs names the rank that computed it and the tensors it read,
    /// so a wrong expert, scale block or head is named, not only the logits it spoils. A per-layer
    /// mode reuses it unchanged: a probe is one module of one layer.
    final class Trace {
        struct Probe {
            var stage: Stage
            var layer: Int
            /// Which instance of the stage (`expert 5`), or empty.
            var label: String
            var rank: Int
            var tensors: [String]
            var rows: [RowID]
            /// The first column of the full module output that column 0 of `values` is.
            var columnOffset: Int
            var values: Matrix
        }

        var probes: [Probe] = []
        /// The dense pass's routing choice of every token, by layer.
        var choices: [Int: [RowID: Architecture.MoE.Choice]] = [:]
        /// The sharded pass's routing choices, settled against the dense ones.
        var routing: [ForwardCheckReport.RoutingChoice] = []

        /// The sharded probes (`self`) that differ from the dense ones by more than `tolerance`
        /// relative to the largest dense value of the module, earliest layer and stage first.
        func differences(from dense: Trace, tolerance: Float) -> [ForwardCheckReport.Difference] {
            struct Key: Hashable {
                var stage: Stage
                var layer: Int
                var label: String
            }
            var index: [Key: (rows: [RowID: Int], probe: Probe, scale: Float)] = [:]
            for p in dense.probes {
                let rows = Dictionary(p.rows.enumerated().map { ($0.element, $0.offset) }) { a, _ in a }
                index[Key(stage: p.stage, layer: p.layer, label: p.label)] = (rows, p, p.values.data.map(abs).max() ?? 0)
            }
            var out: [ForwardCheckReport.Difference] = []
            for p in probes {
                guard let (rows, d, scale) = index[Key(stage: p.stage, layer: p.layer, label: p.label)] else { continue }
                var worst: Float = 0
                for (i, id) in p.rows.enumerated() {
                    guard let j = rows[id] else { continue }
                    for c in 0..<p.values.cols {
                        let e = abs(p.values.data[i * p.values.cols + c] - d.values.data[j * d.values.cols + p.columnOffset + c])
                        worst = e.isNaN ? .infinity : max(worst, e)
                    }
                }
                let relative = worst / max(scale, .leastNormalMagnitude)
                if relative > tolerance {
                    out.append(
                        ForwardCheckReport.Difference(
                            rank: p.rank, layer: p.layer, module: (p.label.isEmpty ? "" : p.label + " ") + p.stage.label,
                            tensors: p.tensors, maxRelError: ForwardChecker.finite(relative), stage: p.stage.rawValue))
                }
            }
            return out
        }
    }
}

extension ForwardChecker.Simulation {
    /// Records what a module computed on `rank` for token `rows` (columns from `columnOffset` of the
    /// module's full output).
    func record(
        _ stage: ForwardChecker.Stage, layer: Int, rank: Int, tensors: [String], rows: [ForwardChecker.RowID], columnOffset: Int,
        _ values: Matrix, label: String = ""
    ) {
        trace.probes.append(
            .init(
                stage: stage, layer: layer, label: label, rank: rank, tensors: withParameters(tensors, rank: rank), rows: rows,
                columnOffset: columnOffset, values: values))
    }

    /// `tensors` and the quantization parameters the rank holds next to each weight (the scales a
    /// dequantization read), so a probe names them too.
    func withParameters(_ tensors: [String], rank: Int) -> [String] {
        tensors.flatMap { name -> [String] in
            guard name.hasSuffix(".weight") else { return [name] }
            let prefix = String(name.dropLast("weight".count))
            let parameters = ["weight_scale_inv", "weight_scale", "weight_offset"].map { prefix + $0 }
            return [name] + parameters.filter { (try? weights.shape($0, rank: rank)) != nil }
        }
    }
}
