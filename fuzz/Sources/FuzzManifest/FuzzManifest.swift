import FuzzDriver

// libFuzzer target for the manifest decoder and validator (issue 14): `Manifest.decode` then
// `Manifest.validate`, as a full and as a partial manifest.
//
// Contract checked: decoding and validation return or throw `ManifestError.invalid` naming the
// file; never anything else, never a crash, hang or huge allocation. A manifest that validates
// must be safe for everything that uses it without reading a file: combining, merge's dense plan
// and coverage sums, verify's coverage check, part packing, byte counts and piece boxes all
// compute without trapping, and it survives `encoded()` → decode → validate unchanged.
@testable import FineShardExecution
@testable import FineShardOutput
@testable import FineShardPlanning
@testable import FineShardVerification

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

func die(_ message: String) -> Never {
    let line = "FuzzManifest: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    abort()
}

let fileName = "fuzz/manifest.json"

/// Runs `body`; an error other than `ManifestError.invalid` naming the fuzz file is a contract breach.
func refusedCleanly(_ what: String, _ body: () throws -> Void) -> Bool {
    do {
        try body()
        return false
    } catch let error as ManifestError {
        guard case .invalid(let file, _) = error, file == fileName else { die("\(what) threw an unexpected ManifestError: \(error)") }
        return true
    } catch {
        die("\(what) threw a non-ManifestError: \(error)")
    }
}

/// What readers compute from a validated manifest before they open a file.
func exercise(_ manifest: Manifest) {
    _ = try? Manifest.combine([manifest], requireAllRanks: false)
    var bytes = 0
    for r in manifest.ranks {
        for f in r.files { bytes += f.bytes }
        for t in r.tensors {
            _ = t.byteCount
            for p in t.pieces {
                _ = p.box.elementCount
                _ = p.fillElement(t.dtype)
            }
        }
    }
    let dense = Merger.densePlan(manifest)
    for t in dense { _ = t.pieces.reduce(0) { $0 + $1.region.elementCount } == t.shape.reduce(1, *) }
    _ = PartPacking.parts(of: dense.map(\.byteCount), maxBytes: manifest.parallel.maxFileSize)
    let verifier = Verifier(folder: "fuzz")
    for spec in manifest.source.tensors {
        let regions = manifest.ranks.flatMap { r in
            r.tensors.flatMap { t in t.pieces.filter { $0.fill == nil && $0.source == spec.name }.map(\.region) }
        }
        _ = verifier.coverageProblem(spec, regions)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    var decoded: Manifest?
    if refusedCleanly("decode", { decoded = try Manifest.decode(input, file: fileName) }) { return 0 }
    guard let manifest = decoded else { die("decode returned nothing") }
    for complete in [false, true] {
        if refusedCleanly("validate(complete: \(complete))", { try manifest.validate(file: fileName, complete: complete) }) { continue }
        exercise(manifest)
        guard let bytes = try? manifest.encoded(), let again = try? Manifest.decode(Array(bytes), file: fileName) else {
            die("an accepted manifest does not survive encoded() → decode")
        }
        guard again == manifest else { die("an accepted manifest changes through encoded() → decode") }
        if refusedCleanly("validate after the round trip", { try again.validate(file: fileName, complete: complete) }) {
            die("an accepted manifest is refused after encoded() → decode")
        }
    }
    return 0
}

/// The program's entry: SwiftPM points `main` at `FuzzManifest_main` (see FuzzDriver.h).
@_cdecl("FuzzManifest_main")
public func fuzzManifestMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { fuzzTestOneInput($0, $1) }
}
