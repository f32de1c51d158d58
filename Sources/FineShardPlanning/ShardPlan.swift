import Crypto
import FineShardFormats
import FineShardModel
import FineShardSystem
import Foundation

/// One source region copied into an output tensor: the region `ranges` of tensor `source` lands at
/// offset `at` (one entry per dimension). The same type is the manifest's piece (docs/SPEC.md §5).
/// A piece may land in an output of more dimensions than its source: the extra leading output
/// dimensions have extent 1 in its ``box`` (a routed expert's `[I, H]` weight in `--layout vllm`'s
/// stacked `[experts, 2I, H]` `w13_weight` lands at `[slot, row, 0]`).
/// A fill piece (`fill` set, no `source`) has no source region: it writes the constant `fill`, in the
/// output's dtype, over a box of the extents `ranges` (from 0) at `at` — the attention scales of
/// `--layout vllm`, which vLLM's state dict holds and a checkpoint without them lacks. Verification
/// checks its value; coverage and `merge` ignore it. Manifests without fill pieces read as before.
public struct Piece: Codable, Sendable, Hashable {
    public var source: String
    public var region: Region
    public var at: [Int]
    /// The constant of a fill piece; nil for a source piece.
    public var fill: Double?
    /// How the source bytes become the output's (`shard --dtype bf16`); nil for a plain copy.
    public var transform: PieceTransform?

    enum CodingKeys: String, CodingKey { case source, ranges, at, fill, transform }

    public init(source: String, region: Region, at: [Int], transform: PieceTransform? = nil) {
        self.source = source
        self.region = region
        self.at = at
        self.transform = transform
    }

    /// A fill piece: `value` over the box `shape` at `at`.
    public init(fill value: Double, shape: [Int], at: [Int]) {
        self.source = ""
        self.region = Region(whole: shape)
        self.at = at
        self.fill = value
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        fill = try c.decodeIfPresent(Double.self, forKey: .fill)
        transform = try c.decodeIfPresent(PieceTransform.self, forKey: .transform)
        source = fill == nil ? try c.decode(String.self, forKey: .source) : ""
        at = try c.decode([Int].self, forKey: .at)
        let pairs = try c.decode([[Int]].self, forKey: .ranges)
        guard pairs.allSatisfy({ $0.count == 2 && $0[0] >= 0 && $0[0] <= $0[1] }), pairs.count <= at.count,
            fill == nil || pairs.count == at.count
        else {
            throw DecodingError.dataCorruptedError(
                forKey: .ranges, in: c, debugDescription: "piece of '\(source)' has malformed ranges \(pairs)")
        }
        if let fill {
            guard fill.isFinite, c.contains(.source) == false, transform == nil, pairs.allSatisfy({ $0[0] == 0 }) else {
                throw DecodingError.dataCorruptedError(
                    forKey: .fill, in: c, debugDescription: "fill piece \(fill) must be finite, name no source and have ranges from 0")
            }
        }
        region = Region(pairs.map { $0[0]..<$0[1] })
    }

    /// The box the piece fills in its output tensor, in the output's dimensions: the region's shape at
    /// `at`, with extent 1 in leading output dimensions the region lacks. A region with more dimensions
    /// than `at` (the reverse of a stacked piece, as `merge` reads one back) drops its leading ones,
    /// which have extent 1.
    public var box: Region {
        let shape = region.shape
        let dims = at.count >= shape.count ? [Int](repeating: 1, count: at.count - shape.count) + shape : Array(shape.suffix(at.count))
        return Region(zip(at, dims).map { $0..<$0 + $1 })
    }

    /// The little-endian bytes of one element of a fill piece in `dtype` (float types only; nil for
    /// a source piece or another dtype). BF16 rounds to nearest even.
    public func fillElement(_ dtype: DType) -> [UInt8]? {
        guard let fill else { return nil }
        func bytes<T: FixedWidthInteger>(_ bits: T) -> [UInt8] { withUnsafeBytes(of: bits.littleEndian) { Array($0) } }
        switch dtype {
        case .f64: return bytes(fill.bitPattern)
        case .f32: return bytes(Float(fill).bitPattern)
        case .f16: return bytes(Float16(Float(fill)).bitPattern)
        case .bf16:
            let b = Float(fill).bitPattern
            return bytes(UInt16(truncatingIfNeeded: (b + 0x7FFF + ((b >> 16) & 1)) >> 16))
        default: return nil
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        if let fill { try c.encode(fill, forKey: .fill) } else { try c.encode(source, forKey: .source) }
        try c.encode(region.ranges.map { [$0.lowerBound, $0.upperBound] }, forKey: .ranges)
        try c.encode(at, forKey: .at)
        try c.encodeIfPresent(transform, forKey: .transform)
    }
}

/// An output tensor of one rank: its name, file, type and shape, and the pieces that make it.
public struct PlannedTensor: Codable, Sendable, Hashable {
    public var name: String
    public var file: String
    public var dtype: DType
    public var shape: [Int]
    public var pieces: [Piece]

    public var spec: TensorSpec { TensorSpec(name: name, dtype: dtype, shape: shape) }
    public var byteCount: Int { shape.reduce(1, *) * dtype.size }

    package init(name: String, file: String, dtype: DType, shape: [Int], pieces: [Piece]) {
        self.name = name
        self.file = file
        self.dtype = dtype
        self.shape = shape
        self.pieces = pieces
    }

    enum CodingKeys: String, CodingKey { case name, file, dtype, shape, pieces }

    /// Decodes the manifest's tensor; pieces with a transform need the transform's output dtype.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            name: try c.decode(String.self, forKey: .name), file: try c.decode(String.self, forKey: .file),
            dtype: try c.decode(DType.self, forKey: .dtype), shape: try c.decode([Int].self, forKey: .shape),
            pieces: try c.decode([Piece].self, forKey: .pieces))
        if dtype != PieceTransform.outputDType, pieces.contains(where: { $0.transform != nil }) {
            throw DecodingError.dataCorruptedError(
                forKey: .pieces, in: c,
                debugDescription:
                    "tensor '\(name)' is \(dtype.rawValue) but has transformed pieces, which write \(PieceTransform.outputDType.rawValue)")
        }
    }
}

/// What one rank holds.
public struct RankPlan: Sendable, Hashable {
    public var rank: Int
    public var dpRank: Int
    public var tpRank: Int
    /// Output files of the rank, in part order.
    public var files: [String]
    /// Output tensors, sorted by name.
    public var tensors: [PlannedTensor]

    public var byteCount: Int { tensors.reduce(0) { $0 + $1.byteCount } }
}

/// Where a source tensor goes.
public enum Placement: Sendable, Hashable {
    /// Whole on every rank.
    case replicated
    /// Cut along one dimension on every rank.
    case split(Split)
    /// Whole on one rank only (a routed expert under expert parallelism).
    case owned(rank: Int)
    /// Not from the source: the constant on every rank (a fill piece; the rule's `source` names the
    /// output and gives its dtype and shape).
    case constant(Double)
}

/// The rule for one output contribution: source tensor, role, placement and output name.
/// Several rules with one `output` are fused along dimension 0 in `fusionIndex` order. Rules with a
/// `stack` slot (routed experts in `--layout vllm`) make a stacked output: each slot's fused parts
/// form one entry of a new leading dimension, holding the slots the rank has, in slot order.
public struct TensorRule: Sendable, Hashable {
    public var source: TensorSpec
    public var role: TensorRole
    public var placement: Placement
    public var output: String
    public var fusionIndex: Int
    public var stack: Int?
    /// How the source bytes become the output's (`--dtype bf16`); nil for a plain copy.
    public var transform: PieceTransform?

    public init(
        source: TensorSpec, role: TensorRole, placement: Placement, output: String, fusionIndex: Int, stack: Int? = nil,
        transform: PieceTransform? = nil
    ) {
        self.source = source
        self.role = role
        self.placement = placement
        self.output = output
        self.fusionIndex = fusionIndex
        self.stack = stack
        self.transform = transform
    }

    /// The dtype the rule writes: the source's, or the transform's output.
    public var dtype: DType { transform == nil ? source.dtype : PieceTransform.outputDType }
}

/// The plan: for every rank, which output tensors it holds and which source pieces make each.
/// Pure data computed without I/O (``ShardPlanner``); `shard` carries it out and the manifest
/// records it.
public struct ShardPlan: Sendable {
    public let parallel: ParallelConfig
    public let topology: RankTopology
    public let model: ModelFacts
    /// The source tensor table (name, dtype, shape, file, offset), sorted by name.
    public let sources: [TensorInfo]
    /// One rule per output contribution, sorted by output name then fusion index.
    public let rules: [TensorRule]
    /// Tensors no rule knows (replicated).
    public let unknown: [String]
    /// Runtime conditions of vllm-ascend that do not change the layout.
    public let warnings: [String]
    /// Things that were ignored (unknown `--additional-config` keys).
    public let notes: [String]
    /// ``fingerprint(model:parallel:sources:)`` of the plan's facts, configuration and sources.
    public let fingerprint: String

    /// A plan of `rules`; `fingerprint` is computed when not given.
    package init(
        parallel: ParallelConfig, topology: RankTopology, model: ModelFacts, sources: [TensorInfo], rules: [TensorRule],
        unknown: [String], warnings: [String], notes: [String], fingerprint: String? = nil
    ) {
        self.parallel = parallel
        self.topology = topology
        self.model = model
        self.sources = sources
        self.rules = rules
        self.unknown = unknown
        self.warnings = warnings
        self.notes = notes
        self.fingerprint = fingerprint ?? Self.fingerprint(model: model, parallel: parallel, sources: sources)
    }

    /// SHA-256 of the canonical JSON of (source tensor table, model facts, parallel configuration):
    /// `{"model":…,"parallel":…,"sources":[{"dtype":…,"file":…,"name":…,"offset":…,"shape":[…]},…]}`
    /// with sorted keys and no spaces. The tensor table is serialized by hand: it can hold
    /// hundreds of thousands of entries, and a generic encoder would take seconds.
    package static func fingerprint(model: ModelFacts, parallel: ParallelConfig, sources: [TensorInfo]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var hasher = SHA256()
        hasher.update(data: Data(#"{"model":"#.utf8))
        hasher.update(data: try! encoder.encode(model))
        hasher.update(data: Data(#","parallel":"#.utf8))
        hasher.update(data: try! encoder.encode(parallel))
        hasher.update(data: Data(#","sources":["#.utf8))
        var chunk: [UInt8] = []
        chunk.reserveCapacity(1 << 17)
        for (i, t) in sources.enumerated() {
            if i > 0 { chunk.append(UInt8(ascii: ",")) }
            chunk.append(contentsOf: #"{"dtype":""#.utf8)
            chunk.append(contentsOf: t.dtype.rawValue.utf8)
            chunk.append(contentsOf: #"","file":"#.utf8)
            Self.appendJSON(t.file, to: &chunk)
            chunk.append(contentsOf: #","name":"#.utf8)
            Self.appendJSON(t.name, to: &chunk)
            chunk.append(contentsOf: #","offset":"#.utf8)
            chunk.append(contentsOf: (t.offset.map(String.init) ?? "null").utf8)
            chunk.append(contentsOf: #","shape":["#.utf8)
            for (k, d) in t.shape.enumerated() {
                if k > 0 { chunk.append(UInt8(ascii: ",")) }
                chunk.append(contentsOf: String(d).utf8)
            }
            chunk.append(contentsOf: "]}".utf8)
            if chunk.count > 1 << 16 {
                chunk.withUnsafeBytes { hasher.update(bufferPointer: $0) }
                chunk.removeAll(keepingCapacity: true)
            }
        }
        chunk.append(contentsOf: "]}".utf8)
        chunk.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        return hasher.finalize().hexString
    }

    /// Appends `s` as a JSON string literal (``SafetensorsHeader/jsonString(_:)``): its bytes as they
    /// are when nothing needs escaping, as almost every tensor and file name.
    private static func appendJSON(_ s: String, to out: inout [UInt8]) {
        let start = out.count
        out.append(UInt8(ascii: "\""))
        out.append(contentsOf: s.utf8)
        if out[(start + 1)...].contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            out.removeSubrange(start...)
            out.append(contentsOf: SafetensorsHeader.jsonString(s).utf8)
        } else {
            out.append(UInt8(ascii: "\""))
        }
    }

    /// The file extension of the output format.
    public var fileExtension: String { parallel.fileExtension }

    /// The cut a split rule makes for `rank`.
    func cut(_ split: Split, of source: TensorSpec, rank: Int) -> DimCut {
        split.cut(index: topology.index(split.group, rank: rank), of: topology.size(split.group), length: source.shape[split.dim])
    }

    /// The output shape and pieces of one rule on `rank`, or nil when the rank does not hold it.
    func contribution(_ rule: TensorRule, rank: Int) -> (shape: [Int], pieces: [Piece])? {
        let whole = Region(whole: rule.source.shape)
        let zero = [Int](repeating: 0, count: rule.source.shape.count)
        switch rule.placement {
        case .replicated:
            return (rule.source.shape, [Piece(source: rule.source.name, region: whole, at: zero, transform: rule.transform)])
        case .owned(let owner):
            return owner == rank
                ? (rule.source.shape, [Piece(source: rule.source.name, region: whole, at: zero, transform: rule.transform)]) : nil
        case .constant(let value):
            return (rule.source.shape, [Piece(fill: value, shape: rule.source.shape, at: zero)])
        case .split(let split):
            let c = cut(split, of: rule.source, rank: rank)
            var shape = rule.source.shape
            shape[c.dim] = c.length
            let pieces = c.segments.map { s in
                var region = whole
                region.ranges[c.dim] = s.source
                var at = zero
                at[c.dim] = s.at
                return Piece(source: rule.source.name, region: region, at: at, transform: rule.transform)
            }
            return (shape, pieces)
        }
    }

    /// Everything rank `rank` holds, with output files assigned (parts cut at `maxFileSize`).
    public func rank(_ rank: Int) -> RankPlan {
        var tensors: [PlannedTensor] = []
        var i = 0
        while i < rules.count {
            var j = i
            while j < rules.count && rules[j].output == rules[i].output { j += 1 }
            var shape: [Int]?
            var pieces: [Piece] = []
            if rules[i].stack != nil {
                // One entry of the leading dimension per stacked slot the rank holds, in slot order.
                var k = i
                var slots = 0
                while k < j {
                    var l = k
                    while l < j && rules[l].stack == rules[k].stack { l += 1 }
                    if let (partShape, partPieces) = fused(rules[k..<l], rank: rank) {
                        pieces += partPieces.map { p in
                            var q = p
                            q.at = [slots] + p.at
                            return q
                        }
                        shape = [slots + 1] + partShape
                        slots += 1
                    }
                    k = l
                }
            } else if let (partShape, partPieces) = fused(rules[i..<j], rank: rank) {
                shape = partShape
                pieces = partPieces
            }
            if let shape {
                tensors.append(PlannedTensor(name: rules[i].output, file: "", dtype: rules[i].dtype, shape: shape, pieces: pieces))
            }
            i = j
        }
        let files = assignFiles(&tensors, rank: rank)
        return RankPlan(rank: rank, dpRank: topology.dpRank(rank), tpRank: topology.tpRank(rank), files: files, tensors: tensors)
    }

    /// The shape and pieces of `rules`' contributions on `rank`, fused along dimension 0; nil when the
    /// rank holds none.
    func fused(_ rules: ArraySlice<TensorRule>, rank: Int) -> (shape: [Int], pieces: [Piece])? {
        var shape: [Int]?
        var pieces: [Piece] = []
        for rule in rules {
            guard let (partShape, partPieces) = contribution(rule, rank: rank) else { continue }
            if var s = shape {
                let offset = s[0]
                pieces += partPieces.map { p in
                    var q = p
                    q.at[0] += offset
                    return q
                }
                s[0] += partShape[0]
                shape = s
            } else {
                shape = partShape
                pieces = partPieces
            }
        }
        return shape.map { ($0, pieces) }
    }

    /// Packs tensors (in name order) into parts no larger than `maxFileSize` bytes of data (a
    /// tensor larger than that gets a part of its own), as vLLM's `ShardedStateLoader.save_model` does.
    func assignFiles(_ tensors: inout [PlannedTensor], rank: Int) -> [String] {
        let parts = PartPacking.parts(of: tensors.map(\.byteCount), maxBytes: parallel.maxFileSize)
        let files = (0..<(parts.last.map { $0 + 1 } ?? 0)).map { fileName(rank: rank, part: $0) }
        for k in tensors.indices { tensors[k].file = files[parts[k]] }
        return files
    }

    /// The output file name of `rank`'s part `part`, from `--file-pattern`.
    public func fileName(rank: Int, part: Int) -> String { parallel.fileName(rank: rank, part: part) }

    /// Output bytes of every rank, computed from shapes alone (no pieces built): split shards
    /// have one length for every index, so only owned tensors differ between ranks.
    /// `component`: only the rules of that component's tensors.
    public func bytesPerRank(topology: RankTopology? = nil, rules subset: [TensorRule]? = nil, of component: Component? = nil) -> [Int] {
        let topology = topology ?? self.topology
        var shared = 0
        var perRank = [Int](repeating: 0, count: topology.worldSize)
        let list = subset ?? rules
        // By index: the component is read without copying every rule.
        for k in list.indices where component == nil || RankTopology.component(of: list[k].role.kind) == component {
            let rule = list[k]
            switch rule.placement {
            case .replicated, .constant: shared += rule.source.shape.reduce(1, *) * rule.dtype.size
            case .owned(let owner): perRank[owner] += rule.source.shape.reduce(1, *) * rule.dtype.size
            case .split(let split):
                var shape = rule.source.shape
                shape[split.dim] = split.cut(index: 0, of: topology.size(split.group), length: shape[split.dim]).length
                shared += shape.reduce(1, *) * rule.dtype.size
            }
        }
        return perRank.map { $0 + shared }
    }
}
