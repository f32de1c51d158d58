/// A hyperslab of a row-major tensor: one half-open range per dimension.
///
/// This is the shape of a tensor-parallel cut: a column-parallel shard is a range of rows, a
/// row-parallel shard a range of columns, and both map to a list of equal-length byte runs.
public struct Region: Sendable, Hashable {
    public var ranges: [Range<Int>]

    public init(_ ranges: [Range<Int>]) { self.ranges = ranges }

    /// The whole of a tensor of this shape.
    public init(whole shape: [Int]) { self.ranges = shape.map { 0..<$0 } }

    public var shape: [Int] { ranges.map(\.count) }
    public var elementCount: Int { ranges.reduce(1) { $0 * $1.count } }

    /// The byte runs this region occupies in a row-major tensor of `shape` whose elements are
    /// `elementSize` bytes: every run has length `runLength`, and `forEachRun` yields their offsets
    /// from the tensor's first byte in increasing order. Trailing dimensions taken whole are merged
    /// into one run, so a range of rows is a single run.
    public func runs(in shape: [Int], elementSize: Int) -> (runLength: Int, count: Int) {
        precondition(shape.count == ranges.count)
        guard elementCount > 0 else { return (0, 0) }
        var runElements = 1
        var d = shape.count - 1
        while d >= 0 && ranges[d] == 0..<shape[d] {
            runElements *= shape[d]
            d -= 1
        }
        if d >= 0 {
            runElements *= ranges[d].count
            let outer = ranges[..<d].reduce(1) { $0 * $1.count }
            return (runElements * elementSize, outer)
        }
        return (runElements * elementSize, 1)
    }

    /// Calls `body` with the byte offset of every run, in increasing order (see ``runs(in:elementSize:)``).
    public func forEachRun(in shape: [Int], elementSize: Int, _ body: (Int) throws -> Void) rethrows {
        guard elementCount > 0 else { return }
        var d = shape.count - 1
        while d >= 0 && ranges[d] == 0..<shape[d] { d -= 1 }
        // Dimensions 0..<d are iterated; dimension d (if any) is the start of each run.
        var strides = [Int](repeating: elementSize, count: shape.count)
        for i in stride(from: shape.count - 2, through: 0, by: -1) { strides[i] = strides[i + 1] * shape[i + 1] }
        guard d >= 0 else { return try body(0) }
        let base = ranges[d].lowerBound * strides[d]
        if d == 0 { return try body(base) }
        var index = ranges[..<d].map(\.lowerBound)
        while true {
            var offset = base
            for i in 0..<d { offset += index[i] * strides[i] }
            try body(offset)
            var i = d - 1
            while i >= 0 {
                index[i] += 1
                if index[i] < ranges[i].upperBound { break }
                index[i] = ranges[i].lowerBound
                i -= 1
            }
            if i < 0 { return }
        }
    }
}
