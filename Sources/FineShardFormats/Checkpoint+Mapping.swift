import FineShardSystem
import Synchronization

extension Checkpoint {
    /// `region` of `tensor` mapped from its safetensors file when the region is one run of bytes (a
    /// range of rows): the bytes are used where they are, not copied. Nil for HDF5 and strided cuts.
    package func mapped(_ tensor: TensorInfo, region: Region) throws -> MappedRegion? {
        guard let store = readers[tensor.file] as? SafetensorsStore else { return nil }
        let (runLength, runs) = region.runs(in: tensor.shape, elementSize: tensor.dtype.size)
        guard runs == 1 else { return nil }
        var first = 0
        region.forEachRun(in: tensor.shape, elementSize: tensor.dtype.size) { first = $0 }
        let mapped = try store.file.map(offset: tensor.offset! + first, count: runLength)
        dataRead.add(runLength, ordering: .relaxed)
        IOStatistics.read.add(runLength, ordering: .relaxed)
        return mapped
    }
}

extension SafetensorsStore {
    /// Reads a region of many short runs (a column cut) by mapping the rows they span once and
    /// copying the runs, instead of a pread(2) each. The files that hold the other columns of the
    /// same rows are made next, so the rows' mapping is kept for them (``SpanCache``).
    func gather(_ tensor: TensorInfo, region: Region, into buffer: UnsafeMutableRawBufferPointer) throws {
        let size = tensor.dtype.size
        let (runLength, runs) = region.runs(in: tensor.shape, elementSize: size)
        var (first, last) = (-1, 0)
        region.forEachRun(in: tensor.shape, elementSize: size) { offset in
            if first < 0 { first = offset }
            last = offset
        }
        let rowBytes = tensor.shape.dropFirst().reduce(size, *)
        let (start, end) = (first / rowBytes * rowBytes, (last + runLength + rowBytes - 1) / rowBytes * rowBytes)
        let span =
            end - start <= SpanCache.maxBytes
            ? try SpanCache.shared.span(of: file, offset: tensor.offset! + start, count: end - start)
            : try file.map(offset: tensor.offset! + start, count: end - start)
        var out = 0
        region.forEachRun(in: tensor.shape, elementSize: size) { offset in
            (buffer.baseAddress! + out).copyMemory(from: span.bytes.baseAddress! + (offset - start), byteCount: runLength)
            out += runLength
        }
        try span.checkIntact()
        IOStatistics.read.add(runs * runLength, ordering: .relaxed)
    }
}

/// The last row spans that column cuts mapped, process-wide (at most 2 of at most 16 MiB, so a
/// checkpoint of many files holds no more).
final class SpanCache: Sendable {
    static let shared = SpanCache()
    static let maxBytes = 16 << 20
    private let recent = Mutex<[(file: OpenFile, offset: Int, region: MappedRegion)]>([])

    func span(of file: OpenFile, offset: Int, count: Int) throws -> MappedRegion {
        if let hit = recent.withLock({ $0.first { $0.file === file && $0.offset == offset && $0.region.bytes.count == count }?.region }) {
            return hit
        }
        let region = try file.map(offset: offset, count: count)
        let evicted = recent.withLock {
            $0.append((file, offset, region))
            return $0.count > 2 ? $0.removeFirst() : nil
        }
        withExtendedLifetime(evicted) {}
        return region
    }
}
