import Foundation
import Logging
import PostgresNIO
import ReliableDB
import ReliableDBPostgres
import ReliableDBTestSupport
import Testing

/// `idle_in_transaction_session_timeout`, set per connection from the deadlines: a client gone
/// mid-transaction (its packets lost, its socket never closed: a killed VM, a partition) does not
/// hold its locks until TCP notices, against the real server behind a fault proxy.
@Suite("Abandoned sessions end on the server")
struct AbandonedSessionTests {
    /// With the default timeouts every connection gets the backstop (the longest timeout plus 5 s).
    @Test func aDefaultConnectionHasTheBackstop() async throws {
        let db = try TestServer.open(try TestServer.url())
        let shown = try await db.query(.read("show")) { connection in
            var values: [String] = []
            for name in ["statement_timeout", "idle_in_transaction_session_timeout"] {
                for try await value in try await connection.query(
                    PostgresQuery(unsafeSQL: "SHOW \(name)"),
                    logger: Logger(label: "test")
                ).decode(String.self) {
                    values.append(value)
                }
            }
            return values
        }
        #expect(shown == ["305s", "305s"])
        try await db.shutdown()
    }

    /// A transaction holds a row lock, then its client vanishes (the proxy drops every packet):
    /// the client gives up at its 2 s deadline and the server, which the cancel and the close
    /// cannot reach, ends the session at the raised backstop (deadline plus 5 s), freeing the
    /// lock. Without a backstop the lock is still held when the test stops looking.
    @Test(.timeLimit(.minutes(2)))
    func aClientGoneMidTransactionReleasesItsLocksAtTheBackstop() async throws {
        async let with = Self.abandon(backstop: .seconds(1))
        async let without = Self.abandon(backstop: nil)
        let (released, held) = try await (with, without)
        print(
            "fault report: client gone mid-transaction: lock released after \(released.map { "\($0)" } ?? "never")"
                + " with the backstop; without it, still held after \(held == nil ? "the whole wait" : "?")"
        )
        let after = try #require(released, "the backstop ended the abandoned session")
        #expect(after >= .seconds(6) && after <= .seconds(10), "the deadline (2 s) plus the 5 s margin, give or take")
        #expect(held == nil, "without a backstop, the abandoned session keeps its lock")
    }

    /// When the lock on a fresh table, taken by a transaction whose client then vanished, became
    /// free again (measured from the vanishing); nil if it was still held after 12 s. The observer
    /// is closed whatever happens (PostgresNIO traps on a connection dropped open).
    static func abandon(backstop: Duration?) async throws -> Duration? {
        let observer = try await Observer.connect()
        do {
            let released = try await abandon(backstop: backstop, observer: observer)
            try? await observer.connection.close()
            return released
        } catch {
            try? await observer.connection.close()
            throw error
        }
    }

    private static func abandon(backstop: Duration?, observer: Observer) async throws -> Duration? {
        let table = "abandoned_\(UUID().uuidString.prefix(8).lowercased())"
        try await observer.execute("CREATE TABLE \(table) (id int PRIMARY KEY)")
        try await observer.execute("INSERT INTO \(table) VALUES (1)")
        let url = try TestServer.url()
        let proxy = try await FaultProxy.start(upstreamHost: url.host, upstreamPort: url.port)
        var proxied = url
        proxied.host = "127.0.0.1"
        proxied.port = proxy.port
        var settings = ReliabilityConfiguration()
        settings.timeouts = TimeoutConfiguration(transaction: .seconds(2))
        settings.retry.attempts = 1
        let db = try ReliableDatabase(
            backend: try PostgresBackend(url: proxied, connectionLimit: 1, statementTimeout: backstop),
            configuration: settings
        )
        let locked = AsyncStream<Void>.makeStream()
        let client = Task {
            try await db.transaction(OperationOptions("hold")) { connection in
                _ = try await connection.query(
                    PostgresQuery(unsafeSQL: "SELECT id FROM \(table) WHERE id = 1 FOR UPDATE"),
                    logger: Logger(label: "test")
                ).collect()
                locked.continuation.yield()
                // Slow work inside the transaction, until the deadline closes the connection.
                while !connection.isClosed && !Task.isCancelled { try await Task.sleep(for: .milliseconds(50)) }
            }
        }
        for await _ in locked.stream { break }
        try await proxy.setMode(.blackhole)
        let vanished = ContinuousClock.now
        var released: Duration?
        while ContinuousClock.now - vanished < .seconds(12) {
            let held = try await observer.count(
                """
                SELECT count(*)::int FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                WHERE c.relname = '\(table)' AND l.mode = 'RowShareLock'
                """
            )
            if held == 0 {
                released = ContinuousClock.now - vanished
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        client.cancel()
        _ = await client.result
        try await proxy.shutdown()
        // Whatever still holds the table (the session the proxy kept open) goes, so DROP never waits.
        try await observer.execute(
            """
            SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
            WHERE c.relname = '\(table)' AND l.pid <> pg_backend_pid()
            """
        )
        try? await db.shutdown()
        try await observer.execute("DROP TABLE IF EXISTS \(table)")
        return released
    }
}
