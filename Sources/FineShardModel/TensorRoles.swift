import FineShardFormats

/// The role of every tensor of a model, in name order (UTF-8 bytes): two arrays, not a dictionary,
/// so the ~136k tensors of DeepSeek-V3 are stored and walked without hashing their names. A name is
/// looked up by binary search; a caller walking the same sorted tensor table passes its position.
public struct TensorRoles: Sendable, RandomAccessCollection {
    /// The tensor names, sorted.
    public let keys: [String]
    /// The role of each name of ``keys``.
    public let values: [TensorRole]

    /// `names` sorted in UTF-8 byte order, `roles` in the same order.
    package init(names: [String] = [], roles: [TensorRole] = []) {
        precondition(names.count == roles.count)
        keys = names
        values = roles
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { keys.count }
    public subscript(position: Int) -> (key: String, value: TensorRole) { (keys[position], values[position]) }

    /// The role of the tensor `name`, if the model has it.
    public subscript(name: String) -> TensorRole? { role(of: name) }

    /// The role of `name`, looked for first near `position` (a caller walking the sorted table).
    public func role(of name: String, near position: Int? = nil) -> TensorRole? {
        keys.index(ofName: name, near: position).map { values[$0] }
    }
}
