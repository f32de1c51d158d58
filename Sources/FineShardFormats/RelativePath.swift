/// A file name written inside a document that lists the files of a folder (a checkpoint index's
/// `weight_map`, a manifest's rank files and copied files): it must name a file inside that folder
/// as written, whatever the document says, so that a hostile document cannot make fineshard read
/// or write elsewhere.
public enum RelativePath {
    /// Why `raw` does not name a file inside its folder — absolute, empty, with a `..` component or a
    /// NUL — or nil when it does. `./` components and doubled slashes are allowed here (an index may
    /// write `./a.safetensors`); ``normalized(_:)`` removes them.
    public static func problem(_ raw: String) -> String? {
        if raw.isEmpty { return "is empty" }
        if raw.hasPrefix("/") { return "is an absolute path" }
        if raw.utf8.contains(0) { return "contains a NUL byte" }
        if raw.split(separator: "/", omittingEmptySubsequences: false).contains("..") { return "has a '..' component" }
        if normalized(raw).isEmpty { return "names the folder itself" }
        return nil
    }

    /// `raw` without `.` components and empty ones: `./a//b` → `a/b`.
    public static func normalized(_ raw: String) -> String {
        raw.split(separator: "/", omittingEmptySubsequences: false).filter { $0 != "." && !$0.isEmpty }.joined(separator: "/")
    }

    /// Why `name` is not a plain file name directly in its folder (``problem(_:)``, or a `/`, or `.`),
    /// or nil.
    public static func plainNameProblem(_ name: String) -> String? {
        if let problem = problem(name) { return problem }
        if name.contains("/") { return "contains '/'" }
        return nil
    }

    /// Why `name` is not a relative path in the form fineshard writes (``problem(_:)``, or `./`
    /// components, doubled or trailing slashes), or nil.
    public static func canonicalProblem(_ name: String) -> String? {
        if let problem = problem(name) { return problem }
        if normalized(name) != name { return "is not in canonical form (write '\(normalized(name))')" }
        return nil
    }
}
