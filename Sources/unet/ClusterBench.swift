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
    @Flag(help: "Print one JSON object instead of the table.") var json = false

    struct Row: Codable { var preset: String; var parameters: Int; var megabytes: Double; var seconds: Double; var busGBps: Double }
    struct Report: Codable { var processes: Int; var processesPerNode: Int; var threads: Int; var rows: [Row] }

    func validate() throws { guard (1 ... 1000).contains(rounds) else { throw ValidationError("--rounds must be 1...1000") } }

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
        guard group.rank == 0 else { return }
        let report = Report(processes: group.size, processesPerNode: group.localSize, threads: Runtime.threads, rows: rows)
        if json { return try printJSON(report) }
        print("\(group.size) processes (\(group.localSize) on this node), median of \(rounds) allreduces of each preset's gradients (float32)")
        print("preset        parameters      MB   seconds  bus GB/s")
        for r in rows {
            print(r.preset.padding(toLength: 12, withPad: " ", startingAt: 0)
                  + String(format: " %11d %7.1f %9.4f %9.2f", r.parameters, r.megabytes, r.seconds, r.busGBps))
        }
    }

    /// Element-wise maximum over the group (each member's times, round by round).
    private func maxOverGroup(_ values: [Double], _ group: ProcessGroup) throws -> [Double] {
        var all = [Double](repeating: 0, count: values.count * group.size)
        for (i, v) in values.enumerated() { all[group.rank * values.count + i] = v }
        all = try group.sum(all)
        return (0 ..< values.count).map { i in (0 ..< group.size).map { all[$0 * values.count + i] }.max()! }
    }
}
