// What the side-by-side throughput benchmarks share: closed-loop callers for one round, medians
// and per-round ratios.
import Foundation
import ReliableDB

/// Runs `operation` from `callers` tasks for `length`, caller `i` on `executors[i % count]` (none:
/// the global executor); prints and returns the operations per second.
public func measureThroughput(
    _ label: String,
    callers: Int,
    for length: Duration,
    on executors: [any TaskExecutor],
    _ operation: @escaping @Sendable (Int) async throws -> Void
) async throws -> Double {
    let deadline = ContinuousClock.now + length
    let start = ContinuousClock.now
    let count = try await withThrowingTaskGroup(of: Int.self) { group in
        for index in 0..<callers {
            group.addTask(executorPreference: executors.isEmpty ? nil : executors[index % executors.count]) {
                var done = 0
                while ContinuousClock.now < deadline {
                    try await operation(index)
                    done += 1
                }
                return done
            }
        }
        return try await group.reduce(0, +)
    }
    let rate = Double(count) / (ContinuousClock.now - start).seconds
    print("  \(label.padding(toLength: 9, withPad: " ", startingAt: 0))" + String(format: "%9.0f queries/s", rate))
    return rate
}

public func median(_ values: [Double]) -> Double {
    values.sorted()[values.count / 2]
}

/// "<title>: median 1.234 (rounds: …)" for the round-by-round ratios `numerators[i] / denominators[i]`.
public func ratioSummary(_ title: String, _ numerators: [Double], _ denominators: [Double]) -> String {
    let ratios = zip(numerators, denominators).map { $0 / $1 }
    return String(
        format: "%@: median %.3f (rounds: %@)",
        title,
        median(ratios),
        ratios.map { String(format: "%.3f", $0) }.joined(separator: ", ")
    )
}
