import FineShardFormats
import FineShardPlanning

/// How `shard` carries a plan out (what does not change the layout, so not in the fingerprint).
public struct ShardOptions: Sendable {
    /// The output folder.
    public var output: String
    /// The ranks to write; nil for all (a `--ranks` run writes a partial manifest).
    public var ranks: [Int]?
    /// Skip ranks already complete (files present with their recorded hashes); redo the rest.
    public var resume = false
    /// Rewrite existing files of the ranks being written.
    public var force = false
    public var threads = 1
    /// Bytes of buffers the run may hold at once, across threads.
    public var memoryBudget = 512 << 20
    /// Hash every source file into the manifest (off for `--no-source-hash` and `--ranks`).
    public var hashSources = true
    /// Wait for the output to reach the disk before writing the manifest (`--no-sync` turns it off).
    public var sync = true
    /// zstd level of `--format hdf5`.
    public var compressionLevel = HDF5Writer.defaultCompressionLevel

    public init(output: String) { self.output = output }

    /// Parses `0-7,12` into sorted, distinct ranks below `worldSize`.
    public static func parseRanks(_ text: String, worldSize: Int) throws -> [Int] {
        var ranks = Set<Int>()
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard (1...2).contains(bounds.count), let lo = bounds.first!, let hi = bounds.last!, lo <= hi else {
                throw PlanError.badOption(option: "--ranks", message: "'\(part)' is not a rank or a range like 0-7 (in '\(text)')")
            }
            guard hi < worldSize, lo >= 0 else {
                throw PlanError.badOption(option: "--ranks", message: "\(part) is outside the \(worldSize) ranks 0-\(worldSize - 1)")
            }
            ranks.formUnion(lo...hi)
        }
        return ranks.sorted()
    }
}

/// What a `shard` run did; `--json` prints it.
public struct ShardSummary: Codable, Sendable {
    public var ranksWritten: [Int]
    public var ranksSkipped: [Int]
    public var files: Int
    public var bytesWritten: Int
    /// Source tensor bytes read (headers excluded).
    public var bytesRead: Int
    public var seconds: Double
    public var throughputBytesPerSecond: Double
    public var peakRSSBytes: Int
    public var manifest: String

    enum CodingKeys: String, CodingKey {
        case files, seconds, manifest
        case ranksWritten = "ranks_written"
        case ranksSkipped = "ranks_skipped"
        case bytesWritten = "bytes_written"
        case bytesRead = "bytes_read"
        case throughputBytesPerSecond = "throughput_bytes_per_second"
        case peakRSSBytes = "peak_rss_bytes"
    }
}
