// GFLOP/s of the forward check's matrix product (`Kernels.linear`, y = x · Wᵀ) on DeepSeek-R1 widths
// for small token counts: the portable Swift tile (`swift-tiled`), the AVX2 + FMA C kernel with float32
// weights (`avx2-f32`) and with bf16 weights widened in registers (`avx2-bf16`, what the forward check
// runs on a bf16 checkpoint), next to main's kernel before the register tile (one `dot` per output).
// Run by scripts/bench/kernels.sh, which puts OpenBLAS `cblas_sgemm` beside it.
// Usage: fineshard-kernel-bench [threads] — prints `kernel M K N threads ms GFLOP/s` rows.
import Dispatch
import FineShardVerification
import Foundation

let threads = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 1 : 1
let shapes = [(7168, 2048), (7168, 1536), (16384, 7168)]  // K (in) × N (out): expert, q_a_proj, o_proj

/// main's `linear` before this change: a SIMD dot product per (token, output), outputs in blocks of 64.
func dotPerOutput(_ x: [Float], _ w: [Float], m: Int, k: Int, n: Int) -> [Float] {
    var y = [Float](repeating: 0, count: m * n)
    w.withUnsafeBufferPointer { wb in
        x.withUnsafeBufferPointer { xb in
            for o in 0..<n { for t in 0..<m { y[t * n + o] = Kernels.dot(wb.baseAddress! + o * k, xb.baseAddress! + t * k, k) } }
        }
    }
    return y
}

func seconds(_ body: () -> Void) -> Double {
    var best = Double.infinity
    for _ in 0..<3 {
        let start = DispatchTime.now().uptimeNanoseconds
        body()
        best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }
    return best
}

for (k, n) in shapes {
    let w = (0..<k * n).map { Float(($0 * 7919) % 1000) / 1000 - 0.5 }
    let weight = Weight(Matrix(rows: n, cols: k, data: w))
    // Round to nearest even (the values are small and finite).
    let bf16 = Weight(rows: n, cols: k, bf16: w.map { UInt16(($0.bitPattern + 0x7FFF + (($0.bitPattern >> 16) & 1)) >> 16) })
    for m in [1, 8, 32] {
        let x = Matrix(rows: m, cols: k, data: (0..<m * k).map { Float(($0 * 104729) % 1000) / 1000 - 0.5 })
        let flops = 2.0 * Double(m * k * n)
        var sink: Float = 0
        let tiled = seconds { sink += Kernels.linear(x, weight: weight, threads: threads, path: .portable).data[0] }
        let native =
            Kernels.nativeAvailable ? seconds { sink += Kernels.linear(x, weight: weight, threads: threads, path: .native).data[0] } : .nan
        let native16 =
            Kernels.nativeAvailable ? seconds { sink += Kernels.linear(x, weight: bf16, threads: threads, path: .native).data[0] } : .nan
        let old = threads == 1 ? seconds { sink += dotPerOutput(x.data, w, m: m, k: k, n: n)[0] } : .nan
        for (name, s) in [("swift-tiled", tiled), ("avx2-f32", native), ("avx2-bf16", native16), ("swift-dot-main", old)] where !s.isNaN {
            print(name, m, k, n, threads, String(format: "%.2f %.2f", s * 1e3, flops / s / 1e9))
        }
        if sink.isNaN { print("nan") }
    }
}
