import CKernels
import Crypto
import FineShardExecution
import FineShardFormats
import FineShardOutput
import FineShardPlanning
import Foundation
import Synchronization

extension ForwardChecker {
    /// Where a simulated rank reads its weights: the dense source (one rank holding everything) or the
    /// shard files of a manifest. Tensors are read when a stage needs them and released after it, so
    /// memory holds one layer's weights, not the model.
    protocol Weights: Sendable {
        /// The shape of tensor `name` on `rank`, nil when the rank holds no such tensor.
        func shape(_ name: String, rank: Int) throws -> [Int]?
        /// Rows `rows` of dimension 0 (all of it when nil) of `name` on `rank`, as float32.
        func read(_ name: String, rank: Int, rows: Range<Int>?) throws -> [Float]
        /// The same rows as stored BF16 bits when the rank's tensor is BF16 (for the dense source: BF16, or
        /// rounded to BF16 because the shards are cast), so a linear computes on them without a float32
        /// copy; nil otherwise (then ``read(_:rank:rows:)`` gives float32).
        func readBF16(_ name: String, rank: Int, rows: Range<Int>?) throws -> [UInt16]?
        /// The source row that row 0 of the rank's tensor holds, from the manifest's pieces; nil when
        /// no piece says (a shard that is all padding, or the dense source).
        func firstSourceRow(_ name: String, rank: Int) -> Int?
        /// Whether the shards hold `name` rounded to BF16 (`shard --dtype bf16`), so the dense pass rounds
        /// it too, after dequantizing.
        func roundsToBF16(_ name: String) -> Bool
    }
}

extension ForwardChecker.Weights {
    /// Rows `rows` of dimension 0 of `info` (all of it when nil) as stored, read into a fresh array of
    /// `T` (not zeroed first).
    static func stored<T: BitwiseCopyable>(_ checkpoint: Checkpoint, _ info: TensorInfo, rows: Range<Int>?, as: T.Type) throws -> [T] {
        var region = Region(whole: info.shape)
        if let rows, !region.ranges.isEmpty { region.ranges[0] = rows }
        let bytes = region.elementCount * info.dtype.size
        precondition(bytes % MemoryLayout<T>.stride == 0)
        return try [T](unsafeUninitializedCapacity: bytes / MemoryLayout<T>.stride) { b, initialized in
            if bytes > 0 {
                try checkpoint.read(info, region: region, into: UnsafeMutableRawBufferPointer(start: b.baseAddress, count: bytes))
            }
            initialized = bytes / MemoryLayout<T>.stride
        }
    }

    /// Stored values of `dtype` as float32 (DType.toFloat32: bf16, f16, f8 widen exactly), read by
    /// whichever of `f32`, `bf16` or `bytes` fits the dtype.
    static func floats(
        _ dtype: DType, f32: () throws -> [Float], bf16: () throws -> [UInt16], bytes: () throws -> [UInt8]
    ) rethrows -> [Float] {
        switch dtype {
        case .f32: return try f32()
        case .bf16: return widen(try bf16())
        default:
            let raw = try bytes()
            let count = raw.count / dtype.size
            return [Float](unsafeUninitializedCapacity: count) { b, initialized in
                raw.withUnsafeBytes { if count > 0 { dtype.toFloat32($0.baseAddress!, count: count, into: b.baseAddress!) } }
                initialized = count
            }
        }
    }

    /// Reads `name` of `checkpoint` as float32.
    static func floats(_ checkpoint: Checkpoint, _ info: TensorInfo, rows: Range<Int>?) throws -> [Float] {
        try floats(
            info.dtype, f32: { try stored(checkpoint, info, rows: rows, as: Float.self) },
            bf16: { try stored(checkpoint, info, rows: rows, as: UInt16.self) },
            bytes: { try stored(checkpoint, info, rows: rows, as: UInt8.self) })
    }
}

/// BF16 bits widened to float32 (exact).
func widen(_ bits: [UInt16]) -> [Float] {
    [Float](unsafeUninitializedCapacity: bits.count) { b, initialized in
        bits.withUnsafeBufferPointer { fs_bf16_to_f32($0.baseAddress, b.baseAddress, bits.count) }
        initialized = bits.count
    }
}

extension ForwardChecker {
    /// The dense source checkpoint as the weights of a single rank.
    struct SourceWeights: Weights {
        let checkpoint: Checkpoint
        /// The source tensors the manifest's pieces transform to BF16 (``Manifest/transformedSources``).
        var bf16: Set<String> = []

        func shape(_ name: String, rank: Int) throws -> [Int]? {
            checkpoint.contains(name) ? try checkpoint.tensor(name).shape : nil
        }

        func read(_ name: String, rank: Int, rows: Range<Int>?) throws -> [Float] {
            var values = try Self.floats(checkpoint, try checkpoint.tensor(name), rows: rows)
            if bf16.contains(name) { roundToBF16(&values) }
            return values
        }

        func readBF16(_ name: String, rank: Int, rows: Range<Int>?) throws -> [UInt16]? {
            let info = try checkpoint.tensor(name)
            if info.dtype == .bf16 { return try Self.stored(checkpoint, info, rows: rows, as: UInt16.self) }
            // Quantized weights are dequantized (then rounded) in float32 by the simulation.
            guard bf16.contains(name), info.dtype == .f32 || info.dtype == .f16 else { return nil }
            return try Self.floats(checkpoint, info, rows: rows).map(BF16Cast.bits)
        }

        func firstSourceRow(_ name: String, rank: Int) -> Int? { nil }

        func roundsToBF16(_ name: String) -> Bool { bf16.contains(name) }
    }

    /// The shard files of an output folder, each rank reading only the tensors its manifest entry lists
    /// (never the source).
    struct ShardWeights: Weights {
        let shards: ShardSet
        let tensors: [[String: PlannedTensor]]
        /// Every rank file's record, for its tensor hashes.
        let files: [String: Manifest.FileRecord]
        /// The tensors whose SHA-256 has been checked, their count and bytes.
        let hashes = HashLedger()
        /// Tensors being read ahead of the rank that will use them.
        let ahead = ReadAhead()
        /// How many ranks ahead a whole BF16 weight is read (0: none).
        var readAheadDepth = 0

        final class HashLedger: Sendable {
            struct State {
                var checked: Set<ShardSet.TensorKey> = []
                var tensors = 0
                var bytes = 0
                /// The last checked tensors' data by SHA-256 (at most `recentLimit` bytes): another rank's
                /// replica of a tensor (q/k/v under DP) with the same recorded hash is checked by comparing
                /// its bytes with them instead of hashing it again.
                var recent: [String: any Sendable] = [:]
                var recentOrder: [(digest: String, bytes: Int)] = []
            }
            let state = Mutex(State())
            static let recentLimit = 32 << 20

            func remember(_ digest: String, _ values: some Sendable, bytes: Int) {
                guard bytes <= Self.recentLimit else { return }
                state.withLock {
                    guard $0.recent[digest] == nil else { return }
                    $0.recent[digest] = values
                    $0.recentOrder.append((digest, bytes))
                    while $0.recentOrder.reduce(0, { $0 + $1.bytes }) > Self.recentLimit {
                        $0.recent[$0.recentOrder.removeFirst().digest] = nil
                    }
                }
            }
        }

        /// A whole BF16 tensor read (and checked) on another thread, for the rank that asks for it next.
        final class ReadAhead: Sendable {
            struct Key: Hashable {
                var name: String
                var rank: Int
            }
            final class Pending: @unchecked Sendable {
                let done = DispatchSemaphore(value: 0)
                /// Set once, before `done` is signalled.
                var result: Result<[UInt16], any Error>?
            }
            let pending = Mutex<[Key: Pending]>([:])

            /// The pending read of `key`, removed (with stale reads of the same tensor for earlier ranks).
            func take(_ key: Key) -> Pending? {
                pending.withLock { p in
                    for k in p.keys where k.name == key.name && k.rank < key.rank { p[k] = nil }
                    return p.removeValue(forKey: key)
                }
            }

            /// A new pending read of `key`, nil when it is already pending or too many are.
            func start(_ key: Key, limit: Int) -> Pending? {
                pending.withLock { p in
                    guard p[key] == nil, p.count < limit else { return nil }
                    let new = Pending()
                    p[key] = new
                    return new
                }
            }
        }

        init(folder: String, manifest: Manifest) {
            shards = ShardSet(folder: folder)
            var byRank = [[String: PlannedTensor]](repeating: [:], count: manifest.ranks.count)
            for r in manifest.ranks {
                byRank[r.rank] = Dictionary(r.tensors.map { ($0.name, $0) }) { a, _ in a }
            }
            tensors = byRank
            files = Dictionary(manifest.ranks.flatMap(\.files).map { ($0.name, $0) }) { a, _ in a }
        }

        func shape(_ name: String, rank: Int) throws -> [Int]? { tensors[rank][name]?.shape }

        func read(_ name: String, rank: Int, rows: Range<Int>?) throws -> [Float] {
            let dtype = try planned(name, rank: rank).dtype
            return try Self.floats(
                dtype, f32: { try checkedRead(name, rank: rank, rows: rows, as: Float.self) },
                bf16: { try checkedRead(name, rank: rank, rows: rows, as: UInt16.self) },
                bytes: { try checkedRead(name, rank: rank, rows: rows, as: UInt8.self) })
        }

        /// A whole weight is read ahead for the next `readAheadDepth` ranks on other threads while this
        /// rank computes: the simulation reads each tensor rank after rank, so their reading and hashing
        /// overlaps the products.
        func readBF16(_ name: String, rank: Int, rows: Range<Int>?) throws -> [UInt16]? {
            guard try planned(name, rank: rank).dtype == .bf16 else { return nil }
            guard rows == nil, readAheadDepth > 0 else { return try checkedRead(name, rank: rank, rows: rows, as: UInt16.self) }
            let mine = ahead.take(ReadAhead.Key(name: name, rank: rank))
            let values = try mine == nil ? checkedRead(name, rank: rank, rows: nil, as: UInt16.self) : nil
            for next in rank + 1..<min(rank + 1 + readAheadDepth, tensors.count) where tensors[next][name]?.dtype == .bf16 {
                guard let pending = ahead.start(ReadAhead.Key(name: name, rank: next), limit: 2 * readAheadDepth) else { continue }
                DispatchQueue.global().async {
                    pending.result = Result { try checkedRead(name, rank: next, rows: nil, as: UInt16.self) }
                    pending.done.signal()
                }
            }
            if let values { return values }
            mine!.done.wait()
            return try mine!.result!.get()
        }

        func planned(_ name: String, rank: Int) throws -> PlannedTensor {
            guard let planned = tensors[rank][name] else {
                throw ForwardCheckError.layoutDisagrees(
                    rank: rank, tensor: name, message: "the manifest lists no such tensor for this rank")
            }
            return planned
        }

        /// The stored rows of `name` on `rank` (all when nil), its header checked against the manifest
        /// and its data against the record's `tensor_sha256` before it is used (exit 1 when they
        /// differ), each tensor hashed once however often it is read. A whole read hashes the bytes it
        /// has just read (one read, not two); a read of some rows (embedding rows) hashes the whole tensor first.
        func checkedRead<T: BitwiseCopyable & Sendable>(_ name: String, rank: Int, rows: Range<Int>?, as type: T.Type) throws -> [T] {
            let planned = try planned(name, rank: rank)
            try shards.check(planned, record: nil, hash: false)
            let key = ShardSet.TensorKey(file: planned.file, name: name)
            let expected = hashes.state.withLock { $0.checked.contains(key) } ? nil : files[planned.file]?.tensorSHA256?[name]
            let checkpoint = try shards.checkpoint(planned.file)
            let info = try checkpoint.tensor(name)
            let whole = rows == nil || rows == 0..<(info.shape.first ?? 1)
            var digest = try expected != nil && !whole ? shards.sha256(of: key) : nil
            var values = try Self.stored(checkpoint, info, rows: rows, as: type)
            if let expected, whole {
                if let same = hashes.state.withLock({ $0.recent[expected] }) as? [T], Self.equal(same, values) {
                    // The bytes of a replica already checked against this hash: they hash to it too.
                    (digest, values) = (expected, same)
                } else {
                    var hasher = SHA256()
                    values.withUnsafeBytes { hasher.update(bufferPointer: $0) }
                    digest = hasher.finalize().hexString
                    if digest == expected { hashes.remember(expected, values, bytes: planned.byteCount) }
                }
            }
            if let expected, let digest {
                guard digest == expected else {
                    throw ManifestError.shardDiffers(
                        file: OutputFolder(shards.folder).path(planned.file), tensor: name,
                        message: "its data has SHA-256 \(digest), the manifest says \(expected) (altered)")
                }
                hashes.state.withLock {
                    guard $0.checked.insert(key).inserted else { return }
                    $0.tensors += 1
                    $0.bytes += planned.byteCount
                }
            }
            return values
        }

        static func equal<T>(_ a: [T], _ b: [T]) -> Bool {
            a.count == b.count
                && a.withUnsafeBytes { x in b.withUnsafeBytes { y in x.isEmpty || memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0 } }
        }

        /// How many shard tensors were checked against a recorded SHA-256, and their bytes.
        var hashChecks: (tensors: Int, bytes: Int) { hashes.state.withLock { ($0.tensors, $0.bytes) } }

        func firstSourceRow(_ name: String, rank: Int) -> Int? {
            guard let piece = tensors[rank][name]?.pieces.first, let rows = piece.region.ranges.first,
                let at = piece.at.first
            else { return nil }
            return rows.lowerBound - at
        }

        /// Shards hold their values as they are (already BF16 when cast).
        func roundsToBF16(_ name: String) -> Bool { false }
    }
}
