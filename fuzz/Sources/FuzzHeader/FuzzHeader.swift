import FuzzDriver

// libFuzzer target for the safetensors header parser, `SafetensorsHeader.parse`.
//
// Input: a whole safetensors file when its first 8 bytes declare a header length that fits
// (header = the next N bytes, data area = the rest, as `SafetensorsHeader.read` would pass
// them); otherwise the input is header JSON alone, parsed against an empty data area and a
// 1 MiB one, with a small tensor cap so the cap's path is reached too.
//
// Contract checked: `parse` returns or throws `CheckpointError.invalidHeader`; never anything
// else, never a crash, hang or huge allocation (libFuzzer's -timeout / -rss_limit_mb /
// -malloc_limit_mb catch those). An accepted header must also be self-consistent (tensors
// contiguous in offset order and filling the data area exactly) and survive
// `SafetensorsHeader.encode` → `parse` with the same names, dtypes, shapes and metadata.
@testable import FineShardFormats

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

func die(_ message: String) -> Never {
    let line = "FuzzHeader: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    abort()
}

func check(_ header: [UInt8], dataStart: Int, dataSize: Int, maxTensors: Int) {
    let parsed: SafetensorsHeader
    do {
        parsed = try SafetensorsHeader.parse(
            header, fileName: "fuzz.safetensors", dataStart: dataStart, dataSize: dataSize, maxTensors: maxTensors)
    } catch let error as CheckpointError {
        guard case .invalidHeader(let file, _, _) = error, file == "fuzz.safetensors" else {
            die("parse threw an unexpected CheckpointError: \(error)")
        }
        return
    } catch {
        die("parse threw a non-CheckpointError: \(error)")
    }

    // Accepted: the invariants the rest of fineshard relies on.
    guard parsed.dataStart == dataStart else { die("dataStart \(parsed.dataStart) != \(dataStart)") }
    guard parsed.tensors.count <= maxTensors else { die("\(parsed.tensors.count) tensors over the cap \(maxTensors)") }
    var position = dataStart
    for t in parsed.tensors {
        guard t.offset == position else { die("tensor '\(t.name)' at \(String(describing: t.offset)), expected \(position)") }
        guard t.shape.allSatisfy({ $0 >= 0 }) else { die("tensor '\(t.name)' has a negative dimension \(t.shape)") }
        var elements = 1
        for d in t.shape {
            let (p, o) = elements.multipliedReportingOverflow(by: d)
            guard !o else { die("tensor '\(t.name)' shape \(t.shape) overflows but was accepted") }
            elements = p
        }
        let (bytes, o) = elements.multipliedReportingOverflow(by: t.dtype.size)
        guard !o else { die("tensor '\(t.name)' byte count overflows but was accepted") }
        position += bytes
    }
    guard position == dataStart + dataSize else { die("tensors end at \(position), data area ends at \(dataStart + dataSize)") }
    guard Set(parsed.tensors.map(\.name)).count == parsed.tensors.count else { die("duplicate tensor names accepted") }

    // Round trip through the writer's encoder.
    let encoded = SafetensorsHeader.encode(
        parsed.tensors.map { (name: $0.name, dtype: $0.dtype, shape: $0.shape) }, metadata: parsed.metadata)
    let length = encoded.prefix(8).withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
    guard length == encoded.count - 8 else { die("encode wrote length \(length) for \(encoded.count - 8) bytes") }
    let again: SafetensorsHeader
    do {
        again = try SafetensorsHeader.parse(
            Array(encoded[8...]), fileName: "fuzz.safetensors", dataStart: encoded.count, dataSize: dataSize,
            maxTensors: maxTensors)
    } catch {
        die("encode produced a header parse refuses: \(error)\nencoded: \(String(decoding: encoded[8...], as: UTF8.self))")
    }
    func key(_ t: TensorInfo) -> String { "\(t.name)|\(t.dtype.rawValue)|\(t.shape)" }
    guard Set(again.tensors.map(key)) == Set(parsed.tensors.map(key)), again.metadata == parsed.metadata else {
        die(
            "encode → parse changed the header: \(parsed.tensors.map(key)) / \(String(describing: parsed.metadata)) became \(again.tensors.map(key)) / \(String(describing: again.metadata))"
        )
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    if input.count >= 8 {
        let declared = input.prefix(8).withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        if declared <= UInt64(input.count - 8) {
            let n = Int(declared)
            check(
                Array(input[8..<(8 + n)]), dataStart: 8 + n, dataSize: input.count - 8 - n,
                maxTensors: SafetensorsHeader.defaultMaxTensors)
            return 0
        }
    }
    check(input, dataStart: 8 + input.count, dataSize: 0, maxTensors: 8)
    check(input, dataStart: 8 + input.count, dataSize: 1 << 20, maxTensors: 8)
    return 0
}

/// The program's entry: SwiftPM points `main` at `FuzzHeader_main` (see FuzzDriver.h).
@_cdecl("FuzzHeader_main")
public func fuzzHeaderMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { fuzzTestOneInput($0, $1) }
}
