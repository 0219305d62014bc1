import Foundation
import Logging
import PostgresNIO
import ReliableDB
import ReliableDBPostgres
import ReliableDBTestSupport
import Testing

/// The throwaway server `scripts/test` starts. A missing server fails the test: PostgreSQL tests
/// are never skipped.
struct TestServer {
    struct Missing: Error, CustomStringConvertible {
        var description: String {
            "RELIABLEDB_TEST_POSTGRES_URL is not set: run the tests with scripts/test, which starts PostgreSQL"
        }
    }

    static func environment(_ name: String) throws -> String {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else { throw Missing() }
        return value
    }

    /// The server's URL with a unique `application_name`, so each test can find its own
    /// connections in `pg_stat_activity`.
    static func url(
        applicationName: String = "rdb-\(UUID().uuidString.prefix(8).lowercased())",
        sslMode: PostgresURL.SSLMode = .disable,
        mutate: (inout PostgresURL) -> Void = { _ in }
    ) throws -> PostgresURL {
        var url = try PostgresURL.parse(try environment("RELIABLEDB_TEST_POSTGRES_URL")).get()
        url.applicationName = applicationName
        url.sslMode = sslMode
        mutate(&url)
        return url
    }

    /// The second server, which the outage tests stop and start (`control`). Other suites run in
    /// parallel against the first one and never see these outages.
    static func outageURL(
        applicationName: String = "rdb-\(UUID().uuidString.prefix(8).lowercased())"
    ) throws -> PostgresURL {
        var url = try PostgresURL.parse(try environment("RELIABLEDB_TEST_OUTAGE_POSTGRES_URL")).get()
        url.applicationName = applicationName
        url.sslMode = .disable
        return url
    }

    static var password: String {
        get throws { try environment("RELIABLEDB_TEST_POSTGRES_PASSWORD") }
    }

    /// Runs the outage server's control script written by scripts/test (`start`, `stop`, `restart`).
    static func control(_ command: String) async throws {
        let script = try environment("RELIABLEDB_TEST_OUTAGE_POSTGRES_CTL")
        let status = await spawnAndWait(script, [command])
        guard status == 0 else { throw ControlFailed(command: command, status: status) }
    }

    struct ControlFailed: Error {
        var command: String
        var status: Int32
    }

    static func open(
        _ url: PostgresURL,
        connectionLimit: Int = 4,
        poolTimeout: Duration = .seconds(5),
        reliability: ReliabilityConfiguration = .init()
    ) throws -> ReliableDatabase<PostgresBackend> {
        let backend = try PostgresBackend(url: url, connectionLimit: connectionLimit, poolTimeout: poolTimeout)
        return try ReliableDatabase(backend: backend, configuration: reliability)
    }
}

/// A plain PostgresNIO connection outside ReliableDB, for looking at the server from the side.
struct Observer {
    let connection: PostgresConnection
    let logger = Logger(label: "test.observer")

    static func connect() async throws -> Observer {
        let url = try TestServer.url(applicationName: "rdb-test-observer")
        let connection = try await PostgresConnection.connect(
            configuration: .init(
                host: url.host,
                port: url.port,
                username: url.username,
                password: url.password?.value,
                database: url.database,
                tls: .disable
            ),
            id: 1,
            logger: Logger(label: "test.observer")
        )
        return Observer(connection: connection)
    }

    /// Connections of `applicationName` in `pg_stat_activity`: all, and those running a query.
    func activity(of applicationName: String) async throws -> (total: Int, active: Int) {
        let rows = try await connection.query(
            """
            SELECT count(*)::int, (count(*) FILTER (WHERE state = 'active'))::int
            FROM pg_stat_activity WHERE application_name = \(applicationName)
            """,
            logger: logger
        )
        for try await (total, active) in rows.decode((Int, Int).self) {
            return (total, active)
        }
        return (0, 0)
    }

    /// The latest statement of each of `applicationName`'s backends.
    func latestQueries(of applicationName: String) async throws -> [String] {
        let rows = try await connection.query(
            "SELECT query FROM pg_stat_activity WHERE application_name = \(applicationName)",
            logger: logger
        )
        var queries: [String] = []
        for try await query in rows.decode(String.self) { queries.append(query) }
        return queries
    }

    func count(_ sql: String) async throws -> Int {
        var value = -1
        for try await count in try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).decode(
            Int.self
        ) {
            value = count
        }
        return value
    }

    func execute(_ sql: String) async throws {
        _ = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect()
    }

    func close() async throws {
        try await connection.close()
    }
}

extension ReliableDatabase where Backend == PostgresBackend {
    func selectInt(_ options: OperationOptions, _ sql: String) async throws -> Int {
        try await query(options) { connection in
            var value = 0
            for try await row in try await connection.query(
                PostgresQuery(unsafeSQL: sql),
                logger: Logger(label: "test")
            ) {
                value = try row.decode(Int.self)
            }
            return value
        }
    }
}

/// Polls `condition` every few milliseconds, up to `limit` of wall time. (Polling a real server
/// for a state, not timing logic: the limit only bounds a broken test.)
func eventually(within limit: Duration = .seconds(10), _ condition: () async throws -> Bool) async throws -> Bool {
    let start = ContinuousClock.now
    while ContinuousClock.now - start < limit {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(5))
    }
    return try await condition()
}
