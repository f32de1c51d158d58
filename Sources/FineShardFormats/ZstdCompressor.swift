import CZstd
import Synchronization

/// One zstd compression context (`ZSTD_CCtx`), owned and freed in `deinit`; use it from one thread
/// at a time.
///
/// Every frame it makes records its content size (hdf5plugin's decoder needs it), codes its literals
/// with Huffman tables at every level, and ends with the
/// XXH64-based frame checksum (`ZSTD_c_checksumFlag`): garbled bytes in the middle of a chunk often
/// still decode, and only the checksum tells wrong numbers from right ones. Frames depend on the
/// input and the level alone, so any thread may compress any chunk.
final class ZstdCompressor: @unchecked Sendable {
    private let context: OpaquePointer
    let level: Int

    /// The levels zstd accepts (`ZSTD_minCLevel()...ZSTD_maxCLevel()`; negative levels are its
    /// fast modes, 0 means its default, 3).
    static var levels: ClosedRange<Int> { Int(ZSTD_minCLevel())...Int(ZSTD_maxCLevel()) }

    /// - Throws: ``CheckpointError/io(file:operation:reason:)`` if zstd cannot make the context or
    ///   refuses the parameters (`ZSTD_getErrorName`).
    init(level: Int, file: String) throws {
        guard let context = ZSTD_createCCtx() else {
            throw CheckpointError.io(file: file, operation: "zstd", reason: "cannot create a compression context")
        }
        self.context = context
        self.level = level
        try Self.check(ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, Int32(level)), file: file)
        try Self.check(ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1), file: file)
        try Self.check(ZSTD_CCtx_setParameter(context, ZSTD_c_contentSizeFlag, 1), file: file)
        // Huffman-coded literals at every level: zstd turns them off at its negative levels, yet
        // they are where shuffled weights compress (the exponent byte planes); matches gain little.
        try Self.check(ZSTD_CCtx_setParameter(context, Self.literalCompressionMode, 1 /* ZSTD_ps_enable */), file: file)
    }

    /// `ZSTD_c_literalCompressionMode` (`ZSTD_c_experimentalParam5`, zstd.h's static-linking-only
    /// section, in libzstd since 1.4.5).
    private static let literalCompressionMode = ZSTD_cParameter(rawValue: 1002)

    deinit { ZSTD_freeCCtx(context) }

    /// The most bytes a frame of `count` input bytes can take (`ZSTD_compressBound`).
    static func bound(_ count: Int) -> Int { ZSTD_compressBound(count) }

    /// Compresses `source` into one frame at the start of `target` (at least ``bound(_:)`` bytes)
    /// with `ZSTD_compress2`, and returns the frame's size.
    func compress(_ source: UnsafeRawBufferPointer, into target: UnsafeMutableRawBufferPointer, file: String) throws -> Int {
        try Self.check(ZSTD_compress2(context, target.baseAddress, target.count, source.baseAddress, source.count), file: file)
    }

    @discardableResult
    private static func check(_ result: Int, file: String) throws -> Int {
        if ZSTD_isError(result) != 0 {
            throw CheckpointError.io(file: file, operation: "zstd compression", reason: String(cString: ZSTD_getErrorName(result)))
        }
        return result
    }
}

extension ZstdCompressor {
    /// Compressors of one level, lent to one thread at a time and kept for reuse (a context costs
    /// more to make than a chunk costs to compress).
    final class Pool: Sendable {
        let level: Int
        let file: String
        private let spare = Mutex<[ZstdCompressor]>([])

        init(level: Int, file: String) {
            self.level = level
            self.file = file
        }

        func withCompressor<R>(_ body: (ZstdCompressor) throws -> R) throws -> R {
            let compressor = try spare.withLock { $0.popLast() } ?? ZstdCompressor(level: level, file: file)
            defer { spare.withLock { $0.append(compressor) } }
            return try body(compressor)
        }
    }
}
