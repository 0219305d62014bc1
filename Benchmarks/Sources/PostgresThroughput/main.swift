// Throughput of `SELECT 1` with N concurrent callers: ReliableDB's PostgreSQL client against the
// plain PostgresNIO client (PostgresClient) and against ReliableDB's pool without the pipeline
// (what the breaker, retries and deadline cost) and one dedicated connection per caller (no pool),
// on the same server in the same run, in
// alternating rounds so that machine noise hits all alike. Prints per-round figures, medians and
// the ratios.
//
//   RELIABLEDB_TEST_COMMAND='swift run -c release --package-path Benchmarks PostgresThroughput' scripts/test
//
// Settings: BENCH_CALLERS (10), BENCH_ROUNDS (5), BENCH_ROUND_SECONDS (3), BENCH_PINNED (0): 1 runs
// each caller on one of PostgresNIO's event loops (EventLoopExecutor), as `reliabledb loadtest` does,
// BENCH_PREPARED (0): 1 runs a prepared statement, as `loadtest --sql` does, BENCH_ONLY (all): the
// variants to run, comma-separated (`reliable` alone, to profile it).
import BenchmarkSupport
import Foundation
import Logging
import PostgresNIO
import ReliableDB
import ReliableDBPostgres

let environment = ProcessInfo.processInfo.environment
let callers = Int(environment["BENCH_CALLERS"] ?? "") ?? 10
let rounds = Int(environment["BENCH_ROUNDS"] ?? "") ?? 5
let roundLength = Duration.seconds(Int(environment["BENCH_ROUND_SECONDS"] ?? "") ?? 3)
let executors = environment["BENCH_PINNED"] == "1" ? EventLoopExecutor.forDefaultEventLoops : []
let prepared = environment["BENCH_PREPARED"] == "1"
let only = Set((environment["BENCH_ONLY"] ?? "plain,direct,pool,reliable").split(separator: ",").map(String.init))

/// `SELECT 1` as a prepared statement (BENCH_PREPARED=1): parsed once per connection.
struct SelectOne: PostgresPreparedStatement {
    static let sql = "SELECT 1"
    typealias Row = Int
    func makeBindings() -> PostgresBindings { PostgresBindings() }
    func decodeRow(_ row: PostgresRow) throws -> Int { try row.decode(Int.self) }
}

/// Runs `SELECT 1` on `connection` as the settings say.
func selectOne(on connection: PostgresConnection) async throws {
    if prepared {
        for try await _ in try await connection.execute(SelectOne(), logger: logger) {}
    } else {
        for try await _ in try await connection.query("SELECT 1", logger: logger) {}
    }
}
let url = benchmarkServerURL()
let logger = Logger(label: "bench")

// Plain PostgresNIO client.
var clientConfiguration = PostgresClient.Configuration(
    host: url.host,
    port: url.port,
    username: url.username,
    password: url.password?.value,
    database: url.database,
    tls: .disable
)
clientConfiguration.options.maximumConnections = callers
let client = PostgresClient(configuration: clientConfiguration)
let clientRunner = Task { await client.run() }

// ReliableDB with the defaults a user gets (breaker, retries, deadline) on the same pool size.
let db = try ReliableDatabase(backend: try PostgresBackend(url: url, connectionLimit: callers))
let options = OperationOptions.read("select-1")
// The same pool without the pipeline: isolates what the breaker, retries and deadline cost.
let backendOnly = try PostgresBackend(url: url, connectionLimit: callers)

// One dedicated connection per caller, no pool: the floor the others are measured against.
var directConnections: [PostgresConnection] = []
for index in 0..<callers {
    directConnections.append(
        try await connectDirectly(
            to: url,
            on: executors.isEmpty
                ? PostgresConnection.defaultEventLoopGroup.next() : executors[index % executors.count].eventLoop,
            id: index,
            applicationName: "bench-direct",
            logger: logger
        )
    )
}
let connections = directConnections

func measure(_ label: String, _ operation: @escaping @Sendable (Int) async throws -> Void) async throws -> Double {
    guard only.contains(label) else { return .nan }
    return try await measureThroughput(label, callers: callers, for: roundLength, on: executors, operation)
}

let direct: @Sendable (Int) async throws -> Void = { index in
    try await selectOne(on: connections[index])
}
let plain: @Sendable (Int) async throws -> Void = { _ in
    if prepared {
        for try await _ in try await client.execute(SelectOne(), logger: logger) {}
    } else {
        for try await _ in try await client.query("SELECT 1", logger: logger) {}
    }
}
let pool: @Sendable (Int) async throws -> Void = { _ in
    try await backendOnly.withConnection { connection in
        try await selectOne(on: connection)
    }
}
let reliable: @Sendable (Int) async throws -> Void = { _ in
    try await db.query(options) { connection in
        try await selectOne(on: connection)
    }
}

print(
    "SELECT 1\(prepared ? " prepared" : ""), \(callers) concurrent callers"
        + "\(executors.isEmpty ? "" : " pinned to \(executors.count) event loops"),",
    "\(rounds) rounds of \(roundLength) each, alternating"
)
print("warm-up")
_ = try await measure("plain", plain)
_ = try await measure("reliable", reliable)
_ = try await measure("pool", pool)
_ = try await measure("direct", direct)
var directRates: [Double] = []
var plainRates: [Double] = []
var reliableRates: [Double] = []
var poolRates: [Double] = []
for round in 1...rounds {
    print("round \(round)")
    if round.isMultiple(of: 2) {
        reliableRates.append(try await measure("reliable", reliable))
        poolRates.append(try await measure("pool", pool))
        plainRates.append(try await measure("plain", plain))
        directRates.append(try await measure("direct", direct))
    } else {
        directRates.append(try await measure("direct", direct))
        plainRates.append(try await measure("plain", plain))
        poolRates.append(try await measure("pool", pool))
        reliableRates.append(try await measure("reliable", reliable))
    }
}
print(String(format: "median plain    %9.0f queries/s", median(plainRates)))
print(String(format: "median direct   %9.0f queries/s", median(directRates)))
print(String(format: "median pool     %9.0f queries/s", median(poolRates)))
print(String(format: "median reliable %9.0f queries/s", median(reliableRates)))
print(ratioSummary("ratio reliable/plain, per round", reliableRates, plainRates))
print(ratioSummary("ratio reliable/direct (the bare driver), per round", reliableRates, directRates))
print(ratioSummary("ratio reliable/pool (the pipeline's cost), per round", reliableRates, poolRates))
print(
    "reliable pool: \(db.metrics().pool); breaker \(db.circuitBreaker.state.rawValue); failed \(db.metrics().failedQueries)"
)
try await db.shutdown()
try await backendOnly.shutdown()
for connection in connections { try await connection.close().get() }
clientRunner.cancel()
_ = await clientRunner.value
