/// A cut of one dimension of a tensor for one rank: the rank's length along `dim`, and which
/// source ranges of that dimension land where. Output positions no segment covers are zero
/// (vocab padding).
public struct DimCut: Sendable, Hashable {
    public struct Segment: Sendable, Hashable {
        public var source: Range<Int>
        public var at: Int
    }

    public var dim: Int
    public var length: Int
    public var segments: [Segment]
}

/// How a tensor is cut along one dimension over a group (docs/SPEC.md §4). Pure arithmetic: ``cut(index:of:)``
/// gives shard `index` of `n`.
public struct Split: Sendable, Hashable {
    public indirect enum Scheme: Sendable, Hashable {
        /// `length / n` consecutive positions per shard (vLLM `ColumnParallelLinear` / `RowParallelLinear`).
        case even
        /// Vocab-parallel rows: the table of `rows` is zero-padded to `padded` rows and shard `i`
        /// holds rows `[i·padded/n, (i+1)·padded/n)` (vLLM `VocabParallelEmbedding._get_indices`).
        case vocab(rows: Int, padded: Int)
        /// Separate k or v projection: `heads` kv heads of `headSize`, split when n ≤ heads and
        /// replicated over `n / heads` ranks otherwise, rank t holding head `t / (n / heads)`
        /// (vLLM `QKVParallelLinear`, `num_kv_head_replicas`).
        case kvHeads(heads: Int, headSize: Int)
        /// Fused `[q; k; v]` (GPT-2 `c_attn`, a pre-fused `qkv_proj`): q heads split evenly, kv
        /// heads as ``kvHeads(heads:headSize:)``; the shard is `[q_r; k_r; v_r]`.
        case qkv(heads: Int, kvHeads: Int, headSize: Int)
        /// Fused equal-split segments (`gate_up_proj` = `[gate; up]`): each split evenly, the shard is
        /// `[seg0_r; seg1_r; …]` (vLLM `MergedColumnParallelLinear`).
        case segments([Int])
        /// FP8 block scales: one scale per `block` positions of a weight of `weightLength` along the
        /// cut dimension, cut where the weight is cut.
        case blocks(of: Scheme, weightLength: Int, block: Int)
    }

    public var dim: Int
    public var group: GroupKind
    public var scheme: Scheme

    public init(dim: Int, group: GroupKind, scheme: Scheme) {
        self.dim = dim
        self.group = group
        self.scheme = scheme
    }

    /// Shard `index` of `n` of a dimension of `length` positions.
    public func cut(index: Int, of n: Int, length: Int) -> DimCut {
        let (outLength, segments) = Self.segments(scheme, index: index, of: n, length: length)
        return DimCut(dim: dim, length: outLength, segments: segments)
    }

    static func segments(_ scheme: Scheme, index i: Int, of n: Int, length: Int) -> (Int, [DimCut.Segment]) {
        switch scheme {
        case .even:
            let per = length / n
            return (per, [DimCut.Segment(source: i * per..<(i + 1) * per, at: 0)])
        case .vocab(let rows, let padded):
            let per = padded / n
            let start = i * per
            let stop = min((i + 1) * per, rows)
            return (per, start < stop ? [DimCut.Segment(source: start..<stop, at: 0)] : [])
        case .kvHeads(let heads, let headSize):
            if n <= heads {
                let per = heads / n * headSize
                return (per, [DimCut.Segment(source: i * per..<(i + 1) * per, at: 0)])
            }
            let head = i / (n / heads)
            return (headSize, [DimCut.Segment(source: head * headSize..<(head + 1) * headSize, at: 0)])
        case .qkv(let heads, let kvHeads, let headSize):
            let (qLength, q) = segments(.even, index: i, of: n, length: heads * headSize)
            let (kvLength, kv) = segments(.kvHeads(heads: kvHeads, headSize: headSize), index: i, of: n, length: kvHeads * headSize)
            let k = kv.map { DimCut.Segment(source: $0.source.shifted(by: heads * headSize), at: qLength) }
            let v = kv.map { DimCut.Segment(source: $0.source.shifted(by: (heads + kvHeads) * headSize), at: qLength + kvLength) }
            return (qLength + 2 * kvLength, q + k + v)
        case .segments(let lengths):
            var out: [DimCut.Segment] = []
            var sourceStart = 0
            var at = 0
            for l in lengths {
                let per = l / n
                out.append(DimCut.Segment(source: sourceStart + i * per..<sourceStart + (i + 1) * per, at: at))
                sourceStart += l
                at += per
            }
            return (at, out)
        case .blocks(let weightScheme, let weightLength, let block):
            let (weightOut, weightSegments) = segments(weightScheme, index: i, of: n, length: weightLength)
            let blocks = weightSegments.map {
                DimCut.Segment(source: $0.source.lowerBound / block..<($0.source.upperBound + block - 1) / block, at: $0.at / block)
            }
            return ((weightOut + block - 1) / block, blocks)
        }
    }

    /// The positions of the weight dimension where shards start or stop, for alignment checks.
    static func boundaries(_ scheme: Scheme, of n: Int, length: Int) -> [Int] {
        (0..<n).flatMap { i in segments(scheme, index: i, of: n, length: length).1.flatMap { [$0.source.lowerBound, $0.source.upperBound] }
        }
    }
}

extension Range<Int> {
    func shifted(by offset: Int) -> Range<Int> { lowerBound + offset..<upperBound + offset }
}
