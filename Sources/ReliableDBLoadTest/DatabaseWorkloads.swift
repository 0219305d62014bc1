import Foundation
import GRDB
import Logging
import PostgresNIO
import ReliableDB
import ReliableDBPostgres
import ReliableDBSQLite
import Synchronization
import _ConnectionPoolModule

/// Reads, writes or a custom statement on a table of its own, through ReliableDB or a plain GRDB
/// `DatabasePool` with the same number of readers.
package final class SQLiteLoadWorkload: LoadWorkload {
    package typealias Access = WorkloadAccess<SQLiteBackend, DatabasePool>

    package static let seedRows = 1000
    package let access: Access
    package let table: String
    package let name: String
    private let readOptions: OperationOptions
    private let writeOptions: OperationOptions
    private let readBody: @Sendable (Database) throws -> Int
    private let writeBody: @Sendable (Database) throws -> Int

    package init(access: Access, table: String, statement: String?, name: String) {
        self.access = access
        self.table = table
        self.name = name
        readOptions = .read("loadtest-read", table: table)
        writeOptions = OperationOptions("loadtest-write", table: table)
        if let statement {
            readBody = { db in
                try db.cachedStatement(sql: statement).execute()
                return 0
            }
            writeBody = readBody
        } else {
            let select = "SELECT id, payload, created_at FROM \(table) WHERE id = ?"
            let insert = "INSERT INTO \(table) (payload) VALUES (?)"
            readBody = { db in
                let id = Int64.random(in: 1...Int64(Self.seedRows))
                let row = try Row.fetchOne(db.cachedStatement(sql: select), arguments: [id])
                let payload: String? = row?["payload"]
                return payload?.utf8.count ?? 0
            }
            writeBody = { db in
                let payload = "payload-\(UInt64.random(in: .min ... .max))"
                try db.cachedStatement(sql: insert).execute(arguments: [payload])
                return 1
            }
        }
    }

    package static func openRawPool(path: String, connectionLimit: Int) throws -> DatabasePool {
        var configuration = Configuration()
        configuration.label = "reliabledb-loadtest-raw"
        configuration.maximumReaderCount = connectionLimit
        configuration.busyMode = .timeout(1)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        return try DatabasePool(path: path, configuration: configuration)
    }

    package var pipelineMetrics: MetricsSnapshot? { access.pipelineMetrics }

    package func classify(_ error: any Error) -> ErrorClass? {
        access.classify(error) { ($0 as? DatabaseError).map { SQLiteBackend.errorClass(of: $0.resultCode) } }
    }

    package func setUp() async throws {
        let create = """
            CREATE TABLE \(table) (
                id INTEGER PRIMARY KEY,
                payload TEXT NOT NULL,
                created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
            )
            """
        let seed = """
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < \(Self.seedRows))
            INSERT INTO \(table) (payload) SELECT 'seed-' || i FROM n
            """
        try await administer { db in
            try db.execute(sql: create)
            try db.execute(sql: seed)
        }
    }

    package func tearDown() async throws {
        let drop = "DROP TABLE IF EXISTS \(table)"
        try await administer { try $0.execute(sql: drop) }
    }

    /// Set-up and tear-down: on the writer, outside the breaker (an open breaker must not keep the
    /// table from being dropped).
    private func administer(_ body: @escaping @Sendable (Database) throws -> Void) async throws {
        switch access {
        case .reliable(let database):
            try await database.write(
                OperationOptions("loadtest-admin", table: table, kind: .migration, useCircuitBreaker: false),
                body
            )
        case .raw(let pool):
            try await pool.write(body)
        }
    }

    package func read() async throws {
        switch access {
        case .reliable(let database): _ = try await database.query(readOptions, readBody)
        case .raw(let pool): _ = try await pool.read(readBody)
        }
    }

    package func write() async throws {
        switch access {
        case .reliable(let database): _ = try await database.write(writeOptions, writeBody)
        case .raw(let pool): _ = try await pool.write(writeBody)
        }
    }
}

/// How a workload reaches the database: through ReliableDB's pipeline, or the plain driver
/// (`--raw`) for comparison.
package enum WorkloadAccess<Backend: DatabaseBackend, Raw: Sendable>: Sendable {
    case reliable(ReliableDatabase<Backend>)
    case raw(Raw)

    /// The pipeline's numbers; nil for the raw driver, which has none.
    package var pipelineMetrics: MetricsSnapshot? {
        if case .reliable(let database) = self { return database.metrics() }
        return nil
    }

    /// Classifies with the backend's classifier either way, so both modes count errors alike;
    /// `driverClass` maps the driver's own error type in raw mode.
    package func classify(_ error: any Error, driverClass: (any Error) -> ErrorClass?) -> ErrorClass? {
        switch self {
        case .reliable(let database):
            LoadTestErrorClassification.classify(error, backend: database.classify)
        case .raw:
            driverClass(error) ?? LoadTestErrorClassification.classify(error)
        }
    }
}

// MARK: PostgreSQL workload

/// Reads, writes or a custom statement on a table of its own, through ReliableDB or a plain
/// `PostgresClient` with the same pool size. A class: the tester's generic code copies its workload
/// for every operation, and a reference copies with one retain instead of a field-by-field copy.
package final class PostgresLoadWorkload: LoadWorkload {
    package typealias Access = WorkloadAccess<PostgresBackend, PostgresClient>

    /// The `--sql` statement, and whether to prepare it.
    package struct CustomStatement: Sendable {
        package var sql: String
        package var prepared: Bool

        package init(sql: String, prepared: Bool) {
            self.sql = sql
            self.prepared = prepared
        }
    }

    package static let seedRows = 1000
    package let access: Access
    package let table: String
    package let statement: CustomStatement?
    package let logger: Logger
    package let name: String
    private let readOptions: OperationOptions
    private let writeOptions: OperationOptions
    private let executors = EventLoopExecutor.forDefaultEventLoops
    private let preparedStatements: PreparedStatements?

    package init(
        access: Access,
        table: String,
        statement: CustomStatement?,
        logger: Logger,
        name: String
    ) {
        self.access = access
        self.table = table
        self.statement = statement
        let behindPooler: @Sendable () -> Bool
        if case .reliable(let database) = access {
            let backend = database.raw
            behindPooler = { backend.behindPooler }
        } else {
            behindPooler = { false }
        }
        preparedStatements = statement.flatMap {
            $0.prepared ? PreparedStatements(sql: $0.sql, behindPooler: behindPooler, logger: logger) : nil
        }
        self.logger = logger
        self.name = name
        readOptions = .read("loadtest-read", table: table)
        writeOptions = OperationOptions("loadtest-write", table: table)
    }

    package static func rawClient(url: PostgresURL, connectionLimit: Int, logger: Logger) throws -> PostgresClient {
        let tls: PostgresClient.Configuration.TLS =
            url.tlsSettings.map { $0.required ? .require($0.configuration) : .prefer($0.configuration) } ?? .disable
        var configuration = PostgresClient.Configuration(
            host: url.host,
            port: url.port,
            username: url.username,
            password: url.password?.value,
            database: url.database,
            tls: tls
        )
        configuration.options.maximumConnections = connectionLimit
        configuration.options.connectTimeout = url.connectTimeout
        configuration.options.additionalStartupParameters = [("application_name", url.applicationName + "-raw")]
        return PostgresClient(configuration: configuration, backgroundLogger: logger)
    }

    package var pipelineMetrics: MetricsSnapshot? { access.pipelineMetrics }

    package func classify(_ error: any Error) -> ErrorClass? {
        access.classify(error) {
            if $0 is PSQLError || $0 is PostgresError { return PostgresBackend.classify($0).errorClass }
            // PostgresClient turns its pool's cancelled and shut-down requests into PSQLError; what
            // its pool still throws as is says no connection could be made.
            return $0 is ConnectionPoolError ? .connection : nil
        }
    }

    /// Workers spread over the event loops, each running where its connections do I/O.
    package func executor(forWorker index: Int) -> (any TaskExecutor)? {
        executors.isEmpty ? nil : executors[index % executors.count]
    }

    package func setUp() async throws {
        let create = PostgresQuery(
            unsafeSQL: """
                CREATE TABLE \(table) (
                    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                    payload text NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now()
                )
                """
        )
        let seed = PostgresQuery(
            unsafeSQL:
                "INSERT INTO \(table) (payload) SELECT 'seed-' || g FROM generate_series(1, \(Self.seedRows)) AS g"
        )
        try await administer { [logger] connection in
            try await connection.query(create, logger: logger).drain()
            try await connection.query(seed, logger: logger).drain()
        }
    }

    package func tearDown() async throws {
        let drop = PostgresQuery(unsafeSQL: "DROP TABLE IF EXISTS \(table)")
        try await administer { [logger] in try await $0.query(drop, logger: logger).drain() }
    }

    /// Set-up and tear-down, outside the breaker (an open breaker must not keep the table from
    /// being dropped).
    private func administer(_ body: @escaping @Sendable (PostgresConnection) async throws -> Void) async throws {
        try await withConnection(
            OperationOptions("loadtest-admin", table: table, kind: .migration, useCircuitBreaker: false),
            body
        )
    }

    /// Runs `body` on a connection: through ReliableDB's pipeline with `options`, or leased from
    /// the plain client.
    @inline(__always)
    private func withConnection(
        _ options: OperationOptions,
        _ body: @escaping @Sendable (PostgresConnection) async throws -> Void
    ) async throws {
        switch access {
        case .reliable(let database):
            try await database.query(options, body)
        case .raw(let client):
            try await client.withConnection(body)
        }
    }

    private func readQuery() -> PostgresQuery {
        let id = Int64.random(in: 1...Int64(Self.seedRows))
        return "SELECT id, payload, created_at FROM \(unescaped: table) WHERE id = \(id)"
    }

    private func writeQuery() -> PostgresQuery {
        let payload = "payload-\(UInt64.random(in: .min ... .max))"
        return "INSERT INTO \(unescaped: table) (payload) VALUES (\(payload))"
    }

    package func read() async throws {
        try await run(options: readOptions, builtIn: readQuery)
    }

    package func write() async throws {
        try await run(options: writeOptions, builtIn: writeQuery)
    }

    @inline(__always)
    private func run(options: OperationOptions, builtIn: () -> PostgresQuery) async throws {
        if let preparedStatements {
            try await withConnection(options) { try await preparedStatements.execute(on: $0) }
        } else {
            let query = statement.map { PostgresQuery(unsafeSQL: $0.sql) } ?? builtIn()
            try await withConnection(options) { [logger] connection in
                try await connection.query(query, logger: logger).drain()
            }
        }
    }
}

/// `--sql` prepared once on each connection, as pgbench -M prepared does, then only bound and
/// executed. It runs through PostgresNIO's EventLoopFuture API, which hands the rows to a callback
/// on the event loop: 1.07-1.21 times the throughput of iterating a `PostgresPreparedStatement`'s
/// async rows (Benchmarks/PostgresAPIs, 10 callers on 2 cores).
///
/// Behind a transaction-pooling PgBouncer a statement prepared on one server connection is missing
/// on the next (26000), so once the backend has found a pooler, or a prepared statement goes
/// missing here, the statement is sent unnamed from then on (the missing one never ran, so it is
/// sent again at once).
package final class PreparedStatements: Sendable {
    package let sql: String
    /// By connection id, striped so that workers on different cores rarely take the same lock; a
    /// replaced connection gets a new id and is prepared anew.
    private let stripes = (0..<16).map { _ in Stripe() }
    private let unnamed: PostgresQuery
    private let behindPooler: @Sendable () -> Bool
    /// Set once a pooler is known: no statement is prepared by name after it.
    private let poolerFound = Atomic<Bool>(false)
    private let logger: Logger

    private final class Stripe: Sendable {
        let byConnection = Mutex<[Int: Prepared]>([:])
    }

    /// A reference, so a lookup copies one pointer instead of the statement's fields.
    private final class Prepared: Sendable {
        let query: PreparedQuery

        init(_ query: PreparedQuery) {
            self.query = query
        }
    }

    /// - Parameter behindPooler: whether the backend has found a transaction-pooling PgBouncer.
    package init(sql: String, behindPooler: @escaping @Sendable () -> Bool = { false }, logger: Logger) {
        self.sql = sql
        unnamed = PostgresQuery(unsafeSQL: sql)
        self.behindPooler = behindPooler
        self.logger = logger
    }

    @inline(__always)
    package func execute(on connection: PostgresConnection) async throws {
        // Written only when the pooler is first known: every worker reads it on every query.
        if !poolerFound.load(ordering: .relaxed), behindPooler() { poolerFound.store(true, ordering: .relaxed) }
        if poolerFound.load(ordering: .relaxed) {
            try await connection.query(unnamed, logger: logger).drain()
            return
        }
        let stripe = stripes[connection.id & (stripes.count - 1)]
        let statement: Prepared
        if let prepared = stripe.byConnection.withLock({ $0[connection.id] }) {
            statement = prepared
        } else {
            statement = Prepared(try await connection.prepare(query: sql).get())
            stripe.byConnection.withLock { $0[connection.id] = statement }
        }
        do {
            try await statement.query.execute([]) { _ in }.get()
        } catch let error as PostgresError where error.code.raw == "26000" {
            // Prepared on another server connection of the pooler: it did not run here.
            if !poolerFound.exchange(true, ordering: .relaxed) {
                logger.warning(
                    "a statement prepared by name went missing, as behind a transaction-pooling PgBouncer: sending it unnamed from now on"
                )
            }
            try await connection.query(unnamed, logger: logger).drain()
        }
    }
}

extension AsyncSequence {
    /// Reads every row (a statement's work is only done once its rows are consumed).
    package func drain() async throws {
        for try await _ in self {}
    }
}

/// The raw driver's errors, classified by SQLSTATE as ReliableDB's PostgreSQL backend does.
