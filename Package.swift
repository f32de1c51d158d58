// swift-tools-version:6.0
import PackageDescription

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
        .target(
            name: "FineShard",
            dependencies: [
                "CHDF5", "CZstd", "CLinux",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .executableTarget(
            name: "fineshard",
            dependencies: [
                "FineShard",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "FineShardTests",
            dependencies: ["FineShard", "CHDF5", .product(name: "Crypto", package: "swift-crypto")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
