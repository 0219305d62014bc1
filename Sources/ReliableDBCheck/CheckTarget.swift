import Foundation
import GRDB
import Logging
import PostgresNIO
import ReliableDB
import ReliableDBPostgres
import ReliableDBSQLite

/// What the connection checker needs from a backend, beyond the pipeline: a trivial query, a
/// statement that runs for a long time (to be stopped by a timeout), and a scratch table.
package protocol CheckTarget: Sendable {
    associatedtype Backend: DatabaseBackend
    /// The application's pipeline: the connection checks run on it, the scenarios on its backend.
    var database: ReliableDatabase<Backend> { get }
    /// A pipeline of its own on the same connections, so scenarios can trip a breaker without
    /// touching the application's.
    func privateDatabase(_ configuration: ReliabilityConfiguration) throws -> ReliableDatabase<Backend>
    /// `SELECT 1` through `db`: the cheapest statement, so its time is the pipeline's and the
    /// round trip's.
    func selectOne(on db: ReliableDatabase<Backend>, _ options: OperationOptions) async throws -> Int
    /// Runs for many seconds unless stopped.
    func slowQuery(on db: ReliableDatabase<Backend>, _ options: OperationOptions) async throws
    /// Inserts a row, then runs the slow statement, in one transaction.
    func slowTransaction(on db: ReliableDatabase<Backend>, table: String, _ options: OperationOptions) async throws
    /// A scratch table (`id`, `note`) outside the pipeline, to see what a timed-out transaction
    /// left behind.
    func createTable(_ name: String) async throws
    /// Counted outside the pipeline, so a check's own deadline cannot hide the answer.
    func countRows(_ name: String) async throws -> Int
    /// Inserts `count` rows into `table` as one operation through `db`.
    func insertRows(
        on db: ReliableDatabase<Backend>,
        table: String,
        count: Int,
        _ options: OperationOptions
    )
        async throws
    /// Removes the scratch table; a check leaves nothing behind.
    func dropTable(_ name: String) async throws
    /// The same trivial query without the pipeline, for measuring its overhead.
    func rawSelectOne() async throws
    /// With several servers: one line per server (role, replay lag, or why it is unreachable),
    /// whether one of them serves the URL's target, and whether one is a standby; nil with one
    /// server.
    func topology() async -> Topology?
}

/// The servers of a multi-host URL, as `check` reports them.
package struct Topology: Sendable {
    /// One line per server: its role and replay lag, or why it is unreachable.
    package var lines: [String]
    /// Whether a server serves the URL's `target_session_attrs`.
    package var served: Bool
    /// Whether a standby answers, so the fallback to it can be proved.
    package var hasStandby: Bool

    package init(lines: [String], served: Bool, hasStandby: Bool) {
        self.lines = lines
        self.served = served
        self.hasStandby = hasStandby
    }
}

/// The embedded SQLite file; its endless statement is a recursive CTE, its rows plain `INSERT`s.
package struct SQLiteCheckTarget: CheckTarget {
    package let database: ReliableDatabase<SQLiteBackend>

    package init(database: ReliableDatabase<SQLiteBackend>) {
        self.database = database
    }

    package func topology() async -> Topology? { nil }

    package func privateDatabase(_ configuration: ReliabilityConfiguration) throws -> ReliableDatabase<SQLiteBackend> {
        try ReliableDatabase(backend: database.raw, configuration: configuration)
    }

    package func selectOne(on db: ReliableDatabase<SQLiteBackend>, _ options: OperationOptions) async throws -> Int {
        try await db.query(options) { try Int.fetchOne($0, sql: "SELECT 1") ?? 0 }
    }

    package func slowQuery(on db: ReliableDatabase<SQLiteBackend>, _ options: OperationOptions) async throws {
        _ = try await db.query(options) { try Int.fetchOne($0, sql: Self.endless) }
    }

    package func slowTransaction(
        on db: ReliableDatabase<SQLiteBackend>,
        table: String,
        _ options: OperationOptions
    ) async throws {
        try await db.transaction(options) { db in
            try db.execute(sql: "INSERT INTO \(table) (note) VALUES ('check')")
            _ = try Int.fetchOne(db, sql: Self.endless)
        }
    }

    package func createTable(_ name: String) async throws {
        try await database.raw.write { try $0.execute(sql: "CREATE TABLE \(name) (id INTEGER PRIMARY KEY, note TEXT)") }
    }

    package func countRows(_ name: String) async throws -> Int {
        try await database.raw.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM \(name)") ?? -1 }
    }

    package func insertRows(
        on db: ReliableDatabase<SQLiteBackend>,
        table: String,
        count: Int,
        _ options: OperationOptions
    ) async throws {
        try await db.write(options) { db in
            for _ in 0..<count { try db.execute(sql: "INSERT INTO \(table) (note) VALUES ('batch')") }
        }
    }

    package func dropTable(_ name: String) async throws {
        try await database.raw.write { try $0.execute(sql: "DROP TABLE IF EXISTS \(name)") }
    }

    package func rawSelectOne() async throws {
        _ = try await database.raw.read { try Int.fetchOne($0, sql: "SELECT 1") }
    }

    static let endless = """
        WITH RECURSIVE counter(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM counter WHERE n < 1000000000000)
        SELECT count(*) FROM counter
        """
}

/// A PostgreSQL server (or a multi-host URL's servers); its endless statement is `pg_sleep(30)`.
package struct PostgresCheckTarget: CheckTarget {
    package let database: ReliableDatabase<PostgresBackend>
    let logger = Logger(label: "reliabledb.check")

    package init(database: ReliableDatabase<PostgresBackend>) {
        self.database = database
    }

    package func topology() async -> Topology? {
        let url = database.raw.url
        guard url.endpoints.count > 1 else { return nil }
        let reports = await database.raw.topology()
        let lines = reports.map { report -> String in
            guard let role = report.role else { return "\(report.server) unreachable: \(report.error ?? "no answer")" }
            let lag = report.replayLag.map { String(format: ", replay lag %.2f s", $0.seconds) } ?? ""
            return "\(report.server) \(role)\(lag)"
        }
        let served = reports.contains { $0.serves(url.targetSessionAttributes) }
        return Topology(lines: lines, served: served, hasStandby: reports.contains { $0.serves(.standby) })
    }

    package func privateDatabase(_ configuration: ReliabilityConfiguration) throws -> ReliableDatabase<PostgresBackend>
    {
        try ReliableDatabase(backend: database.raw, configuration: configuration)
    }

    package func selectOne(on db: ReliableDatabase<PostgresBackend>, _ options: OperationOptions) async throws -> Int {
        let logger = self.logger
        return try await db.query(options) { connection in
            var value = 0
            for try await one in try await connection.query("SELECT 1", logger: logger).decode(Int.self) { value = one }
            return value
        }
    }

    package func slowQuery(on db: ReliableDatabase<PostgresBackend>, _ options: OperationOptions) async throws {
        let logger = self.logger
        try await db.query(options) { connection in
            _ = try await connection.query("SELECT pg_sleep(30)", logger: logger).collect()
        }
    }

    package func slowTransaction(
        on db: ReliableDatabase<PostgresBackend>,
        table: String,
        _ options: OperationOptions
    ) async throws {
        let logger = self.logger
        try await db.transaction(options) { connection in
            _ = try await connection.query(
                PostgresQuery(unsafeSQL: "INSERT INTO \(table) (note) VALUES ('check')"),
                logger: logger
            )
            .collect()
            _ = try await connection.query("SELECT pg_sleep(30)", logger: logger).collect()
        }
    }

    package func insertRows(
        on db: ReliableDatabase<PostgresBackend>,
        table: String,
        count: Int,
        _ options: OperationOptions
    ) async throws {
        let logger = self.logger
        try await db.transaction(options) { connection in
            _ = try await connection.query(
                PostgresQuery(
                    unsafeSQL: "INSERT INTO \(table) (note) SELECT 'batch' FROM generate_series(1, \(count))"
                ),
                logger: logger
            )
            .collect()
        }
    }

    package func createTable(_ name: String) async throws {
        try await execute("CREATE TABLE \(name) (id BIGSERIAL PRIMARY KEY, note TEXT)")
    }

    package func countRows(_ name: String) async throws -> Int {
        let logger = self.logger
        return try await database.raw.withConnection { connection in
            var count = -1
            let rows = try await connection.query(
                PostgresQuery(unsafeSQL: "SELECT count(*)::int FROM \(name)"),
                logger: logger
            )
            for try await value in rows.decode(Int.self) { count = value }
            return count
        }
    }

    package func dropTable(_ name: String) async throws {
        try await execute("DROP TABLE IF EXISTS \(name)")
    }

    package func rawSelectOne() async throws {
        let logger = self.logger
        try await database.raw.withConnection { connection in
            _ = try await connection.query("SELECT 1", logger: logger).collect()
        }
    }

    private func execute(_ sql: String) async throws {
        let logger = self.logger
        try await database.raw.withConnection { connection in
            _ = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect()
        }
    }
}
