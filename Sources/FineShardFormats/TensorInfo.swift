import Foundation

/// One tensor of a checkpoint: what it is and where its bytes live.
public struct TensorInfo: Sendable, Hashable, Codable {
    /// The tensor's name as the checkpoint spells it (`model.layers.0.self_attn.o_proj.weight`).
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    /// The file that holds the tensor, relative to the checkpoint's root folder.
    public var file: String
    /// Absolute byte offset of the first element in `file` (safetensors); `nil` for formats whose
    /// library places the data (HDF5).
    public var offset: Int?

    public init(name: String, dtype: DType, shape: [Int], file: String, offset: Int?) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.file = file
        self.offset = offset
    }

    /// Number of elements (1 for a scalar). Callers only build `TensorInfo` from validated shapes,
    /// so this cannot overflow.
    public var elementCount: Int { shape.reduce(1, *) }
    public var byteCount: Int { elementCount * dtype.size }
}

extension Array where Element == TensorInfo {
    /// Sorted by name (UTF-8 byte order, equal names in their order here); checks first, since
    /// callers usually pass sorted tables.
    package func sortedByName() -> [TensorInfo] {
        if isSortedByName { return self }
        // Sort indices over the names copied into one buffer: comparing two names is then one
        // memcmp, without the retains and releases of reading Strings out of an array.
        var bytes: [UInt8] = []
        var ends: [Int] = []
        ends.reserveCapacity(count + 1)
        ends.append(0)
        for t in self {
            bytes.append(contentsOf: t.name.utf8)
            ends.append(bytes.count)
        }
        let order = bytes.withUnsafeBufferPointer { b in
            ends.withUnsafeBufferPointer { e in
                indices.sorted { i, j in
                    let c = utf8Compare(b, e[i]..<e[i + 1], e[j]..<e[j + 1])
                    return c != 0 ? c < 0 : i < j
                }
            }
        }
        return order.map { self[$0] }
    }

    /// Whether names strictly increase (UTF-8 byte order): sorted, no name twice.
    package var isSortedByName: Bool { indices.dropFirst().allSatisfy { self[$0 - 1].name.utf8Precedes(self[$0].name) } }

    /// The index of the tensor named `name` (byte-wise equal) in a table sorted by name.
    package func index(ofName name: String, near hint: Int? = nil) -> Int? {
        sortedIndex(of: name, count: count, near: hint) { self[$0].name }
    }
}

extension Array where Element == String {
    /// The index of `name` (byte-wise equal) in names sorted in UTF-8 byte order.
    package func index(ofName name: String, near hint: Int? = nil) -> Int? {
        sortedIndex(of: name, count: count, near: hint) { self[$0] }
    }
}

/// The index of `name` among `count` names sorted in UTF-8 byte order (`nameAt(i)` is the i-th),
/// by binary search. With `hint`, the few positions around it are tried first: callers walking a
/// table in name order look for names next to the one at hand (a weight's scales, the next tensor
/// of a module).
private func sortedIndex(of name: String, count: Int, near hint: Int?, _ nameAt: (Int) -> String) -> Int? {
    var name = name
    return name.withUTF8 { key in
        if let hint {
            // hint, hint - 1, hint + 1, hint - 2, … hint + 4
            for step in 0..<9 {
                let i = hint + (step % 2 == 0 ? step / 2 : -(step + 1) / 2)
                guard i >= 0 && i < count else { continue }
                var other = nameAt(i)
                if other.utf8.count == key.count, other.withUTF8({ utf8Compare($0, key) }) == 0 { return i }
            }
        }
        var (low, high) = (0, count)
        while low < high {
            let mid = (low + high) / 2
            var other = nameAt(mid)
            let c = other.withUTF8 { utf8Compare($0, key) }
            if c == 0 { return mid }
            if c < 0 { low = mid + 1 } else { high = mid }
        }
        return nil
    }
}

/// memcmp order of two byte strings: negative, zero or positive; a prefix comes first.
private func utf8Compare(_ a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>) -> Int {
    let n = min(a.count, b.count)
    let c = n == 0 ? 0 : Int(memcmp(a.baseAddress!, b.baseAddress!, n))
    return c != 0 ? c : a.count - b.count
}

private func utf8Compare(_ buffer: UnsafeBufferPointer<UInt8>, _ a: Range<Int>, _ b: Range<Int>) -> Int {
    utf8Compare(UnsafeBufferPointer(rebasing: buffer[a]), UnsafeBufferPointer(rebasing: buffer[b]))
}

extension String {
    /// Byte-wise UTF-8 order (memcmp), the order fineshard sorts names in: deterministic and
    /// fast on the hundreds of thousands of names of a large checkpoint.
    public func utf8Precedes(_ other: String) -> Bool {
        var a = self
        var b = other
        return a.withUTF8 { x in b.withUTF8 { y in utf8Compare(x, y) < 0 } }
    }
}
