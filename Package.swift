// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "SwiftUNet",
    // Linux only (Glibc, /proc, oneDNN and zlib from Debian packages); no platforms are claimed beyond it.
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
        // The only place MPI is seen: a few collectives over MPI_COMM_WORLD (see include/CMPI.h). Built against
        // the system MPI's headers (Debian's alternatives link: Open MPI by default, MPICH if chosen).
        .target(
            name: "CMPI",
            cSettings: [.unsafeFlags(["-I/usr/include/x86_64-linux-gnu/mpi", "-I/usr/include/mpi"])],
            linkerSettings: [.linkedLibrary("mpi")]
        ),
        // Data-parallel training across processes: MPI_COMM_WORLD as an Engine.ProcessGroup.
        .target(name: "Cluster", dependencies: ["CMPI", "Engine"]),
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
        // The pipeline: preprocessing, folds, phantom data, augmentations and loader, trainer, predictor,
        // metrics and evaluation, overlays and charts.
        .target(name: "Segmentation", dependencies: ["MedicalImaging", "NeuralNet", "Engine", "FileSupport"]),
        // Tooling, not library: the kernel, memory and training-step benchmarks behind `unet bench`.
        .target(name: "Benchmarks", dependencies: ["Engine", "NeuralNet", "CDNNL"]),
        // The command-line tool: one subcommand per stage, each a call into the libraries.
        .executableTarget(
            name: "unet",
            dependencies: [
                "Engine",
                "MedicalImaging",
                "Segmentation",
                "NeuralNet",
                "FileSupport",
                "Benchmarks",
                "Cluster",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Tooling: the libFuzzer entry point for every parser of outside bytes (scripts/fuzz.sh builds it with
        // the fuzzer and address sanitizer; an ordinary build makes a binary that does nothing).
        .executableTarget(name: "unet-fuzz", dependencies: ["MedicalImaging", "NeuralNet"]),
        .testTarget(name: "EngineTests", dependencies: ["Engine"]),
        .testTarget(name: "BenchmarksTests", dependencies: ["Benchmarks"]),
        .testTarget(name: "MedicalImagingTests", dependencies: ["MedicalImaging", "CZlib"], exclude: ["Fixtures"]),
        .testTarget(name: "NeuralNetTests", dependencies: ["NeuralNet", "Engine"], exclude: ["Fixtures"]),
        .testTarget(name: "SegmentationTests", dependencies: ["Segmentation", "MedicalImaging", "NeuralNet", "Engine"], exclude: ["kfold_sklearn.json", "Fixtures"]),
    ],
    swiftLanguageModes: [.v6]
)
