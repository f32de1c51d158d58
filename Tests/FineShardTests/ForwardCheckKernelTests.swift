import FineShardFormats
import Foundation
import Testing

@testable import FineShardVerification

/// `Kernels.linear` against a float64 sum on both paths (the portable Swift tile and, on a CPU with
/// AVX2 + FMA, the native C kernel) and both weight types (float32, and bf16 widened in the kernel),
/// on shapes that leave every remainder path (odd tokens, rows past a multiple of 4 and of the 64-row
/// blocks, inner widths not a multiple of 4, 8 or 16) and with more threads than blocks.
@Suite("forward-check kernels")
struct ForwardCheckKernelTests {
    static let shapes = [(1, 1, 1), (3, 7, 5), (2, 67, 17), (5, 130, 4), (8, 9, 64), (3, 6, 35), (4, 5, 48)]

    @Test(arguments: shapes)
    func linearMatchesFloat64Sum(shape: (tokens: Int, out: Int, in: Int)) {
        let (tokens, outFeatures, inFeatures) = shape
        let x = Matrix(rows: tokens, cols: inFeatures, data: (0..<tokens * inFeatures).map { Float(($0 * 37) % 23) / 7 - 1.5 })
        let values = (0..<outFeatures * inFeatures).map { Float(($0 * 53) % 29) / 9 - 1.6 }
        let bits = values.map(BF16Cast.bits)
        let weights = [
            (Weight(Matrix(rows: outFeatures, cols: inFeatures, data: values)), values),
            (Weight(rows: outFeatures, cols: inFeatures, bf16: bits), bits.map { Float(bitPattern: UInt32($0) << 16) }),
        ]
        let bias = (0..<outFeatures).map { Float($0 % 5) - 2 }
        let paths = Kernels.nativeAvailable ? Kernels.Path.allCases : [.portable]
        for (w, exactWeights) in weights {
            for path in paths {
                for threads in [1, 3] {
                    let y = Kernels.linear(x, weight: w, bias: bias, threads: threads, path: path)
                    #expect(y.rows == tokens && y.cols == outFeatures)
                    for t in 0..<tokens {
                        for o in 0..<outFeatures {
                            var exact = Double(bias[o])
                            for i in 0..<inFeatures {
                                exact += Double(x.data[t * inFeatures + i]) * Double(exactWeights[o * inFeatures + i])
                            }
                            #expect(abs(Double(y.data[t * outFeatures + o]) - exact) <= 1e-4 * max(1, abs(exact)), "\(path) t \(t) o \(o)")
                        }
                    }
                }
            }
        }
    }

    /// `FINESHARD_KERNEL=portable` forces the Swift path (to test it on an AVX2 machine); the native
    /// path is the default wherever the CPU has AVX2 and FMA.
    @Test func defaultPathFollowsTheCPU() {
        let forced = ProcessInfo.processInfo.environment["FINESHARD_KERNEL"] == "portable"
        #expect(Kernels.defaultPath == (Kernels.nativeAvailable && !forced ? .native : .portable))
    }
}
