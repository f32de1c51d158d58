// swift-tools-version:6.0
import PackageDescription

// One target per layer, in the order the data flows; each imports only the layers below it
// (docs/ARCHITECTURE.md, checked by scripts/check_layers.sh):
// System < Formats < Model < Planning < Output < Execution < Verification < FineShard (umbrella) < fineshard (CLI).
let crypto = Target.Dependency.product(name: "Crypto", package: "swift-crypto")

let package = Package(
    name: "fineshard",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "fineshard", targets: ["fineshard"]),
        .library(name: "FineShard", targets: ["FineShard"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        .systemLibrary(name: "CHDF5", pkgConfig: "hdf5-serial", providers: [.apt(["libhdf5-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CLinux"),
        .target(name: "CKernels"),
        .target(name: "FineShardSystem", dependencies: ["CLinux", crypto]),
        .target(name: "FineShardFormats", dependencies: ["FineShardSystem", "CHDF5", "CZstd", crypto]),
        .target(name: "FineShardModel", dependencies: ["FineShardFormats"]),
        .target(name: "FineShardPlanning", dependencies: ["FineShardModel", crypto]),
        .target(name: "FineShardOutput", dependencies: ["FineShardPlanning"]),
        .target(name: "FineShardExecution", dependencies: ["FineShardOutput", crypto]),
        .target(name: "FineShardVerification", dependencies: ["FineShardExecution", "CKernels", crypto]),
        .target(
            name: "FineShard",
            dependencies: [
                "FineShardSystem", "FineShardFormats", "FineShardModel", "FineShardPlanning", "FineShardOutput",
                "FineShardExecution", "FineShardVerification",
            ]
        ),
        .executableTarget(
            name: "fineshard",
            dependencies: [
                "FineShard",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // scripts/bench/kernels.sh: GFLOP/s of the forward check's matrix product.
        .executableTarget(name: "fineshard-kernel-bench", dependencies: ["FineShardVerification"]),
        .testTarget(
            name: "FineShardTests",
            dependencies: ["FineShard", "fineshard", "CHDF5", crypto]
        ),
    ],
    swiftLanguageModes: [.v6]
)
