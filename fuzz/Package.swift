// swift-tools-version:6.0
// libFuzzer targets for fineshard's parsers (issue 7, item 4). Built and run by scripts/fuzz.sh:
//   swift build --package-path fuzz --scratch-path .build-fuzz \
//       -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
// A separate package so the fuzzer flags never reach the main build; it depends on the main
// package by path and uses `@testable import` (the library is built with testing enabled in debug).
import Foundation
import PackageDescription

// A path dependency's identity is its folder's name, which depends on where the repository is
// checked out ("main", "fineshard", ...).
let mainPackage = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().lastPathComponent.lowercased()

let package = Package(
    name: "fineshard-fuzz",
    dependencies: [.package(path: "..")],
    targets: [
        .target(name: "FuzzDriver"),
        .executableTarget(
            name: "FuzzHeader",
            dependencies: ["FuzzDriver", .product(name: "FineShard", package: mainPackage)]
        ),
        .executableTarget(
            name: "FuzzIndex",
            dependencies: ["FuzzDriver", .product(name: "FineShard", package: mainPackage)]
        ),
        .executableTarget(
            name: "FuzzManifest",
            dependencies: ["FuzzDriver", .product(name: "FineShard", package: mainPackage)]
        ),
    ],
    swiftLanguageModes: [.v6]
)
