import Foundation
import Logging
import PostgresNIO
import Prometheus
import ReliableDB
import ReliableDBHTTP
import ReliableDBPostgres
import ReliableDBPrometheus
import ReliableDBTestSupport
import Testing

/// libpq's multi-host semantics against a real primary and its streaming standby (scripts/test
/// starts both): the walk, `target_session_attrs`, `load_balance_hosts`, failed servers skipped
/// and a failed authentication ending the walk.
/// One at a time: some pause the standby's replay, which every other test here would see.
@Suite("Multi-host URLs against a primary and its standby", .serialized, .timeLimit(.minutes(1)))
struct MultiHostTests {
    static let logger = Logger(label: "test.multi-host")

    enum Server {
        case primary, standby, closed
    }

    /// A URL listing `servers` in order, with the primary's credentials.
    static func url(
        _ servers: [Server],
        target: PostgresURL.TargetSessionAttributes = .any,
        loadBalance: PostgresURL.LoadBalanceHosts = .disable,
        password: String? = nil
    ) throws -> PostgresURL {
        var url = try PostgresURL.parse(try TestServer.environment("RELIABLEDB_TEST_HA_PRIMARY_URL")).get()
        let standby = try PostgresURL.parse(try TestServer.environment("RELIABLEDB_TEST_HA_STANDBY_URL")).get()
        url.endpoints = servers.map { server in
            switch server {
            case .primary: PostgresURL.Endpoint(host: url.host, port: url.port)
            case .standby: PostgresURL.Endpoint(host: standby.host, port: standby.port)
            case .closed: PostgresURL.Endpoint(host: "127.0.0.1", port: 1)  // nothing listens on port 1
            }
        }
        url.sslMode = .disable
        url.targetSessionAttributes = target
        url.loadBalanceHosts = loadBalance
        url.applicationName = "rdb-multihost"
        if let password { url.password = Secret(password, redacted: "***") }
        return url
    }

    /// Whether the connection the pool gives is on the standby.
    static func reachesStandby(_ url: PostgresURL) async throws -> Bool {
        let db = try TestServer.open(url, connectionLimit: 1, poolTimeout: .seconds(5))
        defer { Task { try? await db.shutdown() } }
        return try await db.query(.read("which-server")) { connection in
            var inRecovery = false
            for try await value in try await connection.query("SELECT pg_is_in_recovery()", logger: logger)
                .decode(Bool.self)
            {
                inRecovery = value
            }
            return inRecovery
        }
    }

    @Test func readWriteAndPrimarySkipAStandbyListedFirst() async throws {
        #expect(try await Self.reachesStandby(try Self.url([.standby, .primary], target: .readWrite)) == false)
        #expect(try await Self.reachesStandby(try Self.url([.standby, .primary], target: .primary)) == false)
        #expect(try await Self.reachesStandby(try Self.url([.standby, .primary])) == true, "any: the first")
    }

    /// Which server `options` runs on: true for the standby.
    static func onStandby(_ db: ReliableDatabase<PostgresBackend>, _ options: OperationOptions) async throws -> Bool {
        try await db.query(options) { connection in
            var inRecovery = false
            for try await value in try await connection.query("SELECT pg_is_in_recovery()", logger: logger)
                .decode(Bool.self)
            {
                inRecovery = value
            }
            return inRecovery
        }
    }

    @Test func withStandbyReadsReadsGoToTheStandbyAndEverythingElseToThePrimary() async throws {
        var url = try Self.url([.primary, .standby], target: .readWrite)
        url.standbyReads = true
        let db = try TestServer.open(url, connectionLimit: 2, poolTimeout: .seconds(5))
        defer { Task { try? await db.shutdown() } }
        #expect(try await Self.onStandby(db, .read("report")))
        #expect(try await Self.onStandby(db, .complexQuery("analytics")))
        #expect(try await Self.onStandby(db, OperationOptions("write")) == false, "not marked as a read")
        #expect(try await Self.onStandby(db, OperationOptions("safe-write", idempotent: true)) == false)
        let inTransaction = try await db.transaction(.init("tx")) { connection in
            var inRecovery = true
            for try await value in try await connection.query("SELECT pg_is_in_recovery()", logger: Self.logger)
                .decode(Bool.self)
            {
                inRecovery = value
            }
            return inRecovery
        }
        #expect(inTransaction == false)
        // Without standby_reads every read goes to the primary.
        let plain = try TestServer.open(try Self.url([.primary, .standby], target: .readWrite), connectionLimit: 1)
        defer { Task { try? await plain.shutdown() } }
        #expect(try await Self.onStandby(plain, .read("report")) == false)
    }

    @Test func aStandbyBehindMoreThanTheBoundServesNoReads() async throws {
        var url = try Self.url([.primary, .standby], target: .readWrite)
        url.standbyReads = true
        url.maxStandbyLag = .milliseconds(300)
        let (primary, standby) = ("RELIABLEDB_TEST_HA_PRIMARY_URL", "RELIABLEDB_TEST_HA_STANDBY_URL")
        let db = try TestServer.open(url, connectionLimit: 2, poolTimeout: .seconds(5))
        defer { Task { try? await db.shutdown() } }
        // A standby that has replayed no transaction since it started has no measurable lag (and
        // serves no read): the table's creation gives it one, and it serves once replayed.
        let table = "lag_\(UUID().uuidString.prefix(8).lowercased())"
        try await Self.execute(on: primary, "CREATE TABLE \(table) (id int)")
        #expect(
            try await eventually { try await Self.onStandby(db, .read("report")) },
            "caught up: the standby serves"
        )
        // Replay paused while the primary commits: the standby falls behind.
        try await Self.execute(on: standby, "SELECT pg_wal_replay_pause()")
        do {
            try await Task.sleep(for: .milliseconds(700))
            try await Self.execute(on: primary, "INSERT INTO \(table) VALUES (1)")
            try await Task.sleep(for: .milliseconds(1100))  // past the once-a-second measurement
            #expect(try await Self.onStandby(db, .read("report")) == false, "behind: the primary serves")
        } catch {
            try? await Self.execute(on: standby, "SELECT pg_wal_replay_resume()")
            throw error
        }
        try await Self.execute(on: standby, "SELECT pg_wal_replay_resume()")
        try await Self.execute(on: primary, "DROP TABLE \(table)")
    }

    /// Runs `sql` on the server of `variable` (`RELIABLEDB_TEST_HA_PRIMARY_URL`, ...), beside the pools.
    static func execute(on variable: String, _ sql: String) async throws {
        try await SideConnection.with(try ScratchDatabase.serverURL(variable)) { try await $0.execute(sql) }
    }

    @Test func theServersRolesAndStatesAreVisible() async throws {
        let url = try Self.url([.closed, .standby, .primary], target: .readWrite)
        let db = try TestServer.open(url, connectionLimit: 1, poolTimeout: .seconds(5))
        defer { Task { try? await db.shutdown() } }
        try await db.query(.read("first")) { _ in }
        let servers = db.metrics().servers
        // The refusing server is ejected for 1 s after its failure: on a loaded machine that may
        // have passed by now.
        #expect(["ejected", "available"].contains(servers[0].state))
        #expect(servers.map(\.state).suffix(2) == ["available", "current"])
        #expect(servers.map(\.role) == [nil, "standby", "primary"])
        #expect(servers[0].host == "127.0.0.1:1")
        #expect(servers[0].lastOutcome?.contains("refused") == true)
        #expect(servers[1].lastOutcome == "is a standby")
        let status = HealthStatus(
            state: .healthy,
            score: 100,
            checks: .init(connectivity: true, queryPerformance: true, poolHealth: true, circuitBreakerState: true),
            checkedAt: nil,
            uptime: .zero,
            metrics: db.metrics()
        )
        let report = String(decoding: HealthReport.json(status), as: UTF8.self)
        #expect(report.contains(#""host":"127.0.0.1:1""#) && report.contains(#""state":"current""#), "\(report)")
    }

    @Test func standbyReadOnlyAndPreferStandbyFindTheStandby() async throws {
        for target in [PostgresURL.TargetSessionAttributes.standby, .readOnly, .preferStandby] {
            #expect(try await Self.reachesStandby(try Self.url([.primary, .standby], target: target)), "\(target)")
        }
    }

    @Test func preferStandbyTakesThePrimaryWhenNoStandbyAnswers() async throws {
        #expect(try await Self.reachesStandby(try Self.url([.closed, .primary], target: .preferStandby)) == false)
    }

    @Test func aServerThatRefusesIsSkipped() async throws {
        #expect(try await Self.reachesStandby(try Self.url([.closed, .standby, .primary])) == true)
    }

    @Test func noMatchingServerSaysWhatEachAnswered() async throws {
        let url = try Self.url([.primary, .closed], target: .standby)
        let db = try TestServer.open(url, connectionLimit: 1, poolTimeout: .seconds(5))
        defer { Task { try? await db.shutdown() } }
        do {
            _ = try await db.query(.init("which-server", retries: false)) { _ in 1 }
            Issue.record("connected although no server is a standby")
        } catch {
            let text = "\(error)"
            #expect(text.contains("no server is standby"), "\(text)")
            #expect(text.contains("is a read-write primary"), "\(text)")
            #expect(text.contains("127.0.0.1:1 refused"), "\(text)")
            #expect(!text.contains(try TestServer.password), "no password in \(text)")
            #expect(db.classify(error).errorClass == .connection)
        }
    }

    /// An unreachable cluster in words an operator reads once: each server named once with its own
    /// reason, no cause nested in another, no driver type's debug form, on the first walk and on
    /// later ones that skip the servers already failing.
    @Test func aFailureNamesEachServerOnceWithItsOwnReason() async throws {
        var url = try Self.url([.closed, .standby], target: .readWrite)
        url.endpoints.insert(PostgresURL.Endpoint(host: "127.0.0.1", port: 2), at: 1)
        let standby = url.endpoints[2].description
        // No breaker: it would answer the later calls itself, without naming any server.
        let db = try TestServer.open(
            url,
            connectionLimit: 2,
            poolTimeout: .seconds(2),
            reliability: .init(circuitBreakerEnabled: false)
        )
        defer { Task { try? await db.shutdown() } }
        let monitor = HealthMonitor(database: db)
        for walk in 1...3 {
            var texts: [String] = []
            do {
                _ = try await db.query(.read("which-server")) { _ in 1 }
                Issue.record("connected although no server is read-write")
            } catch {
                texts.append("\(error)")
            }
            texts.append(await monitor.checkNow().lastError ?? "")
            for text in texts {
                for server in ["127.0.0.1:1", "127.0.0.1:2", standby] {
                    #expect(text.components(separatedBy: server).count == 2, "walk \(walk): \(server) once in \(text)")
                }
                #expect(text.components(separatedBy: "no server is").count == 2, "walk \(walk), nested: \(text)")
                #expect(text.contains("is a standby"), "walk \(walk): \(text)")
                #expect(!text.contains("file: \""), "walk \(walk), a debug form: \(text)")
                #expect(!text.contains(try TestServer.password))
            }
        }
    }

    /// The failover's moment: the primary is gone and the standby not promoted yet. Each server is
    /// tried once and reported for what it did itself, so the prober sees a standby waiting to be
    /// promoted (and probes every 200 ms), and the standby is not skipped as failing once promoted.
    @Test(arguments: [[Server.closed, .standby], [Server.standby, .closed]])
    func withNoPrimaryEachServerIsReportedForWhatItDidAndTheStandbyIsNotEjected(_ servers: [Server]) async throws {
        let backend = try PostgresBackend(url: try Self.url(servers, target: .readWrite), connectionLimit: 1)
        defer { Task { try? await backend.shutdown() } }
        do {
            try await backend.probeServer(within: .unbounded)
            Issue.record("a probe for read-write succeeded with no primary")
        } catch let error as PostgresNoMatchingServerError {
            let outcomes = error.outcomes.map(\.outcome)
            #expect(outcomes.count == 2, "each server once: \(outcomes)")
            let standbyOutcome = servers[0] == .standby ? outcomes.first : outcomes.last
            #expect(standbyOutcome?.hasPrefix("is ") == true, "\(outcomes)")
            #expect(backend.awaitsPromotion(error), "\(error)")
            let standby = backend.servers().first { $0.role == "standby" }
            #expect(standby?.state != "ejected", "\(backend.servers())")
        }
    }

    @Test func aFailedAuthenticationEndsTheWalk() async throws {
        // The standby would accept the connection, but a wrong password is wrong everywhere.
        let url = try Self.url([.primary, .standby], password: "wrong-password")
        let db = try TestServer.open(url, connectionLimit: 1, poolTimeout: .seconds(5))
        defer { Task { try? await db.shutdown() } }
        do {
            _ = try await db.query(.init("which-server", retries: false)) { _ in 1 }
            Issue.record("connected with a wrong password")
        } catch {
            let text = "\(error)"
            #expect(text.contains("28P01") || text.contains("password authentication failed"), "\(text)")
            #expect(!text.contains("no server is"), "the walk stopped at the first server: \(text)")
            #expect(!text.contains("wrong-password"))
        }
    }

    @Test func loadBalanceRandomSpreadsNewConnectionsOverTheServers() async throws {
        let url = try Self.url([.primary, .standby], loadBalance: .random)
        let db = try TestServer.open(url, connectionLimit: 16, poolTimeout: .seconds(10))
        defer { Task { try? await db.shutdown() } }
        // 16 connections at once, each on a server drawn at random: all on one has odds 2^-15.
        let standbyCount = try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<16 {
                group.addTask {
                    try await db.query(.read("which-server")) { connection in
                        var inRecovery = false
                        let rows = try await connection.query(
                            "SELECT pg_is_in_recovery() FROM pg_sleep(0.3)",
                            logger: Self.logger
                        )
                        for try await value in rows.decode(Bool.self) { inRecovery = value }
                        return inRecovery
                    }
                }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(db.metrics().pool.total == 16)
        #expect((1...15).contains(standbyCount), "\(standbyCount) of 16 on the standby")
    }

    @Test func checkReportsTheTopologyOfAMultiHostURL() async throws {
        let primary = try PostgresURL.parse(try TestServer.environment("RELIABLEDB_TEST_HA_PRIMARY_URL")).get()
        let standby = try PostgresURL.parse(try TestServer.environment("RELIABLEDB_TEST_HA_STANDBY_URL")).get()
        let password = try TestServer.password
        let url =
            "postgres://\(primary.username):\(password)@127.0.0.1:1,\(standby.host):\(standby.port),"
            + "\(primary.host):\(primary.port)/\(primary.database)?sslmode=disable&target_session_attrs=read-write"
        let result = try await runReliableDB(["check"], environment: ["DATABASE_URL": url])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("topology"), "\(result.output)")
        #expect(result.output.contains("127.0.0.1:1 unreachable"), "\(result.output)")
        #expect(result.output.contains("\(standby.port) standby, replay lag"), "\(result.output)")
        #expect(result.output.contains("\(primary.port) primary"), "\(result.output)")
        #expect(!result.output.contains(password))
    }

    /// `check --reliability` on a primary and its standby runs every scenario against the pair,
    /// and proves the read fallback to the standby through the database.
    @Test func checkProvesTheFallbackToTheStandby() async throws {
        let primary = try PostgresURL.parse(try TestServer.environment("RELIABLEDB_TEST_HA_PRIMARY_URL")).get()
        let standby = try PostgresURL.parse(try TestServer.environment("RELIABLEDB_TEST_HA_STANDBY_URL")).get()
        let url =
            "postgres://\(primary.username):\(try TestServer.password)@\(primary.host):\(primary.port),"
            + "\(standby.host):\(standby.port)/\(primary.database)?sslmode=disable&target_session_attrs=read-write"
        let result = try await runReliableDB(["check", "--reliability"], environment: ["DATABASE_URL": url])
        #expect(result.status == 0, "\(result.output)")
        #expect(
            result.output.contains("standby 127.0.0.1:\(standby.port) answered, standby; age="),
            "\(result.output)"
        )
    }

    /// No primary answers (its only server is down), a standby does: a read through `withFallback`
    /// is answered by the standby, marked degraded, and readiness stays up on it while
    /// `/api/health` reports the primary unreachable.
    @Test func withThePrimaryDownTheStandbyAnswersAndReadinessStaysUp() async throws {
        let db = try TestServer.open(try Self.url([.closed, .standby], target: .readWrite), poolTimeout: .seconds(2))
        let monitor = HealthMonitor(database: db)
        let endpoints = HealthEndpoints(
            database: db,
            monitor: monitor,
            exporter: PrometheusExporter(registry: PrometheusCollectorRegistry())
        )
        endpoints.readiness.markServing()
        await monitor.checkNow()
        #expect(!endpoints.isReady, "no primary, and no standby connection yet")

        let answer = try await db.withFallback(ReadFallback(key: "orders", maxAge: .seconds(30))) {
            try await db.query(.read("which-server")) { connection in
                var inRecovery = false
                for try await value in try await connection.query("SELECT pg_is_in_recovery()", logger: Self.logger)
                    .decode(Bool.self)
                {
                    inRecovery = value
                }
                return inRecovery
            }
        }
        #expect(endpoints.isReady, "the standby serves reads")
        #expect(endpoints.health().status == 503, "health still says the primary is unreachable")
        try await db.shutdown()
        #expect(answer.value == true, "answered on the standby")
        #expect(answer.degradation?.headerValue.hasPrefix("standby; age=") == true, "\(String(describing: answer))")
        #expect(answer.degradation?.cause.contains("no server is read-write") == true, "\(String(describing: answer))")
        #expect(endpoints.ready().status == 503, "after shutdown the standby pool is closed")
    }

    /// A "read" that writes, run on a standby (`standby_reads=true`): the standby's 25006 is the
    /// caller's mistake, said as such; not a demotion, not retried, nothing retired.
    @Test func aReadThatWritesIsRefusedByTheStandbyAsTheCallersMistake() async throws {
        var url = try Self.url([.primary, .standby], target: .readWrite)
        url.standbyReads = true
        let db = try TestServer.open(url, poolTimeout: .seconds(2))
        await #expect(throws: PostgresStandbyRefusedError.self) {
            try await db.query(.read("writes-on-a-standby")) { connection in
                _ = try await connection.query("CREATE TEMP TABLE not_on_a_standby (i int)", logger: Self.logger)
                    .collect()
            }
        }
        let metrics = db.metrics()
        try await db.shutdown()
        #expect(metrics.retries == 0)
        #expect(metrics.pool.closesByReason["evicted", default: 0] == 0, "the primary's connections are kept")
        #expect(metrics.standbyCircuitBreaker?.failures == 0, "not held against the standby")
    }
}
