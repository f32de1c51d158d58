import FineShardFormats

/// How a piece's source bytes become the output's (docs/SPEC.md §5, the manifest's `transform`): nil is a
/// plain byte copy. Both kinds write BF16 (the output tensor's dtype) and round to nearest even; the
/// arithmetic is ``BF16Cast``'s, which `verify --source` repeats from the source bytes.
public enum PieceTransform: Sendable, Hashable, Codable {
    /// `bf16(float32(x))` of an F32 or F16 source (`shard --dtype bf16 --cast-floats`).
    case cast(from: DType)
    /// FP8 block dequantization, DeepSeek's `fp8_cast_bf16.py` (`weight_dequant` in its `kernel.py`):
    /// `bf16(float32(w[i, j]) × float32(scale[i / block[0], j / block[1]]))` in source coordinates of the
    /// 2-D weight, so a piece that starts or ends inside a block uses that block's scale.
    case fp8BlockDequant(from: DType, scale: String, scaleDType: DType, block: [Int])

    /// The transform kinds this version reads; a manifest naming another is refused.
    public static let knownKinds = ["cast", "fp8_block_dequant"]
    /// The dtype every transform writes.
    public static let outputDType = DType.bf16

    public var sourceDType: DType {
        switch self {
        case .cast(let from), .fp8BlockDequant(let from, _, _, _): from
        }
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case kind, scale, block
        case sourceDType = "source_dtype"
        case scaleDType = "scale_dtype"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let kind = try c.decode(String.self, forKey: .kind)
        func refuse(_ message: String) -> DecodingError {
            DecodingError.dataCorruptedError(forKey: .kind, in: c, debugDescription: "transform '\(kind)': " + message)
        }
        guard Self.knownKinds.contains(kind) else {
            throw refuse("unknown transform kind; this fineshard knows \(Self.knownKinds.joined(separator: ", "))")
        }
        let from = try c.decode(DType.self, forKey: .sourceDType)
        if kind == "cast" {
            guard from == .f32 || from == .f16 else { throw refuse("casts F32 or F16 to BF16, not \(from.rawValue)") }
            guard c.allKeys.count == 2 else { throw refuse("has fields other than kind and source_dtype") }
            self = .cast(from: from)
            return
        }
        let scale = try c.decode(String.self, forKey: .scale)
        let scaleDType = try c.decode(DType.self, forKey: .scaleDType)
        let block = try c.decode([Int].self, forKey: .block)
        guard from == .f8e4m3, [.f32, .bf16, .f16].contains(scaleDType), block.count == 2, block.allSatisfy({ $0 > 0 }) else {
            throw refuse("needs an F8_E4M3 source, an F32/BF16/F16 scale and two positive block sizes")
        }
        self = .fp8BlockDequant(from: from, scale: scale, scaleDType: scaleDType, block: block)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .cast(let from):
            try c.encode("cast", forKey: .kind)
            try c.encode(from, forKey: .sourceDType)
        case .fp8BlockDequant(let from, let scale, let scaleDType, let block):
            try c.encode("fp8_block_dequant", forKey: .kind)
            try c.encode(from, forKey: .sourceDType)
            try c.encode(scale, forKey: .scale)
            try c.encode(scaleDType, forKey: .scaleDType)
            try c.encode(block, forKey: .block)
        }
    }

    /// The scale tensor a dequantization reads besides its source, if any.
    public var scaleTensor: String? {
        if case .fp8BlockDequant(_, let scale, _, _) = self { scale } else { nil }
    }
}
