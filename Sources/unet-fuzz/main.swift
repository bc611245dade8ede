// libFuzzer driver for every parser of outside bytes. scripts/fuzz.sh builds it with -sanitize=fuzzer,address and
// keeps libFuzzer's driver (LLVMFuzzerRunDriver) in the binary, exported; the main below finds it and hands it the
// command line (SwiftPM's executable main wins over libFuzzer's). An ordinary build has no libFuzzer and says so.
// The target is chosen by UNET_FUZZ_TARGET: nifti, nifti-gz, npy, safetensors, checkpoint, dataset
// (dataset.json of either layout).
// Each input is written to a file on a memory file system and opened the way the tool opens it; any thrown
// error is a fine outcome, a crash, hang, leak or sanitizer report is a finding.
import Foundation
import MedicalImaging
import NeuralNet

/// Where inputs are written: a folder of this process on /dev/shm (memory), made once.
nonisolated(unsafe) private var scratch: String?

private func folder() -> String {
    if let scratch { return scratch }
    let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
    let path = base + "/unet-fuzz-\(getpid())"
    try? FileManager.default.createDirectory(atPath: path + "/imagesTr", withIntermediateDirectories: true)
    try? FileManager.default.createDirectory(atPath: path + "/labelsTr", withIntermediateDirectories: true)
    scratch = path
    return path
}

private func write(_ data: UnsafePointer<UInt8>, _ size: Int, to path: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { fatalError("fuzz: cannot write \(path)") }
    var done = 0
    while done < size {
        let n = Glibc.write(fd, data + done, size - done)
        guard n > 0 else { fatalError("fuzz: short write to \(path)") }
        done += n
    }
    close(fd)
}

private let target = ProcessInfo.processInfo.environment["UNET_FUZZ_TARGET"] ?? "nifti"

/// One input: parse it, ignore the error if any.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data else { return 0 }
    let dir = folder()
    switch target {
    case "nifti", "nifti-gz":
        let path = dir + (target == "nifti" ? "/input.nii" : "/input.nii.gz")
        write(data, size, to: path)
        _ = try? NiftiImage.readHeader(path)
        _ = try? NiftiImage.read(path)
    case "npy":
        write(data, size, to: dir + "/input.npy")
        _ = try? Npy.read(dir + "/input.npy")
        // As the trainer reads preprocessed files: only little-endian float32 is copied (copyFloats's precondition;
        // a big-endian file here was the harness's first finding, not the library's).
        if let mapped = try? Npy.map(dir + "/input.npy"), mapped.layout.datatype == .float32, !mapped.layout.bigEndian {
            let n = min(mapped.layout.shape.reduce(1, *), 64)
            var out = [Float](repeating: 0, count: max(n, 1))
            out.withUnsafeMutableBufferPointer { mapped.copyFloats(from: 0, count: n, into: $0.baseAddress!) }
        }
    case "safetensors":
        write(data, size, to: dir + "/input.safetensors")
        _ = try? Safetensors.read(dir + "/input.safetensors")
    case "checkpoint":
        write(data, size, to: dir + "/input.safetensors")
        _ = try? Checkpoint.load(dir + "/input.safetensors")
    case "dataset":
        write(data, size, to: dir + "/dataset.json")
        _ = try? Dataset.open(dir)
    default:
        fatalError("UNET_FUZZ_TARGET must be nifti, nifti-gz, npy, safetensors, checkpoint or dataset; got \(target)")
    }
    return 0
}

typealias TestOneInput = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
typealias RunDriver = @convention(c) (UnsafeMutablePointer<CInt>, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                                      TestOneInput) -> CInt
guard let driver = dlsym(nil, "LLVMFuzzerRunDriver") else {
    FileHandle.standardError.write(Data("unet-fuzz was built without libFuzzer: run scripts/fuzz.sh TARGET SECONDS\n".utf8))
    exit(1)
}
var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
exit(unsafeBitCast(driver, to: RunDriver.self)(&argc, &argv) { data, size in fuzz(data, size) })
