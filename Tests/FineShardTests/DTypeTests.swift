import Testing

@testable import FineShard

@Suite struct DTypeTests {
    @Test func everySpecDTypeHasItsSize() {
        let sizes: [DType: Int] = [
            .f64: 8, .f32: 4, .f16: 2, .bf16: 2, .f8e4m3: 1, .f8e5m2: 1, .i64: 8, .i32: 4, .i16: 2, .i8: 1, .u8: 1, .bool: 1,
        ]
        #expect(Set(DType.allCases) == Set(sizes.keys))
        for (d, s) in sizes { #expect(d.size == s) }
    }

    func convert<T>(_ dtype: DType, _ values: [T]) -> [Float] {
        var out = [Float](repeating: .infinity, count: values.count)
        values.withUnsafeBytes { raw in
            out.withUnsafeMutableBufferPointer { dtype.toFloat32(raw.baseAddress!, count: values.count, into: $0.baseAddress!) }
        }
        return out
    }

    @Test func halfPrecisionBitPatternsConvertExactly() {
        let bits: [UInt16] = [0x3C00, 0xC000, 0x7BFF, 0x0001, 0x0400, 0x7C00, 0x0000, 0x8000, 0x3555]
        let out = convert(.f16, bits)
        #expect(out[0] == 1 && out[1] == -2 && out[2] == 65504)
        #expect(out[3] == 0x1p-24 && out[4] == 0x1p-14 && out[5] == .infinity)
        #expect(out[6] == 0 && out[7].sign == .minus && out[7] == 0)
        #expect(out[8] == Float(Float16(bitPattern: 0x3555)))
        #expect(convert(.f16, [UInt16(0x7E00)])[0].isNaN)
    }

    @Test func bfloat16IsTheTopHalfOfAFloat32() {
        let out = convert(.bf16, [UInt16(0x3F80), 0xC049, 0x7F80, 0x0001])
        #expect(out[0] == 1 && out[1] == Float(bitPattern: 0xC049_0000) && out[2] == .infinity)
        #expect(out[3] == Float(bitPattern: 0x0001_0000))
    }

    @Test func fp8E4M3MatchesTheOCPTable() {
        // 0x38 = 1.0, 0x7E = 448 (max), 0x01 = 2^-9 (min subnormal), 0xB8 = -1, 0x7F = NaN.
        let out = convert(.f8e4m3, [UInt8(0x38), 0x7E, 0x01, 0xB8, 0x40])
        #expect(out == [1, 448, 0x1p-9, -1, 2])
        #expect(convert(.f8e4m3, [UInt8(0x7F)])[0].isNaN)
        #expect(convert(.f8e4m3, [UInt8(0xFF)])[0].isNaN)
    }

    @Test func fp8E5M2MatchesTheOCPTable() {
        // 0x3C = 1.0, 0x7B = 57344 (max), 0x01 = 2^-16, 0x7C = inf.
        let out = convert(.f8e5m2, [UInt8(0x3C), 0x7B, 0x01, 0x7C, 0xC0])
        #expect(out == [1, 57344, 0x1p-16, .infinity, -2])
    }

    @Test func integerAndWideFloatTypesConvertByValue() {
        #expect(convert(.f64, [1.5, -2.25]) == [1.5, -2.25])
        #expect(convert(.f32, [Float(3.5)]) == [3.5])
        #expect(convert(.i64, [Int64(-7), 1 << 40]) == [-7, 0x1p40])
        #expect(convert(.i32, [Int32(-3)]) == [-3])
        #expect(convert(.i16, [Int16(-300)]) == [-300])
        #expect(convert(.i8, [Int8(-128), 127]) == [-128, 127])
        #expect(convert(.u8, [UInt8(255)]) == [255])
        #expect(convert(.bool, [UInt8(1), 0]) == [1, 0])
    }
}
