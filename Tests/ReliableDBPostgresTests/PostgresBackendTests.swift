import Foundation
import InMemoryTracing
import Logging
import PostgresNIO
import ReliableDB
import ReliableDBPostgres
import ReliableDBTesting
import Synchronization
import Testing

/// Every test here talks to the one throwaway server, and some stop it or change its settings,
/// so they run one at a time.
@Suite("PostgreSQL backend against a real server", .serialized, .timeLimit(.minutes(1)))
struct PostgresBackendTests {
    let logger = Logger(label: "test")

    @Test func queriesAndTransactionsRoundTrip() async throws {
        let db = try TestServer.open(try TestServer.url())
        let value = try await db.selectInt(.read("select-one"), "SELECT 41 + 1")
        #expect(value == 42)
        let table = "t_\(UUID().uuidString.prefix(8).lowercased())"
        try await db.query(.init("create")) { connection in
            _ = try await connection.query(
                PostgresQuery(unsafeSQL: "CREATE TABLE \(table) (id int primary key)"),
                logger: logger
            ).collect()
        }
        try await db.transaction(.init("insert-two")) { connection in
            _ = try await connection.query(PostgresQuery(unsafeSQL: "INSERT INTO \(table) VALUES (1)"), logger: logger)
                .collect()
            _ = try await connection.query(PostgresQuery(unsafeSQL: "INSERT INTO \(table) VALUES (2)"), logger: logger)
                .collect()
        }
        await #expect(throws: PostgresTransactionError.self) {
            try await db.transaction(.init("insert-duplicate")) { connection in
                _ = try await connection.query(
                    PostgresQuery(unsafeSQL: "INSERT INTO \(table) VALUES (3)"),
                    logger: logger
                ).collect()
                _ = try await connection.query(
                    PostgresQuery(unsafeSQL: "INSERT INTO \(table) VALUES (1)"),
                    logger: logger
                ).collect()
            }
        }
        #expect(
            try await db.selectInt(.read("count"), "SELECT count(*)::int FROM \(table)") == 2,
            "the failed transaction left nothing"
        )
        let metrics = db.metrics()
        #expect(metrics.retries == 0, "a unique violation is the caller's error")
        #expect(metrics.circuitBreaker.state == .closed)
        #expect(metrics.circuitBreaker.totalFailures == 0)
        #expect(metrics.errorsByClass[.caller] == 1)
        try await db.query(.init("drop")) { connection in
            _ = try await connection.query(PostgresQuery(unsafeSQL: "DROP TABLE \(table)"), logger: logger).collect()
        }
        try await db.shutdown()
    }

    /// PostgresNIO's EventLoopFuture API (`PreparedQuery`, which `loadtest --sql` uses) reports
    /// the legacy `PostgresError`; the pipeline must classify it like `PSQLError`.
    @Test func theEventLoopFutureAPIsErrorsAreClassifiedLikeTheAsyncAPIs() async throws {
        let db = try TestServer.open(try TestServer.url())
        let error = await #expect(throws: PostgresError.self) {
            try await db.query(.read("divide-by-zero")) { connection in
                let statement = try await connection.prepare(query: "SELECT 1 / $1::bigint").get()
                _ = try await statement.execute([PostgresData(int: 0)]).get()
            }
        }
        #expect(error.map(describePostgresError)?.hasPrefix("SQLSTATE 22012: ") == true)
        let metrics = db.metrics()
        #expect(metrics.errorsByClass[.caller] == 1, "22012 is the caller's error")
        #expect(metrics.retries == 0)
        #expect(metrics.circuitBreaker.totalFailures == 0)
        let lost = PostgresBackend.classify(PostgresError.connectionClosed)
        #expect(lost.errorClass == .connection)
        #expect(lost.discardConnection)
        try await db.shutdown()
    }

    @Test func poolStatisticsMatchPgStatActivity() async throws {
        let url = try TestServer.url()
        let db = try TestServer.open(url, connectionLimit: 5, poolTimeout: .seconds(20))
        let observer = try await Observer.connect()
        let release = Flag()
        let callers = (0..<8).map { _ in
            Task {
                try await db.query(.read("hold")) { connection in
                    _ = try await connection.query("SELECT pg_sleep(0.01)", logger: logger).collect()
                    // Keep the connection leased (and a statement running) until the test looks.
                    while !release.isSet {
                        _ = try await connection.query("SELECT pg_sleep(0.02)", logger: logger).collect()
                    }
                }
            }
        }
        #expect(try await eventually { db.metrics().pool.active == 5 && db.metrics().pool.waiting == 3 })
        let pool = db.metrics().pool
        let server = try await observer.activity(of: url.applicationName)
        #expect(pool.total == 5)
        #expect(server.total == pool.total, "pool says \(pool.total) open, server sees \(server.total)")
        #expect(pool.idle == 0)
        #expect(pool.max == 5)
        #expect(pool.utilization == 100)
        release.set()
        for caller in callers { try await caller.value }
        let after = db.metrics().pool
        #expect(after.active == 0)
        #expect(after.waiting == 0)
        #expect(after.idle == after.total)
        #expect(try await eventually { try await observer.activity(of: url.applicationName).active == 0 })
        #expect(try await observer.activity(of: url.applicationName).total == after.total)
        #expect(after.averageAcquireTime > .zero)
        try await db.shutdown()
        #expect(try await eventually { try await observer.activity(of: url.applicationName).total == 0 })
        try await observer.close()
    }

    @Test func aTimeoutCancelsTheQueryOnTheServer() async throws {
        let url = try TestServer.url()
        let db = try TestServer.open(url, connectionLimit: 1)
        let observer = try await Observer.connect()
        _ = try await db.selectInt(.read("warm-up"), "SELECT 1")
        do {
            _ = try await db.query(.init("sleep", timeout: .milliseconds(250))) { connection in
                _ = try await connection.query("SELECT pg_sleep(5)", logger: logger).collect()
            }
            Issue.record("pg_sleep(5) finished within a 250 ms timeout")
        } catch let error as DatabaseTimeoutError {
            #expect(error.timeout == .milliseconds(250))
            // The pipeline's own clock at the moment it returns the error: how long this test task
            // then waits to be resumed on a busy machine is not the library's latency.
            #expect(error.elapsed < .milliseconds(350), "returned after \(error.elapsed)")
        }
        // Stopped by the cancel, well before pg_sleep's 5 s (on a loaded machine the cancel may
        // land a little after the caller was released).
        #expect(
            try await eventually(within: .seconds(2)) {
                try await observer.activity(of: url.applicationName).active == 0
            },
            "nothing runs on the server any more"
        )
        // The single connection is free at once: a query whose own deadline leaves no room to wait
        // for a replacement connection gets it.
        #expect(try await db.selectInt(.read("next", timeout: .milliseconds(200)), "SELECT 7") == 7)
        // Reused when the cancel's 57014 came back within the cancel grace; on a loaded machine the
        // grace may pass first, and then the connection is closed and replaced once.
        let pool = db.metrics().pool
        #expect(pool.opened <= 2, "\(pool)")
        #expect(pool.total == 1 && pool.active == 0, "\(pool)")
        #expect(db.metrics().timeouts == 1)
        try await db.shutdown()
        try await observer.close()
    }

    @Test func waitersBeyondThePoolTimeoutGetThePoolTimeoutError() async throws {
        let db = try TestServer.open(
            try TestServer.url(),
            connectionLimit: 2,
            poolTimeout: .milliseconds(300),
            reliability: .init(circuitBreakerEnabled: false)
        )
        let start = ContinuousClock.now
        let outcomes = await withTaskGroup(of: String.self) { group in
            for _ in 0..<20 {
                group.addTask {
                    do {
                        try await db.query(OperationOptions("slow", retries: false)) { connection in
                            _ = try await connection.query("SELECT pg_sleep(1)", logger: logger).collect()
                        }
                        return "ok"
                    } catch let error as DatabasePoolTimeoutError {
                        return error.statistics.max == 2 && error.waited >= .milliseconds(300)
                            ? "pool-timeout" : "bad-stats"
                    } catch {
                        return "other: \(error)"
                    }
                }
            }
            return await group.reduce(into: [String: Int]()) { $0[$1, default: 0] += 1 }
        }
        #expect(outcomes["ok"] == 2)
        #expect(outcomes["pool-timeout"] == 18, "\(outcomes)")
        #expect(ContinuousClock.now - start < .seconds(3), "nobody hung")
        #expect(db.metrics().pool.acquireTimeouts == 18)
        #expect(db.metrics().pool.waiting == 0)
        try await db.shutdown()
    }

    /// The probe reads the server's client connections against its limit (the fleet's use, not
    /// this pool's): into the health status and `/api/health`.
    @Test func theProbeReadsTheServersConnectionsAgainstItsLimit() async throws {
        let db = try TestServer.open(try TestServer.url(), connectionLimit: 2)
        let observer = try await Observer.connect()
        let status = await HealthMonitor(database: db).checkNow()
        let connections = try #require(status.serverConnections)
        let seen = try await observer.count(
            "SELECT count(*)::int FROM pg_stat_activity WHERE backend_type = 'client backend'"
        )
        #expect(connections.max == 200 && connections.reserved == 3, "\(connections)")
        // Other tests connect and disconnect meanwhile: the two reads are close, not equal.
        #expect(connections.inUse >= 2 && abs(connections.inUse - seen) <= 50, "\(connections) against \(seen)")
        let report = String(decoding: HealthReport.json(status), as: UTF8.self)
        #expect(report.contains("\"serverConnections\":{\"inUse\":\(connections.inUse),\"max\":200"), "\(report)")
        try await observer.close()
        try await db.shutdown()
    }

    /// A refused connect names the server once (the URL), with the cause in words, in the error
    /// and in the health check's reason.
    @Test func aRefusedConnectNamesTheServerOnce() async throws {
        let url = try TestServer.url { $0.endpoints = [PostgresURL.Endpoint(host: "127.0.0.1", port: 1)] }
        let db = try TestServer.open(url, connectionLimit: 1, poolTimeout: .seconds(2))
        var texts: [String] = []
        do {
            _ = try await db.query(.read("refused")) { _ in 1 }
        } catch {
            texts.append("\(error)")
        }
        texts.append(await HealthMonitor(database: db).checkNow().lastError ?? "")
        for text in texts {
            #expect(text.components(separatedBy: "127.0.0.1:1").count == 2, "the server once: \(text)")
            #expect(text.contains("connection refused"), "\(text)")
        }
        try await db.shutdown()
    }

    /// A transaction whose connection dies on every attempt ends with the retries spent. Its message
    /// says each cause in words, once: never a driver type's debug form with a source path
    /// (`PostgresTransactionError(file: ...`), which an HTTP body would otherwise carry.
    @Test func aTransactionLostOnEveryAttemptIsReportedInWords() async throws {
        let db = try TestServer.open(
            try TestServer.url(),
            connectionLimit: 2,
            reliability: .init(
                circuitBreakerEnabled: false,
                retry: .init(attempts: 3, initialDelay: .milliseconds(10))
            )
        )
        let logger = Logger(label: "test")
        do {
            try await db.transaction(.init("doomed")) { connection in
                _ = try await connection.query("SELECT pg_terminate_backend(pg_backend_pid())", logger: logger)
                    .collect()
            }
            Issue.record("a transaction whose connection was terminated committed")
        } catch let error as DatabaseRetryError {
            let text = "\(error)"
            #expect(error.attempts == 3, "\(text)")
            #expect(text.contains("the transaction did not commit"), "\(text)")
            #expect(!text.contains("file: \"") && !text.contains("PostgresTransactionError"), "\(text)")
            #expect(text.components(separatedBy: "did not commit").count == 2, "one cause, said once: \(text)")
        } catch {
            Issue.record("expected the retries to be spent, got \(error)")
        }
        try await db.shutdown()
    }

    @Test func aTerminatedBackendIsDiscardedAndIdempotentReadsAreRetried() async throws {
        let url = try TestServer.url()
        let db = try TestServer.open(
            url,
            connectionLimit: 3,
            reliability: .init(
                circuitBreaker: .init(failureThreshold: 100),
                retry: .init(attempts: 5, initialDelay: .milliseconds(10))
            )
        )
        let observer = try await Observer.connect()
        let stop = Flag()
        let readers = (0..<6).map { index in
            Task {
                var completed = 0
                while !stop.isSet {
                    _ = try await db.selectInt(.read("read"), "SELECT \(index) FROM pg_sleep(0.01)")
                    completed += 1
                }
                return completed
            }
        }
        #expect(try await eventually { db.metrics().successfulQueries >= 30 })
        // Only backends running a read: one killed between reads is replaced without a retry, and on
        // a loaded machine all three can be between reads at the instant of a single kill.
        var killed = 0
        for _ in 0..<200 where killed == 0 {
            killed = try await observer.count(
                """
                SELECT count(pg_terminate_backend(pid))::int FROM pg_stat_activity
                WHERE application_name = '\(url.applicationName)' AND state = 'active'
                """
            )
        }
        #expect(killed >= 1, "a backend was killed while it ran a read")
        let afterKill = db.metrics().successfulQueries
        #expect(try await eventually { db.metrics().successfulQueries >= afterKill + 30 })
        stop.set()
        var total = 0
        for reader in readers { total += try await reader.value }
        let metrics = db.metrics()
        #expect(total == metrics.successfulQueries)
        #expect(metrics.failedQueries == 0, "every read survived the kill")
        #expect(metrics.retries >= 1)
        #expect((metrics.pool.closesByReason["broken"] ?? 0) + (metrics.pool.closesByReason["server"] ?? 0) >= 1)
        #expect(metrics.pool.active == 0)
        try await db.shutdown()
        try await observer.close()
    }

    @Test func serializableTransfersAreRetriedAsWholeTransactionsExactlyOnce() async throws {
        let db = try TestServer.open(
            try TestServer.url(),
            connectionLimit: 8,
            reliability: .init(
                retry: .init(attempts: 30, initialDelay: .milliseconds(1), maxDelay: .milliseconds(50)),
                retryBudget: .unlimited
            )
        )
        let suffix = UUID().uuidString.prefix(8).lowercased()
        let accounts = "accounts_\(suffix)"
        let transfers = "transfers_\(suffix)"
        try await db.query(.init("setup")) { connection in
            for sql in [
                "CREATE TABLE \(accounts) (id int primary key, balance int not null)",
                "CREATE TABLE \(transfers) (id int primary key, source int, target int, amount int)",
                "INSERT INTO \(accounts) SELECT g, 1000 FROM generate_series(1, 3) g",
            ] {
                _ = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect()
            }
        }
        let attempts = Counter()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    for step in 0..<10 {
                        let transferID = worker * 100 + step
                        let source = (worker + step) % 3 + 1
                        let target = (worker + step + 1) % 3 + 1
                        try await db.transaction(.init("transfer")) { connection in
                            attempts.increment()
                            for sql in [
                                "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                                "UPDATE \(accounts) SET balance = balance - 7 WHERE id = \(source)",
                                "UPDATE \(accounts) SET balance = balance + 7 WHERE id = \(target)",
                                "INSERT INTO \(transfers) VALUES (\(transferID), \(source), \(target), 7)",
                            ] {
                                _ = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect()
                            }
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(try await db.selectInt(.read("sum"), "SELECT sum(balance)::int FROM \(accounts)") == 3000)
        #expect(try await db.selectInt(.read("count"), "SELECT count(*)::int FROM \(transfers)") == 80)
        let metrics = db.metrics()
        #expect(metrics.successfulQueries >= 80)
        #expect(metrics.retries > 0, "8 writers on 3 rows under SERIALIZABLE must conflict")
        #expect(attempts.count == 80 + metrics.retries)
        #expect(metrics.circuitBreaker.totalFailures == 0, "serialization failures are not outages")
        try await db.query(.init("drop")) { connection in
            _ = try await connection.query(
                PostgresQuery(unsafeSQL: "DROP TABLE \(accounts), \(transfers)"),
                logger: logger
            ).collect()
        }
        try await db.shutdown()
    }

    @Test func anOutageOpensTheBreakerAndTheFirstProbeAfterTheTimeoutClosesIt() async throws {
        let db = try TestServer.open(
            try TestServer.outageURL(),
            connectionLimit: 2,
            poolTimeout: .milliseconds(500),
            reliability: .init(
                circuitBreaker: .init(failureThreshold: 3, successThreshold: 1, timeout: .seconds(1)),
                retry: .none
            )
        )
        #expect(try await db.selectInt(.read("before"), "SELECT 1") == 1)
        try await TestServer.control("stop")
        do {
            var failures = 0
            while db.circuitBreaker.state == .closed && failures < 20 {
                do {
                    _ = try await db.selectInt(.read("during"), "SELECT 1")
                } catch {
                    failures += 1
                }
            }
            #expect(db.circuitBreaker.state == .open)
            // While open, calls fail fast: rejected before the pool is asked for a connection.
            let before = db.metrics()
            await #expect(throws: DatabaseCircuitBreakerError.self) {
                _ = try await db.selectInt(.read("while-open"), "SELECT 1")
            }
            let after = db.metrics()
            #expect(after.rejectedByCircuitBreaker == before.rejectedByCircuitBreaker + 1)
            #expect(after.pool.acquireTimeouts == before.pool.acquireTimeouts)
            #expect(after.pool.connectFailures == before.pool.connectFailures)
        }
        try await TestServer.control("start")
        // After DB_CB_TIMEOUT the next call is the probe; with the server back it closes the breaker.
        #expect(
            try await eventually(within: .seconds(30)) {
                (try? await db.selectInt(.read("after"), "SELECT 1")) == 1
            }
        )
        #expect(db.circuitBreaker.state == .closed)
        try await db.shutdown()
    }

    @Test func anOperationWhoseTimeoutOutlastsTheBackstopRaisesItForItsOwnLeaseOnly() async throws {
        let backend = try PostgresBackend(
            url: try TestServer.url(),
            connectionLimit: 1,
            statementTimeout: .milliseconds(300)
        )
        let db = try ReliableDatabase(backend: backend, configuration: .init())
        // Its own timeout is 5 s: the server's 300 ms must not end it first.
        let rows = try await db.query(.init("long", timeout: .seconds(5))) { connection in
            try await connection.query("SELECT pg_sleep(0.6)", logger: logger).collect().count
        }
        #expect(rows == 1)
        // The pool's one connection is back to the backstop for the next caller, which has no deadline.
        let setting = try await backend.withConnection { connection in
            var value = ""
            for try await row in try await connection.query("SHOW statement_timeout", logger: logger)
                .decode(String.self)
            {
                value = row
            }
            return value
        }
        #expect(setting == "300ms")
        #expect(backend.poolStatistics().total == 1, "the raised setting was reset, not left for a new connection")
        // A transaction of that kind too.
        let committed = try await db.transaction(.init("long transaction", kind: .transaction, timeout: .seconds(5))) {
            connection in
            try await connection.query("SELECT pg_sleep(0.6)", logger: logger).collect().count
        }
        #expect(committed == 1)
        try await db.shutdown()
    }

    @Test func theStatementTimeoutBackstopStopsAQueryWhenNoDeadlineIsSet() async throws {
        let backend = try PostgresBackend(
            url: try TestServer.url(),
            connectionLimit: 1,
            statementTimeout: .milliseconds(200)
        )
        let db = try ReliableDatabase(backend: backend, configuration: .init(timeouts: .init(enabled: false)))
        let start = ContinuousClock.now
        do {
            try await db.query(.init("sleep")) { connection in
                _ = try await connection.query("SELECT pg_sleep(3)", logger: logger).collect()
            }
            Issue.record("pg_sleep(3) outlived a 200 ms statement_timeout")
        } catch {
            #expect(db.metrics().errorsByClass[.timeout] == 1, "57014 from the server is a timeout")
        }
        #expect(ContinuousClock.now - start < .seconds(2))
        #expect(try await db.selectInt(.read("after"), "SELECT 1") == 1)
        try await db.shutdown()
    }

    @Test func connectionsAreRetiredAfterTheirMaximumLifetime() async throws {
        let clock = ManualClock()
        let backend = try PostgresBackend(
            url: try TestServer.url(),
            connectionLimit: 1,
            maxLifetime: .seconds(60),
            clock: clock
        )
        let db = try ReliableDatabase(
            backend: backend,
            configuration: .init(timeouts: .init(enabled: false)),
            clock: clock
        )
        var pids: [Int] = []
        for _ in 0..<3 {
            // The lifetime passes while the connection is leased: it is retired when it comes back.
            let pid = try await db.query(.read("pid")) { connection in
                var pid = 0
                for try await row in try await connection.query("SELECT pg_backend_pid()", logger: Logger(label: "t")) {
                    pid = try row.decode(Int.self)
                }
                clock.advance(by: .seconds(61))
                return pid
            }
            pids.append(pid)
        }
        #expect(Set(pids).count == 3, "after its lifetime each connection was replaced: \(pids)")
        #expect(try await eventually { db.metrics().pool.closesByReason["lifetime"] ?? 0 >= 2 })
        try await db.shutdown()
    }

    @Test func aStoppedServerTurnsTheMonitorUnhealthyWithinTwoIntervalsAndRecoveryResolves() async throws {
        let db = try TestServer.open(try TestServer.outageURL(), connectionLimit: 2, poolTimeout: .seconds(1))
        let sink = AlertRecorder()
        let interval = Duration.milliseconds(250)
        let monitor = HealthMonitor(
            database: db,
            configuration: .init(interval: interval, alerts: .init(timings: .immediate, labels: ["service": "test"])),
            sinks: [sink]
        )
        let runner = Task { try await monitor.run() }
        #expect(try await eventually { monitor.hasChecked && monitor.status.state == .healthy })
        #expect(monitor.status.score == 100)

        try await TestServer.control("stop")
        let stopped = ContinuousClock.now
        #expect(try await eventually { monitor.status.state == .unhealthy })
        let detection = ContinuousClock.now - stopped
        #expect(detection <= interval * 2 + .seconds(1), "unhealthy after \(detection)")
        #expect(monitor.status.score < 70)
        #expect(!monitor.status.checks.connectivity)
        #expect(monitor.status.lastError?.contains("refused") == true || monitor.status.lastError != nil)
        // Sinks hear of the alert just after the status changes.
        #expect(try await eventually { sink.kinds(.firing).contains(.healthScore) })

        try await TestServer.control("start")
        #expect(try await eventually(within: .seconds(30)) { monitor.status.state == .healthy })
        #expect(try await eventually { sink.kinds(.resolved).contains(.healthScore) })
        #expect(monitor.status.activeAlerts.isEmpty)
        runner.cancel()
        try await runner.value
        try await db.shutdown()
    }

    @Test func aTaskOnAnEventLoopGetsAConnectionOnThatLoop() async throws {
        let backend = try PostgresBackend(url: try TestServer.url(), connectionLimit: 4)
        let executors = EventLoopExecutor.forDefaultEventLoops
        func leaseIsLocal(on executor: EventLoopExecutor) async throws -> Bool {
            try await Task(executorPreference: executor) {
                try await backend.withConnection { connection in connection.eventLoop === executor.eventLoop }
            }.value
        }
        // One lease from each loop, one after the other: a loop that finds only another loop's
        // connection idle takes it and gets a connection of its own opened in the background.
        for executor in executors { _ = try await leaseIsLocal(on: executor) }
        #expect(try await eventually { backend.poolStatistics().total == executors.count })
        // Now every lease, from either loop and in either order, gets a connection on its loop.
        for executor in executors + executors.reversed() + executors {
            #expect(
                try await leaseIsLocal(on: executor),
                "a task on \(executor.eventLoop) got another loop's connection"
            )
        }
        #expect(backend.poolStatistics().total == executors.count)
        #expect(backend.poolStatistics().opened == executors.count, "no loop needed a second connection")
        try await backend.shutdown()
    }

    @Test func withNothingOpenAFailedConnectFailsTheWaitersAtOnceWithItsCause() async throws {
        let backend = try PostgresBackend(url: try TestServer.url { $0.port = 1 }, poolTimeout: .seconds(60))
        let db = try ReliableDatabase(backend: backend, configuration: .init(circuitBreakerEnabled: false))
        let failures = await withTaskGroup(of: String.self) { group in
            for index in 0..<3 {
                group.addTask {
                    do {
                        _ = try await db.selectInt(OperationOptions("w\(index)", retries: false), "SELECT 1")
                        return "succeeded"
                    } catch {
                        return "\(error)"
                    }
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        // Not a pool timeout (60 s): the connect error itself, for every waiter.
        for failure in failures { #expect(failure.contains("refused"), "\(failure)") }
        let pool = db.metrics().pool
        #expect(pool.waiting == 0)
        #expect(pool.acquireTimeouts == 0)
        #expect(pool.connectFailures >= 1)
        #expect(pool.total == 0)
        try await db.shutdown()
    }

    @Test func idleConnectionsCloseAfterTheIdleTimeout() async throws {
        let url = try TestServer.url()
        let backend = try PostgresBackend(url: url, connectionLimit: 3, idleTimeout: .milliseconds(300))
        let db = try ReliableDatabase(backend: backend)
        let observer = try await Observer.connect()
        try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<3 { group.addTask { try await db.selectInt(.read("r"), "SELECT 1 FROM pg_sleep(0.05)") } }
            try await group.waitForAll()
        }
        #expect(db.metrics().pool.total == 3)
        #expect(try await eventually { db.metrics().pool.total == 0 })
        #expect(db.metrics().pool.closesByReason["idle"] == 3)
        #expect(try await eventually { try await observer.activity(of: url.applicationName).total == 0 })
        // The next query opens a new connection.
        #expect(try await db.selectInt(.read("again"), "SELECT 2") == 2)
        #expect(db.metrics().pool.opened == 4)
        try await db.shutdown()
        try await observer.close()
    }

    @Test func idleConnectionsAreCheckedWithAKeepAlive() async throws {
        let url = try TestServer.url()
        let backend = try PostgresBackend(url: url, connectionLimit: 1, keepAliveInterval: .milliseconds(300))
        let db = try ReliableDatabase(backend: backend)
        let observer = try await Observer.connect()
        #expect(try await db.selectInt(.read("last-user-query"), "SELECT 42") == 42)
        // The server shows each backend's latest statement: the keep-alive replaces the caller's.
        #expect(
            try await eventually {
                try await observer.latestQueries(of: url.applicationName) == ["SELECT 1"]
            }
        )
        let pool = db.metrics().pool
        #expect(pool.total == 1 && pool.idle == 1, "the checked connection went back to the pool")
        #expect(pool.opened == 1)
        #expect(try await db.selectInt(.read("after"), "SELECT 7") == 7)
        #expect(db.metrics().pool.opened == 1, "and is used again")
        try await db.shutdown()
        try await observer.close()
    }

    @Test func connectionFailuresNameTheirCauseWithoutThePassword() async throws {
        let password = try TestServer.password
        let cases: [(String, PostgresURL, String)] = [
            (
                "wrong password", try TestServer.url { $0.password = Secret("not-the-password", redacted: "***") },
                "28P01"
            ),
            ("unknown database", try TestServer.url { $0.database = "no_such_database" }, "3D000"),
            ("refused port", try TestServer.url { $0.port = 1 }, "refused"),
        ]
        for (name, url, expected) in cases {
            let db = try TestServer.open(url, poolTimeout: .seconds(2))
            switch await db.probe() {
            case .success:
                Issue.record("\(name): the probe succeeded")
            case .failure(let error):
                let text = "\(error)"
                #expect(text.contains(expected), "\(name): \(text)")
                #expect(!text.contains(password))
                #expect(!text.contains("not-the-password"))
            }
            try await db.shutdown()
        }
    }

    @Test func tlsRequiredAgainstAServerWithoutTLSIsRefusedClearly() async throws {
        let observer = try await Observer.connect()
        try await observer.execute("ALTER SYSTEM SET ssl = off")
        try await observer.execute("SELECT pg_reload_conf()")
        defer {
            Task {
                try? await observer.execute("ALTER SYSTEM RESET ssl")
                try? await observer.execute("SELECT pg_reload_conf()")
                try? await observer.close()
            }
        }
        let db = try TestServer.open(try TestServer.url(sslMode: .require))
        #expect(
            try await eventually {
                guard case .failure(let error) = await db.probe() else { return false }
                return "\(error)".contains("does not support TLS")
            }
        )
        try await db.shutdown()
        try await observer.execute("ALTER SYSTEM RESET ssl")
        try await observer.execute("SELECT pg_reload_conf()")
    }

    @Test(arguments: [PostgresURL.SSLMode.require, .verifyFull, .prefer])
    func tlsModesConnect(mode: PostgresURL.SSLMode) async throws {
        let ca = try TestServer.environment("RELIABLEDB_TEST_POSTGRES_CA")
        let url = try TestServer.url(sslMode: mode) {
            $0.host = "localhost"
            $0.sslRootCertificate = ca
        }
        let db = try TestServer.open(url)
        #expect(
            try await eventually {
                (try? await db.selectInt(
                    .read("ssl"),
                    "SELECT CASE WHEN ssl THEN 1 ELSE 0 END FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                )) == 1
            }
        )
        try await db.shutdown()
    }
}

final class AlertRecorder: AlertSink {
    private let received = Mutex<[AlertNotification]>([])

    func deliver(_ notification: AlertNotification) {
        received.withLock { $0.append(notification) }
    }

    func kinds(_ status: AlertStatus) -> [AlertKind] {
        received.withLock { $0.filter { $0.status == status }.map(\.kind) }
    }
}

final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .releasing) }
    var isSet: Bool { value.load(ordering: .acquiring) }
}

final class Counter: Sendable {
    private let value = Atomic<Int>(0)
    func increment() { value.add(1, ordering: .relaxed) }
    var count: Int { value.load(ordering: .relaxed) }
}

@Suite("PostgreSQL errors in words")
struct PostgresErrorWordsTests {
    /// PSQLError describes itself as "Generic description to prevent accidental leakage"; what
    /// operators read (logs, alerts, /api/health) names the SQLSTATE and the message.
    @Test func aServerErrorNamesItsStateAndMessage() async throws {
        let url = try TestServer.url()
        let tracer = InMemoryTracer()
        let db = try ReliableDatabase(
            backend: try PostgresBackend(url: url, connectionLimit: 1),
            tracer: tracer
        )
        let caught: (any Error)?
        do {
            _ = try await db.query(.init("divide", retries: false)) { connection in
                try await connection.query("SELECT 1/0", logger: Logger(label: "test")).collect()
            }
            caught = nil
        } catch {
            caught = error
        }
        let error = try #require(caught)
        #expect("\(error)".contains("Generic description"), "PostgresNIO's own text hides the cause")
        #expect(db.raw.describe(error) == "SQLSTATE 22012: division by zero")
        // The span names the server and the SQLSTATE, never the statement.
        let span = try #require(tracer.finishedSpans.last)
        #expect(span.attributes["db.system.name"]?.toSpanAttribute() == "postgresql")
        #expect(span.attributes["db.namespace"]?.toSpanAttribute() == .string(url.database))
        #expect(span.attributes["server.address"]?.toSpanAttribute() == .string(url.host))
        #expect(span.attributes["server.port"]?.toSpanAttribute() == .int64(Int64(url.port)))
        #expect(span.attributes["db.response.status_code"]?.toSpanAttribute() == "22012")
        #expect(span.attributes["error.type"]?.toSpanAttribute() == "caller")
        var values: [String] = []
        span.attributes.forEach { _, value in values.append("\(value)") }
        #expect(!values.contains { $0.contains("1/0") || $0.contains(url.password?.value ?? "\u{0}") })
        try await db.shutdown()
    }
}
