// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "SwiftUNet",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "unet", targets: ["unet"]),
        .library(name: "Engine", targets: ["Engine"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // The only place oneDNN is seen: a narrow C API (see include/CDNNL.h).
        .target(
            name: "CDNNL",
            linkerSettings: [.linkedLibrary("dnnl"), .linkedLibrary("dl")]
        ),
        // Tensor core: storage, shapes, layouts, oneDNN-backed kernels and the naive reference.
        .target(name: "Engine", dependencies: ["CDNNL"]),
        .executableTarget(
            name: "unet",
            dependencies: [
                "Engine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "EngineTests", dependencies: ["Engine"]),
    ],
    swiftLanguageModes: [.v6]
)
