// What PostgresNIO's two prepared-statement APIs cost per `SELECT 1`: the async
// `PostgresPreparedStatement` (rows as an async sequence) against `PreparedQuery` (the
// EventLoopFuture API, rows handed to a callback on the event loop), which `loadtest --sql` uses.
// 10 callers, each with its own connection on the event loop its task runs on (no pool), in
// alternating rounds against the same server.
//
//   RELIABLEDB_TEST_COMMAND='swift run -c release --package-path Benchmarks PostgresAPIs' scripts/test
//
// Settings: BENCH_ROUNDS (5), BENCH_ROUND_SECONDS (3).
import BenchmarkSupport
import Foundation
import Logging
import PostgresNIO
import ReliableDB
import ReliableDBPostgres

let environment = ProcessInfo.processInfo.environment
let callers = 10
let rounds = Int(environment["BENCH_ROUNDS"] ?? "") ?? 5
let roundLength = Duration.seconds(Int(environment["BENCH_ROUND_SECONDS"] ?? "") ?? 3)
let executors = EventLoopExecutor.forDefaultEventLoops
let url = benchmarkServerURL()
let logger = Logger(label: "bench")

struct SelectOne: PostgresPreparedStatement {
    static let sql = "SELECT 1"
    typealias Row = Int
    func makeBindings() -> PostgresBindings { PostgresBindings() }
    func decodeRow(_ row: PostgresRow) throws -> Int { try row.decode(Int.self) }
}

var openedConnections: [PostgresConnection] = []
var preparedQueries: [PreparedQuery] = []
for index in 0..<callers {
    let connection = try await connectDirectly(
        to: url,
        on: executors[index % executors.count].eventLoop,
        id: index,
        applicationName: "bench-apis",
        logger: logger
    )
    openedConnections.append(connection)
    preparedQueries.append(try await connection.prepare(query: SelectOne.sql).get())
}
let connections = openedConnections
let statements = preparedQueries

func measure(_ label: String, _ operation: @escaping @Sendable (Int) async throws -> Void) async throws -> Double {
    try await measureThroughput(label, callers: callers, for: roundLength, on: executors, operation)
}

let asyncSequence: @Sendable (Int) async throws -> Void = { index in
    for try await _ in try await connections[index].execute(SelectOne(), logger: logger) {}
}
let eventLoopFuture: @Sendable (Int) async throws -> Void = { index in
    try await statements[index].execute([]) { _ in }.get()
}

print("SELECT 1 prepared, \(callers) callers with a connection each on \(executors.count) event loops")
_ = try await measure("warm-up", eventLoopFuture)
var asyncRates: [Double] = []
var futureRates: [Double] = []
for round in 1...rounds {
    print("round \(round)")
    if round.isMultiple(of: 2) {
        futureRates.append(try await measure("future", eventLoopFuture))
        asyncRates.append(try await measure("async", asyncSequence))
    } else {
        asyncRates.append(try await measure("async", asyncSequence))
        futureRates.append(try await measure("future", eventLoopFuture))
    }
}
print(String(format: "median async  %9.0f queries/s", median(asyncRates)))
print(String(format: "median future %9.0f queries/s", median(futureRates)))
print(ratioSummary("ratio future/async, per round", futureRates, asyncRates))
for connection in connections { try await connection.close().get() }
