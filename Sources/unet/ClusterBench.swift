import ArgumentParser
import Cluster
import Engine
import Foundation
import NeuralNet

/// `unet bench allreduce`: what one gradient sum costs a group of processes, per preset.
struct BenchAllreduce: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allreduce",
        abstract: "Time of one gradient allreduce (the sum of every process's gradients) for each preset; run under mpirun -np N.",
        discussion: "Each process sums a buffer of the preset's trainable parameter count (float32) over the group, as a training step does after backward. Rank 0 prints the median of the rounds and the bus bandwidth (2(N-1)/N of the buffer through each process per allreduce)."
    )

    @Option(help: "Allreduces timed per preset (the median is reported).") var rounds = 5
    @Option(help: "Also time this many composer-2d training steps (global batch --batch, shared) with the gradient sum overlapping backward and after it, alternating.")
    var steps = 0
    @Option(help: "Global batch of the timed steps.") var batch = 64
    @Flag(help: "Print one JSON object instead of the table.") var json = false

    struct Row: Codable { var preset: String; var parameters: Int; var megabytes: Double; var seconds: Double; var busGBps: Double }
    /// A training step's seconds, and how long it waited after backward for the gradient sum (slowest member).
    struct Step: Codable { var overlapped: Bool; var seconds: Double; var waitSeconds: Double }
    struct Report: Codable { var processes: Int; var processesPerNode: Int; var threads: Int; var rows: [Row]; var steps: [Step] }

    func validate() throws {
        guard (1 ... 1000).contains(rounds) else { throw ValidationError("--rounds must be 1...1000") }
        guard steps >= 0, batch >= 1 else { throw ValidationError("--steps must be >= 0 and --batch >= 1") }
    }

    func run() throws {
        guard let group = try MPIGroup.joinWorld() else {
            throw RuntimeError("bench allreduce measures a group of processes: run it under an MPI launcher, e.g. mpirun -np 2 unet bench allreduce")
        }
        var rows: [Row] = []
        for preset in Preset.allCases {
            let count = try UNet(config: preset.config).parameters.parameterCount
            var buffer = [Float](repeating: 1, count: count)
            var times: [Double] = []
            try buffer.withUnsafeMutableBufferPointer { b in
                try group.sum(b.baseAddress!, count: count)  // warm-up: connections and buffers set up once
                for _ in 0 ..< rounds {
                    _ = try group.sum([0])  // start together
                    let start = Date()
                    try group.sum(b.baseAddress!, count: count)
                    times.append(Date().timeIntervalSince(start))
                }
            }
            // Each round counts at its slowest member: a step waits for the last one.
            let worst = try maxOverGroup(times, group)
            let median = worst.sorted()[worst.count / 2]
            let bytes = Double(count * 4)
            rows.append(Row(preset: preset.rawValue, parameters: count, megabytes: bytes / 1e6, seconds: median,
                            busGBps: bytes * 2 * Double(group.size - 1) / Double(group.size) / median / 1e9))
        }
        let timed = steps > 0 ? try timeSteps(group) : []
        guard group.rank == 0 else { return }
        let report = Report(processes: group.size, processesPerNode: group.localSize, threads: Runtime.threads, rows: rows, steps: timed)
        if json { return try printJSON(report) }
        print("\(group.size) processes (\(group.localSize) on this node), median of \(rounds) allreduces of each preset's gradients (float32)")
        print("preset        parameters      MB   seconds  bus GB/s")
        for r in rows {
            print(r.preset.padding(toLength: 12, withPad: " ", startingAt: 0)
                  + String(format: " %11d %7.1f %9.4f %9.2f", r.parameters, r.megabytes, r.seconds, r.busGBps))
        }
        guard !timed.isEmpty else { return }
        print("composer-2d training steps, global batch \(batch) (\(batch / group.size) per process), alternating:")
        print("gradient sum          step s   waited after backward s")
        for s in timed {
            print((s.overlapped ? "overlapping backward" : "after backward").padding(toLength: 20, withPad: " ", startingAt: 0)
                  + String(format: " %8.3f %10.4f", s.seconds, s.waitSeconds))
        }
    }

    /// Training steps of composer-2d on a random batch shared by the group, alternating a gradient sum in buckets
    /// during backward and one after it (a first step unmeasured).
    private func timeSteps(_ group: MPIGroup) throws -> [Step] {
        guard batch >= group.size else { throw RuntimeError("a batch of \(batch) cannot be shared by \(group.size) processes") }
        let network = try UNet(config: .composer2D)
        network.shareTraining(with: group, synchronizedBatchNorm: false)
        let optimizer = try Optimizer(.recipe, parameters: network.parameters)
        let share = group.share(of: batch)
        var rng = SystemRandomNumberGenerator()
        let input = try Tensor(dims: [share.count, 4, 192, 160], values: (0 ..< share.count * 4 * 192 * 160).map { _ in Float.random(in: -1 ... 1, using: &rng) })
        let target = try Labels(dims: [share.count, 1, 192, 160], values: (0 ..< share.count * 192 * 160).map { _ in UInt8.random(in: 0 ... 3, using: &rng) })
        var out: [Step] = []
        for i in 0 ..< 2 * steps + 1 {
            let overlapped = i % 2 == 1
            network.gradientBucket = overlapped ? 4 << 20 : .max
            _ = try group.sum([0])  // start together
            let start = Date()
            _ = try network.trainingStep(input: input, target: target, optimizer: optimizer)
            let seconds = Date().timeIntervalSince(start)
            let worst = try maxOverGroup([seconds, network.lastGradientWait], group)
            if i > 0 { out.append(Step(overlapped: overlapped, seconds: worst[0], waitSeconds: worst[1])) }
        }
        return out
    }

    /// Element-wise maximum over the group (each member's times, round by round).
    private func maxOverGroup(_ values: [Double], _ group: ProcessGroup) throws -> [Double] {
        var all = [Double](repeating: 0, count: values.count * group.size)
        for (i, v) in values.enumerated() { all[group.rank * values.count + i] = v }
        all = try group.sum(all)
        return (0 ..< values.count).map { i in (0 ..< group.size).map { all[$0 * values.count + i] }.max()! }
    }
}
