/// The element types fineshard reads and writes (docs/SPEC.md §3), spelled as safetensors spells them.
///
/// Sharding is byte-level, so most of fineshard only needs ``size``; the forward check converts
/// to Float32 through ``toFloat32(_:count:into:)``.
public enum DType: String, CaseIterable, Codable, Sendable, Comparable {
    case f64 = "F64"
    case f32 = "F32"
    case f16 = "F16"
    case bf16 = "BF16"
    case f8e4m3 = "F8_E4M3"
    case f8e5m2 = "F8_E5M2"
    case i64 = "I64"
    case i32 = "I32"
    case i16 = "I16"
    case i8 = "I8"
    case u8 = "U8"
    case bool = "BOOL"

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .f64, .i64: 8
        case .f32, .i32: 4
        case .f16, .bf16, .i16: 2
        case .f8e4m3, .f8e5m2, .i8, .u8, .bool: 1
        }
    }

    public var isFloatingPoint: Bool {
        switch self {
        case .f64, .f32, .f16, .bf16, .f8e4m3, .f8e5m2: true
        default: false
        }
    }

    /// Orders dtypes as the reference safetensors writer lays tensors out: larger elements first,
    /// so that every tensor of an 8-byte-aligned data area is aligned to its element size.
    public static func < (a: DType, b: DType) -> Bool {
        a.size != b.size ? a.size > b.size : a.rawValue < b.rawValue
    }

    /// Converts `count` little-endian elements starting at `source` to Float32.
    public func toFloat32(_ source: UnsafeRawPointer, count: Int, into out: UnsafeMutablePointer<Float>) {
        switch self {
        case .f64:
            for i in 0..<count { out[i] = Float(source.loadUnaligned(fromByteOffset: i * 8, as: Double.self)) }
        case .f32:
            for i in 0..<count { out[i] = source.loadUnaligned(fromByteOffset: i * 4, as: Float.self) }
        case .f16:
            for i in 0..<count { out[i] = DType.halfToFloat(source.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)) }
        case .bf16:
            for i in 0..<count {
                let bits = UInt32(source.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)) << 16
                out[i] = Float(bitPattern: bits)
            }
        case .f8e4m3:
            for i in 0..<count { out[i] = DType.e4m3ToFloat(source.load(fromByteOffset: i, as: UInt8.self)) }
        case .f8e5m2:
            for i in 0..<count { out[i] = DType.e5m2ToFloat(source.load(fromByteOffset: i, as: UInt8.self)) }
        case .i64:
            for i in 0..<count { out[i] = Float(source.loadUnaligned(fromByteOffset: i * 8, as: Int64.self)) }
        case .i32:
            for i in 0..<count { out[i] = Float(source.loadUnaligned(fromByteOffset: i * 4, as: Int32.self)) }
        case .i16:
            for i in 0..<count { out[i] = Float(source.loadUnaligned(fromByteOffset: i * 2, as: Int16.self)) }
        case .i8:
            for i in 0..<count { out[i] = Float(source.load(fromByteOffset: i, as: Int8.self)) }
        case .u8, .bool:
            for i in 0..<count { out[i] = Float(source.load(fromByteOffset: i, as: UInt8.self)) }
        }
    }

    /// IEEE 754 binary16 to binary32, subnormals, infinities and NaN included.
    static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h >> 15) << 31
        let exponent = Int((h >> 10) & 0x1F)
        let mantissa = UInt32(h & 0x3FF)
        if exponent == 0x1F { return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13)) }
        if exponent == 0 {
            let magnitude = Float(mantissa) * 0x1p-24
            return sign == 0 ? magnitude : -magnitude
        }
        return Float(bitPattern: sign | UInt32(exponent + 112) << 23 | (mantissa << 13))
    }

    /// OCP FP8 E4M3FN (PyTorch `float8_e4m3fn`): bias 7, no infinities, only S.1111.111 is NaN.
    static func e4m3ToFloat(_ b: UInt8) -> Float {
        let negative = b & 0x80 != 0
        let exponent = Int((b >> 3) & 0xF)
        let mantissa = Float(b & 0x7)
        let value: Float
        if exponent == 0xF && b & 0x7 == 0x7 {
            value = .nan
        } else if exponent == 0 {
            value = mantissa / 8 * 0x1p-6
        } else {
            value = (1 + mantissa / 8) * Float(sign: .plus, exponent: exponent - 7, significand: 1)
        }
        return negative ? -value : value
    }

    /// OCP FP8 E5M2 (PyTorch `float8_e5m2`): the top byte of an IEEE binary16.
    static func e5m2ToFloat(_ b: UInt8) -> Float { halfToFloat(UInt16(b) << 8) }
}
