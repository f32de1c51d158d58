import Testing

@testable import FineShardVerification

/// `Kernels.linear`'s register tile (four weight rows × two tokens) against a float64 sum, on shapes
/// that leave every remainder path (odd tokens, rows past a multiple of 4 and of the 64-row blocks,
/// inner widths not a multiple of 4) and with more threads than blocks.
@Suite("forward-check kernels")
struct ForwardCheckKernelTests {
    @Test(arguments: [(1, 1, 1), (3, 7, 5), (2, 67, 17), (5, 130, 4), (8, 9, 64)])
    func linearMatchesFloat64Sum(shape: (tokens: Int, out: Int, in: Int)) {
        let (tokens, outFeatures, inFeatures) = shape
        let x = Matrix(rows: tokens, cols: inFeatures, data: (0..<tokens * inFeatures).map { Float(($0 * 37) % 23) / 7 - 1.5 })
        let w = Matrix(rows: outFeatures, cols: inFeatures, data: (0..<outFeatures * inFeatures).map { Float(($0 * 53) % 29) / 9 - 1.6 })
        let bias = (0..<outFeatures).map { Float($0 % 5) - 2 }
        for threads in [1, 3] {
            let y = Kernels.linear(x, weight: w, bias: bias, threads: threads)
            #expect(y.rows == tokens && y.cols == outFeatures)
            for t in 0..<tokens {
                for o in 0..<outFeatures {
                    var exact = Double(bias[o])
                    for i in 0..<inFeatures { exact += Double(x.data[t * inFeatures + i]) * Double(w.data[o * inFeatures + i]) }
                    #expect(abs(Double(y.data[t * outFeatures + o]) - exact) <= 1e-4 * max(1, abs(exact)), "t \(t) o \(o)")
                }
            }
        }
    }
}
