// Throughput of the example app's Fluent queries (Examples/VaporERP: the active-user list and a
// find by id) with N concurrent callers: Fluent through ReliableDB (ReliableDBFluent, breaker,
// retries, deadline, metrics) against plain Fluent (fluent-postgres-driver), on the same server,
// the same table and the same number of connections, in alternating rounds so that machine noise
// hits both alike. Prints per-round figures, medians and the ratios.
//
//   RELIABLEDB_TEST_COMMAND='swift run -c release --package-path Benchmarks FluentThroughput' scripts/test
//
// Settings: BENCH_CALLERS (10), BENCH_ROUNDS (5), BENCH_ROUND_SECONDS (3).
import BenchmarkSupport
import FluentKit
import FluentPostgresDriver
import Foundation
import Logging
import NIOPosix
import PostgresNIO
import ReliableDB
import ReliableDBFluent
import ReliableDBPostgres

let environment = ProcessInfo.processInfo.environment
let callers = Int(environment["BENCH_CALLERS"] ?? "") ?? 10
let rounds = Int(environment["BENCH_ROUNDS"] ?? "") ?? 5
let roundLength = Duration.seconds(Int(environment["BENCH_ROUND_SECONDS"] ?? "") ?? 3)
let url = benchmarkServerURL()
let logger = Logger(label: "bench")

/// The example's `User`, on a table of its own.
final class BenchUser: Model, @unchecked Sendable {
    static let schema = "bench_fluent_users"
    @ID(key: .id) var id: UUID?
    @Field(key: "email") var email: String
    @Field(key: "name") var name: String
    @Field(key: "active") var active: Bool
    @Field(key: "order_count") var orderCount: Int
    init() {}
}

// The table, with 200 users of whom half are active.
let setup = try await connectDirectly(
    to: url,
    on: MultiThreadedEventLoopGroup.singleton.next(),
    id: 0,
    applicationName: "bench-setup",
    logger: logger
)
var ids: [UUID] = []
_ = try await setup.query("DROP TABLE IF EXISTS bench_fluent_users", logger: logger).collect()
_ = try await setup.query(
    """
    CREATE TABLE bench_fluent_users (id UUID PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
      active BOOL NOT NULL, order_count INT NOT NULL)
    """,
    logger: logger
).collect()
for index in 0..<200 {
    let id = UUID()
    ids.append(id)
    let email = "user\(index)@example.com"
    let active = index.isMultiple(of: 2)
    _ = try await setup.query(
        "INSERT INTO bench_fluent_users VALUES (\(id), \(email), \(email), \(active), 0)",
        logger: logger
    ).collect()
}
let userIDs = ids

// Both on Fluent's Databases, as an app has them; the same number of connections.
let group = MultiThreadedEventLoopGroup.singleton
let databases = Databases(threadPool: NIOThreadPool.singleton, on: group)
let reliableDatabase = try ReliableDatabase(backend: try PostgresBackend(url: url, connectionLimit: callers))
databases.use(.reliable(reliableDatabase, models: [BenchUser.self]), as: .reliable)
let loops = group.makeIterator().map { $0 }
databases.use(
    .postgres(
        configuration: SQLPostgresConfiguration(
            hostname: url.host,
            port: url.port,
            username: url.username,
            password: url.password?.value,
            database: url.database,
            tls: .disable
        ),
        maxConnectionsPerEventLoop: max(1, callers / loops.count)
    ),
    as: .psql
)

/// What the example's routes run: the active-user list (GET /api/users) and a find by id.
func exampleQueries(on database: any Database, caller: Int, iteration: Int) async throws {
    if iteration.isMultiple(of: 2) {
        _ = try await BenchUser.query(on: database).filter(\.$active == true).sort(\.$email).limit(20).all()
    } else {
        _ = try await BenchUser.find(userIDs[(caller * 31 + iteration) % userIDs.count], on: database)
    }
}

/// Each caller gets its database value once, on its own event loop, as a request does.
func measure(_ label: String, _ id: DatabaseID) async throws -> Double {
    let perCaller = (0..<callers).map { databases.database(id, logger: logger, on: loops[$0 % loops.count])! }
    let counters = (0..<callers).map { _ in Counter() }
    return try await measureThroughput(label, callers: callers, for: roundLength, on: []) { caller in
        try await exampleQueries(on: perCaller[caller], caller: caller, iteration: counters[caller].next())
    }
}

/// A caller's own iteration count (each caller's closure runs in one task at a time).
final class Counter: @unchecked Sendable {
    private var value = 0
    func next() -> Int {
        value += 1
        return value
    }
}

print(
    "the example's Fluent queries, \(callers) concurrent callers, \(rounds) rounds of \(roundLength) each, alternating"
)
print("warm-up")
_ = try await measure("plain", .psql)
_ = try await measure("reliable", .reliable)
var plainRates: [Double] = []
var reliableRates: [Double] = []
for round in 1...rounds {
    print("round \(round)")
    if round.isMultiple(of: 2) {
        reliableRates.append(try await measure("reliable", .reliable))
        plainRates.append(try await measure("plain", .psql))
    } else {
        plainRates.append(try await measure("plain", .psql))
        reliableRates.append(try await measure("reliable", .reliable))
    }
}
print(String(format: "median plain Fluent    %9.0f queries/s", median(plainRates)))
print(String(format: "median Fluent+ReliableDB %7.0f queries/s", median(reliableRates)))
print(ratioSummary("ratio reliable/plain Fluent, per round", reliableRates, plainRates))
let metrics = reliableDatabase.metrics()
print("reliable: failed \(metrics.failedQueries), operations \(metrics.queries.operations.keys.sorted())")
await databases.shutdownAsync()
try await reliableDatabase.shutdown()
_ = try await setup.query("DROP TABLE IF EXISTS bench_fluent_users", logger: logger).collect()
try await setup.close().get()
