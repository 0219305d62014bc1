import Foundation
import GRDB
import Logging
import PostgresNIO
import ReliableDB
import ReliableDBLoadTest
import ReliableDBPostgres
import ReliableDBSQLite
import Synchronization

/// The CLI's own workloads (`ReliableDBLoadTest`'s `SQLiteLoadWorkload` and
/// `PostgresLoadWorkload`), run through ReliableDB, with what a test needs to check them: the rows
/// in the table just before tear-down drops it, and whether the table still exists afterwards.
final class SQLiteTestWorkload: LoadWorkload {
    static let seedRows = SQLiteLoadWorkload.seedRows
    let database: ReliableDatabase<SQLiteBackend>
    let table: String
    private let workload: SQLiteLoadWorkload
    /// Rows in the table just before tear-down dropped it.
    let rowsAtTearDown = Mutex<Int?>(nil)

    init(database: ReliableDatabase<SQLiteBackend>, table: String) {
        self.database = database
        self.table = table
        workload = SQLiteLoadWorkload(
            access: .reliable(database),
            table: table,
            statement: nil,
            name: "sqlite test (ReliableDB)"
        )
    }

    var name: String { workload.name }
    var pipelineMetrics: MetricsSnapshot? { workload.pipelineMetrics }
    func classify(_ error: any Error) -> ErrorClass? { workload.classify(error) }
    func setUp() async throws { try await workload.setUp() }
    func read() async throws { try await workload.read() }
    func write() async throws { try await workload.write() }

    func tearDown() async throws {
        let table = self.table
        let rows = try? await database.raw.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM \(table)") }
        rowsAtTearDown.withLock { $0 = rows ?? nil }
        try await workload.tearDown()
    }

    /// Whether the table exists, asked outside the load test.
    func tableExists() async throws -> Bool {
        let table = self.table
        let count = try await database.raw.read { db in
            try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master WHERE name = ?", arguments: [table]) ?? 0
        }
        return count > 0
    }
}

final class PostgresTestWorkload: LoadWorkload {
    static let seedRows = PostgresLoadWorkload.seedRows
    let database: ReliableDatabase<PostgresBackend>
    let table: String
    private let workload: PostgresLoadWorkload
    private let logger = Logger(label: "test.loadtest")
    /// Rows in the table just before tear-down dropped it.
    let rowsAtTearDown = Mutex<Int?>(nil)

    init(database: ReliableDatabase<PostgresBackend>, table: String) {
        self.database = database
        self.table = table
        workload = PostgresLoadWorkload(
            access: .reliable(database),
            table: table,
            statement: nil,
            logger: logger,
            name: "postgresql test (ReliableDB)"
        )
    }

    var name: String { workload.name }
    var pipelineMetrics: MetricsSnapshot? { workload.pipelineMetrics }
    func classify(_ error: any Error) -> ErrorClass? { workload.classify(error) }
    func executor(forWorker index: Int) -> (any TaskExecutor)? { workload.executor(forWorker: index) }
    func setUp() async throws { try await workload.setUp() }
    func read() async throws { try await workload.read() }
    func write() async throws { try await workload.write() }

    func tearDown() async throws {
        rowsAtTearDown.withLock { $0 = nil }
        let rows = try? await count("SELECT count(*)::int FROM \(table)")
        rowsAtTearDown.withLock { $0 = rows }
        try await workload.tearDown()
    }

    func tableExists() async throws -> Bool {
        try await count("SELECT count(*)::int FROM pg_tables WHERE tablename = '\(table)'") > 0
    }

    private func count(_ sql: String) async throws -> Int {
        let logger = self.logger
        return try await database.query(.read("loadtest-check")) { connection in
            var count = 0
            for try await value in try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger)
                .decode(Int.self)
            {
                count = value
            }
            return count
        }
    }
}
