// What PostgresNIO's two prepared-statement APIs cost per `SELECT 1`: the async
// `PostgresPreparedStatement` (rows as an async sequence) against `PreparedQuery` (the
// EventLoopFuture API, rows handed to a callback on the event loop), which `loadtest --sql` uses,
// and, as the driver's ceiling, `PreparedQuery` chained on the event loop with no Swift task per
// query. 10 callers, each with its own connection on the event loop its task runs on (no pool),
// in rotating rounds against the same server.
//
//   RELIABLEDB_TEST_COMMAND='swift run -c release --package-path Benchmarks PostgresAPIs' scripts/test
//
// Settings: BENCH_ROUNDS (5), BENCH_ROUND_SECONDS (3).
import BenchmarkSupport
import Foundation
import Logging
import NIOCore
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

/// One caller of the chained mode: each query is sent from the previous one's completion
/// callback. Touched only on its connection's event loop.
final class Chain: @unchecked Sendable {
    let statement: PreparedQuery
    let deadline: NIODeadline
    let finished: EventLoopPromise<Int>
    var done = 0

    init(_ statement: PreparedQuery, until deadline: NIODeadline, on eventLoop: any EventLoop) {
        self.statement = statement
        self.deadline = deadline
        finished = eventLoop.makePromise()
    }

    func next() {
        guard NIODeadline.now() < deadline else { return finished.succeed(done) }
        statement.execute([]) { _ in }.whenComplete { result in
            switch result {
            case .success:
                self.done += 1
                self.next()
            case .failure(let error):
                self.finished.fail(error)
            }
        }
    }
}

func measureChains() async throws -> Double {
    let start = ContinuousClock.now
    let deadline = NIODeadline.now() + TimeAmount(roundLength)
    let chains = (0..<callers).map { Chain(statements[$0], until: deadline, on: connections[$0].eventLoop) }
    for (index, chain) in chains.enumerated() {
        connections[index].eventLoop.execute { chain.next() }
    }
    var count = 0
    for chain in chains {
        count += try await chain.finished.futureResult.get()
    }
    let rate = Double(count) / (ContinuousClock.now - start).seconds
    print("  chain    " + String(format: "%9.0f queries/s", rate))
    return rate
}

print("SELECT 1 prepared, \(callers) callers with a connection each on \(executors.count) event loops")
_ = try await measure("warm-up", eventLoopFuture)
var asyncRates: [Double] = []
var futureRates: [Double] = []
var chainRates: [Double] = []
for round in 1...rounds {
    print("round \(round)")
    // Rotated, so no mode always runs first.
    let modes = [0, 1, 2].map { ($0 + round) % 3 }
    for mode in modes {
        switch mode {
        case 0: asyncRates.append(try await measure("async", asyncSequence))
        case 1: futureRates.append(try await measure("future", eventLoopFuture))
        default: chainRates.append(try await measureChains())
        }
    }
}
print(String(format: "median async  %9.0f queries/s", median(asyncRates)))
print(String(format: "median future %9.0f queries/s", median(futureRates)))
print(String(format: "median chain  %9.0f queries/s", median(chainRates)))
print(ratioSummary("ratio future/async, per round", futureRates, asyncRates))
print(ratioSummary("ratio future/chain, per round", futureRates, chainRates))
for connection in connections { try await connection.close().get() }
