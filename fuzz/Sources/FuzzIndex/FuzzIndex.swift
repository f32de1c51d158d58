import FuzzDriver

// libFuzzer target for the index parser, `IndexParser.weightMap` (model.safetensors.index.json).
//
// Contract checked: returns or throws `CheckpointError.invalidIndex`; never anything else, never
// a crash, hang or huge allocation. An accepted map names no tensor twice.
@testable import FineShardFormats

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

func die(_ message: String) -> Never {
    let line = "FuzzIndex: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    abort()
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    do {
        let map = try IndexParser.weightMap(input, fileName: "model.safetensors.index.json")
        guard Set(map.map(\.0)).count == map.count else { die("a tensor mapped twice was accepted") }
    } catch let error as CheckpointError {
        guard case .invalidIndex(let file, _) = error, file == "model.safetensors.index.json" else {
            die("weightMap threw an unexpected CheckpointError: \(error)")
        }
    } catch {
        die("weightMap threw a non-CheckpointError: \(error)")
    }
    return 0
}

/// The program's entry: SwiftPM points `main` at `FuzzIndex_main` (see FuzzDriver.h).
@_cdecl("FuzzIndex_main")
public func fuzzIndexMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { fuzzTestOneInput($0, $1) }
}
