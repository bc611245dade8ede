// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "SwiftUNet",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "unet", targets: ["unet"]),
        .library(name: "Engine", targets: ["Engine"]),
        .library(name: "MedicalImaging", targets: ["MedicalImaging"]),
        .library(name: "Segmentation", targets: ["Segmentation"]),
        .library(name: "NeuralNet", targets: ["NeuralNet"]),
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
        // The only place zlib is seen: gzip streams over in-memory buffers (see include/CZlib.h).
        .target(name: "CZlib", linkerSettings: [.linkedLibrary("z")]),
        // NIfTI and NumPy files, dataset layouts and label conventions. No tensors, no kernels.
        .target(name: "MedicalImaging", dependencies: ["CZlib", "FileSupport"]),
        // Atomic writes and memory-mapped reads, shared by the file-handling libraries.
        .target(name: "FileSupport"),
        // Layers with forward/backward, the UNet, losses, optimizers, weight files (safetensors).
        .target(name: "NeuralNet", dependencies: ["Engine", "FileSupport"]),
        // The pipeline: preprocessing, folds, phantom data (later: loader, trainer, predictor, metrics).
        .target(name: "Segmentation", dependencies: ["MedicalImaging", "NeuralNet", "Engine"]),
        .executableTarget(
            name: "unet",
            dependencies: [
                "Engine",
                "MedicalImaging",
                "Segmentation",
                "NeuralNet",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "EngineTests", dependencies: ["Engine"]),
        .testTarget(name: "MedicalImagingTests", dependencies: ["MedicalImaging", "CZlib"], exclude: ["Fixtures"]),
        .testTarget(name: "NeuralNetTests", dependencies: ["NeuralNet", "Engine"], exclude: ["Fixtures"]),
        .testTarget(name: "SegmentationTests", dependencies: ["Segmentation", "MedicalImaging", "NeuralNet", "Engine"], exclude: ["kfold_sklearn.json", "Fixtures"]),
    ],
    swiftLanguageModes: [.v6]
)
