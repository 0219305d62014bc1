import FluentKit
import Foundation
import Logging
import NIOCore
import NIOPosix
import ReliableDB
import ReliableDBFluent
import ReliableDBPostgres
import ReliableDBTestSupport
import SQLKit
import Testing
import Tracing

/// A model listed in `models:`, so its operations carry its type name (`Person.read`).
final class Person: Model, @unchecked Sendable {
    static let schema = "people"

    @ID(key: .id) var id: UUID?
    @Field(key: "name") var name: String
    @Field(key: "position") var position: Int
    @OptionalField(key: "padding") var padding: String?

    init() {}

    init(id: UUID? = nil, name: String, position: Int) {
        self.id = id
        self.name = name
        self.position = position
    }
}

/// A model left out of `models:`, so its operations carry its table's name (`pets.read`).
final class Pet: Model, @unchecked Sendable {
    static let schema = "pets"

    @ID(key: .id) var id: UUID?
    @Field(key: "name") var name: String

    init() {}

    init(id: UUID? = nil, name: String) {
        self.id = id
        self.name = name
    }
}

/// Fluent on a ReliableDB database, as an app sets it up: `Databases` with the reliable driver.
struct FluentOnReliableDB: Sendable {
    let db: any Database
    let reliable: ReliableDatabase<PostgresBackend>

    /// The same database as SQLKit sees it (`raw`, `select`, ...).
    var sql: any SQLDatabase { db as! any SQLDatabase }

    func operation(_ name: String) -> OperationStats? {
        reliable.metrics().queries.operations[name]
    }

    /// Retries of all operations. (An operation name's own count misses the retries of its first
    /// operation, which are scheduled before the name has an entry.)
    var retries: Int { reliable.metrics().queries.retries }

    /// Runs `body` with Fluent on `url`, and closes both after it.
    static func with(
        _ url: PostgresURL,
        reliability: ReliabilityConfiguration = .init(),
        tracer: (any Tracer)? = nil,
        _ body: (FluentOnReliableDB) async throws -> Void
    ) async throws {
        let reliable = try ReliableDatabase.postgres(
            configuration: ReliableDBConfiguration(
                database: .postgres(url),
                connectionLimit: 4,
                poolTimeout: .seconds(5)
            ),
            reliability: reliability,
            tracer: tracer
        )
        let group = MultiThreadedEventLoopGroup.singleton
        let databases = Databases(threadPool: .singleton, on: group)
        databases.use(.reliable(reliable, models: [Person.self]), as: .reliable)
        do {
            let db = try #require(databases.database(.reliable, logger: Logger(label: "test.fluent"), on: group.any()))
            try await body(FluentOnReliableDB(db: db, reliable: reliable))
        } catch {
            await databases.shutdownAsync()
            try? await reliable.shutdown()
            throw error
        }
        await databases.shutdownAsync()
        try await reliable.shutdown()
    }
}

/// The server `scripts/test` starts and the PgBouncer (transaction pooling) in front of it. A
/// missing one fails the test: these tests are never skipped.
enum TestServers {
    static func url(_ variable: String) throws -> PostgresURL {
        guard let value = ProcessInfo.processInfo.environment[variable], !value.isEmpty else {
            throw ScratchDatabase.Missing(variable: variable)
        }
        var url = try PostgresURL.parse(value).get()
        url.sslMode = .disable
        url.applicationName = "rdb-fluent-\(UUID().uuidString.prefix(8).lowercased())"
        return url
    }

    /// The server itself, with its connections' own `statement_timeout`.
    static func direct() throws -> PostgresURL {
        try url("RELIABLEDB_TEST_POSTGRES_URL")
    }

    /// The server behind PgBouncer in transaction pooling mode, declared with `pgbouncer=true`.
    static func behindPgBouncer() throws -> PostgresURL {
        var url = try url("RELIABLEDB_TEST_PGBOUNCER_URL")
        url.pgbouncer = true
        return url
    }
}

/// A scratch database with the tables of ``Person`` and ``Pet`` and helpers that make the first
/// attempt of a statement fail, made beside ReliableDB so they count as none of its operations.
struct FluentScratch {
    let scratch: ScratchDatabase

    var url: PostgresURL {
        get throws { try PostgresURL.parse(scratch.url).get() }
    }

    /// `fail_once(n, at)` raises a serialization failure (40001) when it reaches row `at` the first
    /// time after ``resetAttempts()``; `pause_once(n, at)` sleeps 30 s there instead. What counts
    /// is a sequence, which a failed statement does not roll back.
    static let setup = [
        "CREATE TABLE people (id uuid PRIMARY KEY, name text NOT NULL, position int NOT NULL, padding text)",
        "CREATE TABLE pets (id uuid PRIMARY KEY, name text NOT NULL)",
        "CREATE SEQUENCE attempts",
        """
        CREATE FUNCTION fail_once(n int, at int) RETURNS bool LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            IF n = at THEN
                IF nextval('attempts') = 1 THEN
                    RAISE EXCEPTION 'the first attempt fails' USING ERRCODE = '40001';
                END IF;
            END IF;
            RETURN true;
        END $$
        """,
        """
        CREATE FUNCTION pause_once(n int, at int) RETURNS bool LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            IF n = at THEN
                IF nextval('attempts') = 1 THEN
                    PERFORM pg_sleep(30);
                END IF;
            END IF;
            RETURN true;
        END $$
        """,
    ]

    /// Runs `body` on a scratch database of its own, prepared with ``setup`` unless `prepared` is
    /// false, and drops it after.
    static func with(prepared: Bool = true, _ body: (FluentScratch) async throws -> Void) async throws {
        let scratch = FluentScratch(scratch: try await ScratchDatabase.create(prefix: "fluent"))
        do {
            if prepared {
                try await scratch.side { side in
                    for statement in setup { try await side.execute(statement) }
                }
            }
            try await body(scratch)
        } catch {
            try? await scratch.scratch.drop()
            throw error
        }
        try await scratch.scratch.drop()
    }

    /// A plain connection to the scratch database, outside ReliableDB.
    func side<T>(_ body: (SideConnection) async throws -> T) async throws -> T {
        var components = scratch.server
        components.path = "/\(scratch.name)"
        return try await SideConnection.with(components, body)
    }

    /// The next `fail_once` or `pause_once` that reaches its row is a first attempt again.
    func resetAttempts() async throws {
        try await side { try await $0.execute("ALTER SEQUENCE attempts RESTART") }
    }

    /// `count` people, each with about 2 kB of padding, so the server sends the first rows of a
    /// read before it has produced the last.
    func insertPeople(_ count: Int) async throws {
        try await side {
            try await $0.execute(
                """
                INSERT INTO people SELECT gen_random_uuid(), 'p' || g, g, repeat('x', 2000)
                FROM generate_series(1, \(count)) g
                """
            )
        }
    }

    /// Ends the backend of this scratch database that sleeps in `pause_once`, once one does.
    func terminatePausedBackend() async throws -> Bool {
        try await eventually {
            try await side {
                try await $0.int(
                    """
                    SELECT count(pg_terminate_backend(pid))::int FROM pg_stat_activity
                    WHERE datname = current_database() AND wait_event = 'PgSleep'
                      AND query LIKE '%pause_once%' AND pid <> pg_backend_pid()
                    """
                )
            } > 0
        }
    }
}

extension FluentOnReliableDB {
    /// `SHOW statement_timeout` on `db`: the server-side timeout its statements run under.
    static func statementTimeout(on db: any Database) async throws -> String {
        let row = try #require(try await (db as! any SQLDatabase).raw("SHOW statement_timeout").first())
        return try row.decode(column: "statement_timeout", as: String.self)
    }
}

/// A `statement_timeout` as PostgreSQL shows it (`305s`, `64998ms`, `5min`, `0`).
func parseStatementTimeout(_ shown: String) -> Duration? {
    let digits = shown.prefix { $0.isNumber }
    guard let value = Int64(digits) else { return nil }
    switch shown.dropFirst(digits.count) {
    case "": return .milliseconds(value)
    case "ms": return .milliseconds(value)
    case "s": return .seconds(value)
    case "min": return .seconds(value * 60)
    case "h": return .seconds(value * 3_600)
    case "d": return .seconds(value * 86_400)
    default: return nil
    }
}

/// Polls `condition` every few milliseconds for up to ten seconds: waiting for a server state, not
/// timing; the limit only ends a broken test.
func eventually(_ condition: () async throws -> Bool) async throws -> Bool {
    let start = ContinuousClock.now
    while ContinuousClock.now - start < .seconds(10) {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(10))
    }
    return try await condition()
}
