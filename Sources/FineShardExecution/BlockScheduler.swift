import Crypto
import Dispatch
import FineShardFormats
import FineShardPlanning
import FineShardSystem
import Foundation
import Synchronization

/// Writes groups of output files on worker threads, making every block of data once and never
/// waiting for a whole step of the group.
///
/// A group's files list the same tensors (every rank's part p in an all-DP run), so each file is a
/// stream of the same segments: tensor t's block k, in the writers' order. At each tensor the files
/// fall into classes of equal content (a replicated tensor: one class of all of them). The work
/// comes in units:
/// - produce (t, c): assemble class c's next block of tensor t once (the only read of the source),
///   then add it to the class's `tensor_sha256`; a class's blocks are made in order, one at a time;
/// - append (file): append the block of the file's class at the file's next segment (write + file
///   hash); a block is freed when every file of its class has appended it.
///
/// Each worker takes the free unit with the lowest segment (a produce unit counts as 2 segments
/// earlier, so blocks are ready before their files need them); blocks are made ahead only while
/// fewer than `maxBlocks` are held. Files move in step, so replicated data are read once per run;
/// a worker waits only when every unit it could take is being run by another.
final class BlockScheduler: @unchecked Sendable {
    /// One output file to write: its rank, name and tensors by name.
    struct Job {
        var rank: Int
        var file: String
        /// Where the file goes (its writer's path).
        var path: String
        var tensors: [String: PlannedTensor]
    }

    /// What makes two planned tensors' bytes equal, whatever their names and files.
    struct Content: Hashable {
        var dtype: DType
        var shape: [Int]
        var pieces: [Piece]
    }

    /// A running `tensor_sha256` (one unit at a time updates it).
    final class Hasher: @unchecked Sendable { var sha = SHA256() }

    /// A made block (assembled into `storage`, or mapped from the source) and how many files of its
    /// class still have to append it.
    final class Block: @unchecked Sendable {
        let storage: [UInt8]
        let mapped: MappedRegion?
        let count: Int
        var remaining: Int

        init(storage: [UInt8], mapped: MappedRegion?, count: Int, remaining: Int) {
            (self.storage, self.mapped, self.count, self.remaining) = (storage, mapped, count, remaining)
        }

        func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
            if let mapped { return try body(mapped.bytes) }
            return try storage.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
        }
    }

    struct Key: Hashable {
        var segment: Int
        var content: Int
    }

    /// Files with the same tensor list and their progress (all `var`s under the scheduler's lock,
    /// except what the one unit working on a file or a class owns).
    final class Group: @unchecked Sendable {
        let jobs: [Job]
        var opened = false
        var writers: [any TensorFileWriter] = []
        var tensors: [[PlannedTensor]] = []  // [t][file]
        var classes: [[[Int]]] = []  // [t][class] → files
        var classOf: [[Int]] = []  // [t][file] → class
        var blockCount: [Int] = []  // [t], at least 1
        var firstSegment: [Int] = []  // [t], then the total
        var tensorOf: [Int] = []  // [segment] → t
        var hashers: [[Hasher]] = []  // [t][class]
        var next: [Int] = []  // [file] → next segment to append
        var appending: [Bool] = []
        var produced: [[Int]] = []  // [t][class] → blocks made
        var producing: [[Bool]] = []
        var ready: [Key: Block] = [:]
        var tensorSHA256: [[String: String]] = []  // [file]
        var results: [WrittenFile?] = []
        var unfinished = 0

        init(jobs: [Job]) { self.jobs = jobs }

        var segments: Int { firstSegment.last ?? 0 }
    }

    enum Unit {
        case open(Int)
        case produce(group: Int, tensor: Int, content: Int, block: Int)
        case append(group: Int, file: Int, segment: Int)
    }

    let reader: any PieceReader
    let blockBytes: Int
    let maxBlocks: Int
    let threads: Int
    /// Opens a file's writer (in the group's order of files).
    let makeWriter: (Job) throws -> any TensorFileWriter
    /// Called once per group, outside the lock, with each file's record and tensor hashes.
    let finished: ([Job], [(WrittenFile, [String: String])]) throws -> Void
    /// Called with the bytes appended so far.
    let progress: (Int) -> Void

    private let groups: [Group]
    private let lock = NSCondition()
    private var nextGroup = 0
    private var openGroups = 0
    private var live = 0
    private let appended = Atomic<Int>(0)
    private var free: [[UInt8]] = []
    private var failure: (any Error)?
    /// A mapped block just freed, unmapped by its worker outside the lock.
    private var unmap: Block?

    init(
        jobs: [[Job]], reader: any PieceReader, blockBytes: Int, maxBlocks: Int, threads: Int,
        makeWriter: @escaping (Job) throws -> any TensorFileWriter,
        finished: @escaping ([Job], [(WrittenFile, [String: String])]) throws -> Void, progress: @escaping (Int) -> Void
    ) {
        self.groups = jobs.map(Group.init)
        self.reader = reader
        self.blockBytes = blockBytes
        self.maxBlocks = max(2, maxBlocks)
        self.threads = max(1, threads)
        self.makeWriter = makeWriter
        self.finished = finished
        self.progress = progress
    }

    /// Writes every group; rethrows the first error after removing the unfinished files' temporaries.
    func run() throws {
        if threads == 1 {
            work()
        } else {
            DispatchQueue.concurrentPerform(iterations: threads) { _ in work() }
        }
        guard let failure else { return }
        for g in groups where g.opened && g.unfinished > 0 { for w in g.writers { w.abort() } }
        throw failure
    }

    private func work() {
        var assembler = TensorAssembler(reader: reader, blockBytes: blockBytes)
        lock.lock()
        while failure == nil {
            guard let unit = pick() else {
                if nextGroup == groups.count && openGroups == 0 { break }
                lock.wait()
                continue
            }
            lock.unlock()
            do {
                var made: Block?
                var written: WrittenFile?
                switch unit {
                case .open(let g): try open(groups[g], assembler: assembler)
                case .produce(let g, let t, let c, let k): made = try produce(groups[g], t, c, k, assembler: &assembler)
                case .append(let g, let m, let s): written = try append(groups[g], m, s)
                }
                lock.lock()
                let done = complete(unit, made: made, written: written)
                let freed = unmap
                unmap = nil
                lock.broadcast()
                lock.unlock()
                // A freed mapped block is unmapped here, outside the lock.
                withExtendedLifetime(freed) {}
                if let done { try finished(done.jobs, zip(done.results, done.tensorSHA256).map { ($0!, $1) }) }
                lock.lock()
                if done != nil {
                    openGroups -= 1
                    lock.broadcast()
                }
            } catch {
                lock.lock()
                if failure == nil { failure = error }
                lock.broadcast()
                break
            }
        }
        lock.unlock()
    }

    // MARK: - Choosing work (under the lock)

    private func pick() -> Unit? {
        for (i, g) in groups[..<nextGroup].enumerated() where g.opened && g.unfinished > 0 {
            if let unit = pick(in: g, index: i) { return unit }
        }
        if nextGroup < groups.count && openGroups < 2 {
            openGroups += 1
            nextGroup += 1
            return .open(nextGroup - 1)
        }
        return nil
    }

    private func pick(in g: Group, index: Int) -> Unit? {
        let total = g.segments
        guard let low = g.next.filter({ $0 < total }).min() else { return nil }
        var best: (priority: Int, unit: Unit)?
        for (m, s) in g.next.enumerated() where s < total && !g.appending[m] {
            let t = g.tensorOf[s]
            if g.ready[Key(segment: s, content: g.classOf[t][m])] != nil, best.map({ s < $0.priority }) ?? true {
                best = (s, .append(group: index, file: m, segment: s))
            }
        }
        var t = g.tensorOf[low]
        while t < g.tensors.count && g.firstSegment[t] <= low + maxBlocks {
            for c in g.classes[t].indices where !g.producing[t][c] && g.produced[t][c] < g.blockCount[t] {
                let s = g.firstSegment[t] + g.produced[t][c]
                guard s == low || (live < maxBlocks && s <= low + maxBlocks) else { continue }
                if best.map({ s - 2 < $0.priority }) ?? true {
                    best = (s - 2, .produce(group: index, tensor: t, content: c, block: g.produced[t][c]))
                }
            }
            t += 1
        }
        switch best?.unit {
        case .append(_, let m, _): g.appending[m] = true
        case .produce(_, let t, let c, _):
            g.producing[t][c] = true
            live += 1
        default: break
        }
        return best?.unit
    }

    /// Records a finished unit; returns the group if it was its last.
    private func complete(_ unit: Unit, made: Block?, written: WrittenFile?) -> Group? {
        switch unit {
        case .open(let i):
            groups[i].opened = true
            if groups[i].unfinished == 0 { return groups[i] }
        case .produce(let i, let t, let c, let k):
            let g = groups[i]
            g.ready[Key(segment: g.firstSegment[t] + k, content: c)] = made!
            g.producing[t][c] = false
            g.produced[t][c] += 1
            if g.produced[t][c] == g.blockCount[t] {
                let digest = g.hashers[t][c].sha.finalize().hexString
                let name = g.tensors[t][0].name
                for m in g.classes[t][c] { g.tensorSHA256[m][name] = digest }
            }
        case .append(let i, let m, let s):
            let g = groups[i]
            let key = Key(segment: s, content: g.classOf[g.tensorOf[s]][m])
            let block = g.ready[key]!
            block.remaining -= 1
            if block.remaining == 0 {
                g.ready[key] = nil
                if block.mapped == nil { free.append(block.storage) } else { unmap = block }
                live -= 1
            }
            g.appending[m] = false
            g.next[m] += 1
            if g.next[m] == g.segments {
                g.results[m] = written
                g.unfinished -= 1
                if g.unfinished == 0 { return g }
            }
        }
        return nil
    }

    // MARK: - Units (outside the lock)

    private func open(_ g: Group, assembler: TensorAssembler) throws {
        do {
            for job in g.jobs { g.writers.append(try makeWriter(job)) }
        } catch {
            for w in g.writers { w.abort() }
            throw error
        }
        let files = g.jobs.indices
        g.tensors = g.writers[0].order.map { spec in g.jobs.map { $0.tensors[spec.name]! } }
        for tensors in g.tensors {
            let byContent = Dictionary(grouping: files) {
                Content(dtype: tensors[$0].dtype, shape: tensors[$0].shape, pieces: tensors[$0].pieces)
            }
            let classes = byContent.values.sorted { $0[0] < $1[0] }
            var classOf = [Int](repeating: 0, count: files.count)
            for (c, members) in classes.enumerated() { for m in members { classOf[m] = c } }
            let blocks = max(1, assembler.blocking(tensors[0]).count)
            g.firstSegment.append(g.tensorOf.count)
            g.tensorOf += Array(repeating: g.firstSegment.count - 1, count: blocks)
            g.classes.append(classes)
            g.classOf.append(classOf)
            g.blockCount.append(blocks)
            g.hashers.append(classes.map { _ in Hasher() })
            g.produced.append(Array(repeating: 0, count: classes.count))
            g.producing.append(Array(repeating: false, count: classes.count))
        }
        g.firstSegment.append(g.tensorOf.count)
        g.next = Array(repeating: 0, count: files.count)
        g.appending = Array(repeating: false, count: files.count)
        g.tensorSHA256 = Array(repeating: [:], count: files.count)
        g.results = Array(repeating: nil, count: files.count)
        g.unfinished = files.count
        if g.segments == 0 {
            g.results = try g.writers.map { try $0.finish() }
            g.unfinished = 0
        }
    }

    private func produce(_ g: Group, _ t: Int, _ c: Int, _ k: Int, assembler: inout TensorAssembler) throws -> Block {
        let tensor = g.tensors[t][g.classes[t][c][0]]
        let remaining = g.classes[t][c].count
        if let mapped = try assembler.mapped(tensor, block: k) {
            g.hashers[t][c].sha.update(bufferPointer: mapped.bytes)
            try mapped.checkIntact()
            return Block(storage: [], mapped: mapped, count: mapped.bytes.count, remaining: remaining)
        }
        let count = assembler.blocking(tensor).count == 0 ? 0 : assembler.byteCount(tensor, block: k)
        lock.lock()
        var storage = free.popLast() ?? []
        lock.unlock()
        if storage.count < count { storage = [UInt8](repeating: 0, count: max(count, blockBytes)) }
        try storage.withUnsafeMutableBytes { b in
            let out = UnsafeMutableRawBufferPointer(rebasing: b[0..<count])
            if count > 0 { try assembler.assemble(tensor, block: k, into: out) }
            g.hashers[t][c].sha.update(bufferPointer: UnsafeRawBufferPointer(out))
        }
        return Block(storage: storage, mapped: nil, count: count, remaining: remaining)
    }

    /// Appends the file's next block; returns the finished file after its last.
    private func append(_ g: Group, _ m: Int, _ s: Int) throws -> WrittenFile? {
        let t = g.tensorOf[s]
        lock.lock()
        let block = g.ready[Key(segment: s, content: g.classOf[t][m])]!
        lock.unlock()
        try block.withBytes { try g.writers[m].append($0) }
        try block.mapped?.checkIntact()
        progress(appended.add(block.count, ordering: .relaxed).newValue)
        if s + 1 == g.firstSegment[t + 1] {
            for _ in g.tensors[t][m].pieces { try FaultInjector.shared.check(.piece, path: g.jobs[m].path) }
        }
        return s + 1 == g.segments ? try g.writers[m].finish() : nil
    }
}
