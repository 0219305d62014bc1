// CPU time per operation of the pipeline and the pool, with 10 callers on one event loop and on
// two (sharing one ReliableDatabase, as a service's request handlers do). Operations do no I/O:
// what is measured is ReliableDB's own bookkeeping and what sharing it across cores costs.
// Stable to a few percent between runs, unlike end-to-end throughput on a shared machine.
//
//   RELIABLEDB_TEST_COMMAND='swift run -c release --package-path Benchmarks PipelineContention' scripts/test
//
// Settings: BENCH_ROUNDS (3), BENCH_ROUND_SECONDS (2).
import BenchmarkSupport
import Foundation
import ReliableDB
import ReliableDBPostgres

let environment = ProcessInfo.processInfo.environment
let rounds = Int(environment["BENCH_ROUNDS"] ?? "") ?? 3
let roundLength = Duration.seconds(Int(environment["BENCH_ROUND_SECONDS"] ?? "") ?? 2)
let executors = EventLoopExecutor.forDefaultEventLoops
let url = benchmarkServerURL()

/// Runs `operation` from 10 tasks spread over `loops` event loops for one round; returns the
/// busy time of those loops per operation, in nanoseconds.
func nanosecondsPerOperation(
    loops: Int,
    _ operation: @escaping @Sendable () async throws -> Void
) async throws
    -> Double
{
    let deadline = ContinuousClock.now + roundLength
    let start = ContinuousClock.now
    let count = try await withThrowingTaskGroup(of: Int.self) { group in
        for index in 0..<10 {
            group.addTask(executorPreference: executors[index % loops]) {
                var done = 0
                while ContinuousClock.now < deadline {
                    try await operation()
                    done += 1
                }
                return done
            }
        }
        return try await group.reduce(0, +)
    }
    return (ContinuousClock.now - start).seconds * 1e9 * Double(loops) / Double(count)
}

let options = OperationOptions.read("select-1")
let pipelineOnly = try ReliableDatabase(backend: NoopBackend())
let poolOnly = try PostgresBackend(url: url, connectionLimit: 10)
let pipelineAndPool = try ReliableDatabase(backend: try PostgresBackend(url: url, connectionLimit: 10))
let cases: [(String, @Sendable () async throws -> Void)] = [
    ("pipeline", { try await pipelineOnly.execute(options) { attempt in try attempt.withInterrupt({}) {} } }),
    ("pool lease+release", { try await poolOnly.withConnection { _ in } }),
    ("pipeline + pool", { try await pipelineAndPool.query(options) { _ in } }),
]
for (_, operation) in cases { _ = try await nanosecondsPerOperation(loops: executors.count, operation) }
var results: [String: [Double]] = [:]
for _ in 1...rounds {
    for (label, operation) in cases {
        for loops in [1, executors.count] {
            results["\(label), \(loops) loop\(loops == 1 ? "" : "s")", default: []].append(
                try await nanosecondsPerOperation(loops: loops, operation)
            )
        }
    }
}
for (label, values) in results.sorted(by: { $0.key < $1.key }) {
    let sorted = values.sorted()
    print(
        String(
            format: "%@ median %6.0f ns/op (rounds: %@)",
            label.padding(toLength: 28, withPad: " ", startingAt: 0),
            sorted[sorted.count / 2],
            values.map { String(format: "%.0f", $0) }.joined(separator: ", ")
        )
    )
}
try await pipelineAndPool.shutdown()
try await poolOnly.shutdown()
