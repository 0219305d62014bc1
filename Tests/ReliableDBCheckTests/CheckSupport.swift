import Foundation
import GRDB
import ReliableDB
import ReliableDBCheck
import ReliableDBPostgres
import ReliableDBSQLite
import ReliableDBTestSupport
import Synchronization
import Testing

/// The runner's scenarios, each with the checks it runs against one server, so a test can run
/// one of them on its own and name what it expects.
enum Scenario: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case connection
    case circuitBreaker = "circuit breaker"
    case degradation
    case timeouts
    case monitoring
    case performance
    case recovery

    var testDescription: String { rawValue }

    /// The checks it runs with one server (a multi-host URL adds the topology and the standby).
    var checks: [String] {
        switch self {
        case .connection:
            ["connect and probe", "round-trip latency", "pool statistics"]
        case .circuitBreaker:
            ["normal operation", "failure threshold", "blocking while open", "recovery after the open timeout"]
        case .degradation:
            ["fresh answer", "fallback while the database fails the read", "no earlier result, no fallback"]
        case .timeouts:
            [
                "within limit", "exceeding the limit stops the statement", "transaction timeout rolls back",
                "batch operation with a scaled deadline",
            ]
        case .monitoring:
            ["health check", "metrics collection", "HTTP endpoints"]
        case .performance:
            ["circuit breaker overhead", "reliable client overhead"]
        case .recovery:
            ["automatic recovery"]
        }
    }

    /// Runs this scenario alone; the results are the runner's.
    func run<Target: CheckTarget>(_ runner: CheckRunner<Target>) async throws {
        switch self {
        case .connection: await runner.runConnection()
        case .circuitBreaker: try await runner.runReliability()
        case .degradation: try await runner.runDegradation()
        case .timeouts: try await runner.runTimeouts()
        case .monitoring: try await runner.runMonitoring()
        case .performance: await runner.runPerformance()
        case .recovery: try await runner.runRecovery()
        }
    }
}

extension CheckResult {
    /// `group/name PASS: detail`, to read a failed expectation at a glance.
    var line: String { "\(group)/\(name) \(passed ? "PASS" : "FAIL"): \(detail)" }
}

/// A real SQLite file in a temporary directory of its own, removed with it.
final class SQLiteFile: Sendable {
    let directory: URL
    var path: String { directory.appendingPathComponent("check.sqlite").path }

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("rdb-check-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: directory) }

    /// The configuration `DATABASE_URL=sqlite:PATH` gives, as `reliabledb check` reads it.
    func configuration() async throws -> ReliableDBConfiguration {
        try await ReliableDBConfiguration.fromEnvironment(["DATABASE_URL": "sqlite:\(path)"], dotEnvPath: nil)
    }

    /// The tables in the file, read with GRDB outside ReliableDB.
    func tables() throws -> [String] {
        try DatabaseQueue(path: path).read {
            try String.fetchAll($0, sql: "SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    }
}

/// PostgreSQL URLs on the server scripts/test starts (`RELIABLEDB_TEST_POSTGRES_URL`).
enum TestPostgres {
    /// A URL to the test server, changed by `mutate`: a wrong password, another port or database.
    static func url(_ mutate: (inout URLComponents) -> Void = { _ in }) throws -> String {
        var components = try ScratchDatabase.serverURL()
        components.queryItems = [URLQueryItem(name: "sslmode", value: "disable")]
        mutate(&components)
        return components.string!
    }

    /// The environment's configuration for `url`, with a short pool timeout so a check against a
    /// server that is not there fails in a second rather than ten.
    static func configuration(_ url: String) async throws -> ReliableDBConfiguration {
        try await ReliableDBConfiguration.fromEnvironment(
            ["DATABASE_URL": url, "DB_POOL_TIMEOUT": "1"],
            dotEnvPath: nil
        )
    }

    /// A multi-host URL over the primary and standby scripts/test starts, `closed` standing for a
    /// port nothing listens on.
    static func multiHost(_ servers: [String]) throws -> String {
        let primary = try ScratchDatabase.serverURL("RELIABLEDB_TEST_HA_PRIMARY_URL")
        let standby = try ScratchDatabase.serverURL("RELIABLEDB_TEST_HA_STANDBY_URL")
        let hosts = servers.map { server -> String in
            switch server {
            case "primary": "\(primary.host!):\(primary.port!)"
            case "standby": "\(standby.host!):\(standby.port!)"
            default: "127.0.0.1:1"
            }
        }
        return "postgres://\(primary.user!):\(primary.password!)@\(hosts.joined(separator: ","))\(primary.path)"
            + "?sslmode=disable&target_session_attrs=read-write"
    }

    /// The test server's password, which no check may print.
    static var password: String {
        get throws { try ScratchDatabase.serverURL().password ?? "" }
    }
}

/// A real target whose multi-host topology is `reported` instead of asked from the servers: no
/// real servers give a topology none of them serves while the probe succeeds.
struct ReportedTopology<Inner: CheckTarget>: CheckTarget {
    let inner: Inner
    let reported: Topology

    var database: ReliableDatabase<Inner.Backend> { inner.database }

    func topology() async -> Topology? { reported }

    func privateDatabase(_ configuration: ReliabilityConfiguration) throws -> ReliableDatabase<Inner.Backend> {
        try inner.privateDatabase(configuration)
    }

    func selectOne(on db: ReliableDatabase<Inner.Backend>, _ options: OperationOptions) async throws -> Int {
        try await inner.selectOne(on: db, options)
    }

    func slowQuery(on db: ReliableDatabase<Inner.Backend>, _ options: OperationOptions) async throws {
        try await inner.slowQuery(on: db, options)
    }

    func slowTransaction(
        on db: ReliableDatabase<Inner.Backend>,
        table: String,
        _ options: OperationOptions
    ) async throws {
        try await inner.slowTransaction(on: db, table: table, options)
    }

    func createTable(_ name: String) async throws { try await inner.createTable(name) }

    func countRows(_ name: String) async throws -> Int { try await inner.countRows(name) }

    func insertRows(
        on db: ReliableDatabase<Inner.Backend>,
        table: String,
        count: Int,
        _ options: OperationOptions
    ) async throws {
        try await inner.insertRows(on: db, table: table, count: count, options)
    }

    func dropTable(_ name: String) async throws { try await inner.dropTable(name) }

    func rawSelectOne() async throws { try await inner.rawSelectOne() }
}

/// Holds a connection in a test until the checks have looked at the pool.
final class Gate: Sendable {
    private let state = Atomic<Bool>(false)

    var isOpen: Bool { state.load(ordering: .acquiring) }

    func open() { state.store(true, ordering: .releasing) }

    /// Polls `condition` for up to 5 s: the holder's task has to lease its connection first.
    func waitUntil(_ condition: () -> Bool) async throws {
        let start = ContinuousClock.now
        while !condition() {
            guard ContinuousClock.now - start < .seconds(5) else {
                open()
                throw TimedOut()
            }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    struct TimedOut: Error {}
}
