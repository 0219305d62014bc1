import Foundation
import Logging
import PostgresNIO
import ReliableDB
import ReliableDBPostgres
import ReliableDBTestSupport
import Synchronization
import Testing

/// ReliableDB behind a real PgBouncer 1.18 in transaction pooling mode (started by scripts/test),
/// the way many production deployments run.
@Suite("Behind PgBouncer in transaction mode", .serialized)
struct PgBouncerTests {
    static func bouncerURL(pgbouncer: Bool = true) throws -> PostgresURL {
        var url = try FaultServers.url("RELIABLEDB_TEST_PGBOUNCER_URL")
        url.pgbouncer = pgbouncer
        return url
    }

    static func open(
        _ url: PostgresURL,
        queryTimeout: Duration = .seconds(5)
    ) throws -> ReliableDatabase<PostgresBackend> {
        let backend = try PostgresBackend(url: url, connectionLimit: 4, poolTimeout: .seconds(2))
        return try ReliableDatabase(
            backend: backend,
            configuration: .init(
                circuitBreaker: .init(failureThreshold: 1_000),
                timeouts: .init(query: queryTimeout)
            )
        )
    }

    /// The case that cancelled a psql client's statement with `pg_cancel_backend`: our timeouts
    /// fire while another client's statements run on the same server connections.
    @Test(.timeLimit(.minutes(1)))
    func aTimeoutStopsOurStatementAndNeverAnotherClients() async throws {
        let timeout = Duration.milliseconds(300)
        let db = try Self.open(try Self.bouncerURL(), queryTimeout: timeout)
        let other = try await Observer.connect(try Self.bouncerURL())
        let direct = try await Observer.connect(try FaultServers.url())
        let logger = Logger(label: "test.pgbouncer")
        let worst = Locked(Duration.zero)
        let otherFailures = Locked<[String]>([])
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for _ in 0..<8 {
                    do {
                        try await other.execute("SELECT pg_sleep(0.4)")
                    } catch {
                        otherFailures.withLock { $0.append(String(reflecting: error)) }
                    }
                }
            }
            for _ in 0..<3 {
                group.addTask {
                    for _ in 0..<4 {
                        let start = ContinuousClock.now
                        await #expect(throws: DatabaseTimeoutError.self) {
                            try await db.query(.read("long")) { connection in
                                _ = try await connection.query("SELECT pg_sleep(3)", logger: logger).collect()
                            }
                        }
                        let elapsed = ContinuousClock.now - start
                        worst.withLock { $0 = max($0, elapsed) }
                    }
                }
            }
            try await group.waitForAll()
        }
        let longest = worst.withLock { $0 }
        print(
            "fault report: pgbouncer timeouts: 12 of ours, longest \(longest), other client's failures: \(otherFailures.withLock { $0.count })"
        )
        #expect(otherFailures.withLock { $0 }.isEmpty, "another client's statement was disturbed")
        #expect(longest <= timeout + .milliseconds(100))
        // Ours were stopped on the server, not left running.
        #expect(
            try await eventually {
                try await direct.int(
                    "SELECT count(*)::int FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT pg_sleep(3)'"
                ) == 0
            }
        )
        #expect(db.metrics().activeOperations == 0)
        try await db.shutdown()
        try await other.close()
        try await direct.close()
    }

    @Test(.timeLimit(.minutes(1)))
    func queriesAndTransactionsRunThroughIt() async throws {
        let db = try Self.open(try Self.bouncerURL())
        let table = "bouncer_\(UUID().uuidString.prefix(8).lowercased())"
        let logger = Logger(label: "test.pgbouncer")
        try await db.query(.init("create")) { connection in
            _ = try await connection.query(PostgresQuery(unsafeSQL: "CREATE TABLE \(table) (n int)"), logger: logger)
                .collect()
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    for n in 0..<25 {
                        try await db.transaction(.init("insert")) { connection in
                            _ = try await connection.query(
                                "INSERT INTO \(unescaped: table) VALUES (\(worker * 100 + n))",
                                logger: logger
                            ).collect()
                            _ = try await connection.query("SELECT \(n)::int", logger: logger).collect()
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let count = try await db.query(.read("count")) { connection in
            var count = 0
            for try await value in try await connection.query(
                PostgresQuery(unsafeSQL: "SELECT count(*)::int FROM \(table)"),
                logger: logger
            ).decode(Int.self) {
                count = value
            }
            return count
        }
        #expect(count == 200)
        #expect(db.metrics().failedQueries == 0)
        try await db.query(.init("drop")) { connection in
            _ = try await connection.query(PostgresQuery(unsafeSQL: "DROP TABLE \(table)"), logger: logger).collect()
        }
        try await db.shutdown()
    }

    /// Without `pgbouncer=true` the pooler refuses the statement_timeout startup parameter; that
    /// answer only comes from a pooler, so the parameter is dropped, connecting goes on, and the
    /// backstop moves into each transaction as with the switch (before, it was simply lost).
    @Test(.timeLimit(.minutes(1)))
    func aRefusedStartupParameterIsDetected() async throws {
        let db = try Self.open(try Self.bouncerURL(pgbouncer: false))
        let logger = Logger(label: "t")
        let value = try await db.query(.read("one")) { connection in
            var value = 0
            for try await one in try await connection.query("SELECT 1::int", logger: logger).decode(Int.self) {
                value = one
            }
            return value
        }
        #expect(value == 1)
        #expect(db.raw.behindPooler)
        let inTransaction = try await db.transaction(.init("backstop")) { connection in
            var setting = ""
            for try await text in try await connection.query("SHOW statement_timeout", logger: logger)
                .decode(String.self)
            {
                setting = text
            }
            return setting
        }
        #expect(inTransaction != "0", "the transaction has its own backstop: \(inTransaction)")
        try await db.shutdown()
    }

    /// The CLI as a user runs it behind PgBouncer, with and without `pgbouncer=true`: `check --all`,
    /// `loadtest` (built-in reads and writes), `loadtest --sql` (prepared by name on a direct server)
    /// and the same through the plain driver (`--raw`), each with no failed operation.
    @Test(.timeLimit(.minutes(3)), arguments: [true, false])
    func checkAndLoadtestWorkThroughIt(pgbouncer: Bool) async throws {
        let url = try Self.bouncerURL()
        let password = try FaultServers.environment("RELIABLEDB_TEST_POSTGRES_PASSWORD")
        let databaseURL =
            "postgres://\(url.username):\(password)@\(url.host):\(url.port)/\(url.database)?sslmode=disable"
            + (pgbouncer ? "&pgbouncer=true" : "")
        let environment = ["DATABASE_URL": databaseURL]
        let check = try await runReliabledb(["check", "--all"], environment: environment)
        #expect(check.status == 0, "\(check.output)")
        let operations = ["--connections", "4", "--operations", "300", "--json"]
        for variant in [[], ["--sql", "SELECT 1"], ["--sql", "SELECT 1", "--raw"]] {
            let load = try await runReliabledb(["loadtest"] + variant + operations, environment: environment)
            #expect(load.status == 0, "\(variant): \(load.output)")
            let failed =
                load.output.contains("\"failedOperations\" : 0") || load.output.contains("\"failedOperations\":0")
            #expect(failed, "\(variant) with pgbouncer=\(pgbouncer): \(load.output.suffix(3000))")
            #expect(!load.output.contains(password), "the password leaked into the output")
        }
    }

    /// `SELECT $1::int * 2`, as a caller prepares its own statements.
    struct Doubled: PostgresPreparedStatement {
        static let sql = "SELECT $1::int * 2"
        typealias Row = Int
        var value: Int

        func makeBindings() -> PostgresBindings {
            var bindings = PostgresBindings()
            bindings.append(value)
            return bindings
        }

        func decodeRow(_ row: PostgresRow) throws -> Int { try row.decode(Int.self) }
    }

    /// Without `pgbouncer=true` the pooler is found at the first connect, and a caller's own
    /// prepared statements run through it without a failure or a retry: sent unnamed, since a
    /// statement prepared by name on one server connection is missing on the next (26000) and,
    /// under one name, already there for another client (42P05). The same statements prepared by
    /// name through the same pooler do fail, so the test can fail.
    @Test(.timeLimit(.minutes(1)))
    func aCallersPreparedStatementsWorkThroughAPoolerFoundWithoutTheSwitch() async throws {
        let logger = Logger(label: "test.pgbouncer")
        func load(_ body: @escaping @Sendable (Int) async throws -> Void) async throws {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<4 {
                    group.addTask {
                        for n in 0..<100 { try await body(worker * 1000 + n) }
                    }
                }
                try await group.waitForAll()
            }
        }
        let db = try ReliableDatabase(backend: try PostgresBackend(url: try Self.bouncerURL(pgbouncer: false)))
        let wrong = Locked(0)
        try await load { value in
            if try await db.run(.read("doubled"), Doubled(value: value)) != [2 * value] { wrong.withLock { $0 += 1 } }
        }
        #expect(db.raw.behindPooler, "the refused startup parameter showed the pooler")
        #expect(wrong.withLock { $0 } == 0)
        let unnamed = db.metrics().queries.operations["doubled"]
        #expect(unnamed?.successes == 400, "\(String(describing: unnamed))")
        #expect(unnamed?.failures == 0 && unnamed?.retries == 0, "\(String(describing: unnamed))")
        try await db.shutdown()

        // The same statements prepared by name (PostgresNIO's `execute`) through the same pooler.
        let named = try ReliableDatabase(backend: try PostgresBackend(url: try Self.bouncerURL(pgbouncer: false)))
        try await load { value in
            _ = try? await named.query(OperationOptions("by-name", retries: false)) { connection in
                for try await _ in try await connection.execute(Doubled(value: value), logger: logger) {}
            }
        }
        let failedInLoad = named.metrics().queries.operations["by-name"]?.failures ?? 0
        try await named.shutdown()
        // Four clients may each keep landing on one server connection, so the load alone can pass
        // by name (CI saw it once). Two clients taking turns cannot: PgBouncer hands the server
        // connection one just released to the other, which prepares the same name there (42P05)
        // or finds it missing on another one (26000).
        let first = try await Observer.connect(try Self.bouncerURL(pgbouncer: false))
        let second = try await Observer.connect(try Self.bouncerURL(pgbouncer: false))
        var failedInTurns = 0
        for turn in 0..<20 {
            let client = turn.isMultiple(of: 2) ? first.connection : second.connection
            do {
                for try await _ in try await client.execute(Doubled(value: turn), logger: logger) {}
            } catch {
                failedInTurns += 1
            }
        }
        try await first.connection.close()
        try await second.connection.close()
        #expect(failedInTurns > 0, "statements prepared by name fail behind the pooler")
        print(
            "fault report: pgbouncer prepared statements: unnamed 400 of 400 ok; by name \(failedInLoad) of 400"
                + " failed under load, \(failedInTurns) of 20 taking turns"
        )

        let direct = try ReliableDatabase(backend: try PostgresBackend(url: try FaultServers.url()))
        #expect(try await direct.run(.read("doubled"), Doubled(value: 21)) == [42])
        #expect(!direct.raw.behindPooler, "a direct server is not taken for a pooler")
        try await direct.shutdown()
    }
}

/// Runs the built `reliabledb` with `arguments` and returns its status and combined output.
func runReliabledb(_ arguments: [String], environment: [String: String]) async throws -> (status: Int32, output: String)
{
    let process = try ServerProcess(binary: reliabledbBinary, arguments: arguments, environment: environment)
    let status = await process.exitStatus()
    return (status, process.standardOutput + process.standardError)
}

/// Polls `condition` every few milliseconds for up to 10 s (a bound for a broken test, not timing).
func eventually(_ condition: () async throws -> Bool) async throws -> Bool {
    let start = ContinuousClock.now
    while ContinuousClock.now - start < .seconds(10) {
        if (try? await condition()) == true { return true }
        try await Task.sleep(for: .milliseconds(20))
    }
    return (try? await condition()) == true
}
