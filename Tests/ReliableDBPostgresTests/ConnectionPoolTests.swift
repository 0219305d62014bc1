import Foundation
import Logging
import PostgresNIO
import ReliableDB
import ReliableDBPool
import Synchronization
import Testing

@testable import ReliableDBPostgres

/// The pool's own bookkeeping against the real server, in the serialized suite because other
/// tests stop the server. Connects are real; one test makes a chosen connect attempt fail.
extension PostgresBackendTests {
    @Test func idleConnectionsTimeOutAlthoughKeepAlivesKeepCheckingThem() async throws {
        let backend = try PostgresBackend(
            url: try TestServer.url(),
            connectionLimit: 3,
            idleTimeout: .milliseconds(900),
            keepAliveInterval: .milliseconds(200)
        )
        let db = try ReliableDatabase(backend: backend)
        // Three leases held at once (each waits for the others), so three connections open.
        let holding = HeldCount()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<3 {
                group.addTask {
                    try await db.query(.read("r")) { _ in
                        holding.value.add(1, ordering: .relaxed)
                        while holding.value.load(ordering: .relaxed) < 3 { try await Task.sleep(for: .milliseconds(5)) }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(db.metrics().pool.total == 3)
        // A keep-alive proves a connection alive; it does not make it recently used.
        #expect(try await eventually { db.metrics().pool.total == 0 }, "\(db.metrics().pool)")
        // Closed for being idle; on a loaded machine a keep-alive may instead miss its 1 s timeout,
        // which is the other way a checked idle connection may end, never reuse.
        let closes = db.metrics().pool.closesByReason
        #expect(closes["idle", default: 0] + closes["keepalive", default: 0] == 3, "\(closes)")
        #expect(closes["idle", default: 0] >= 1, "\(closes)")
        try await db.shutdown()
    }

    @Test(.timeLimit(.minutes(1)))
    func aFailedConnectIsRetriedForWaitersWhileOtherConnectionsAreOpen() async throws {
        let pool = try Self.pool(limit: 5) { attempt in
            if attempt == 2 { throw InjectedConnectFailure() }
        }
        let first = try await Self.lease(1, from: pool)
        // Its connect fails; with `first` open the waiter stays queued and the pool tries again.
        let second = try await Self.lease(2, from: pool)
        let third = try await Self.lease(3, from: pool)
        let statistics = pool.statistics()
        #expect(statistics.connectFailures == 1)
        #expect(statistics.opened == 3)
        #expect(statistics.active == 3 && statistics.waiting == 0)
        for connection in [first, second, third] { pool.release(connection, discard: false) }
        #expect(pool.statistics().idle == 3)
        await pool.shutdown()
    }

    @Test func aLeasedConnectionTheServerClosesLeavesTheStatisticsExact() async throws {
        let pool = try Self.pool(limit: 5)
        let observer = try await Observer.connect()
        let doomed = try await Self.lease(1, from: pool)
        try await observer.execute("SELECT pg_terminate_backend(\(try #require(doomed.key).pid))")
        #expect(try await eventually { pool.statistics().total == 0 })
        var statistics = pool.statistics()
        #expect(statistics.active == 0, "a closed connection is not active, even before it is returned")
        let other = try await Self.lease(2, from: pool)
        pool.release(other, discard: false)
        statistics = pool.statistics()
        #expect(statistics.total == 1 && statistics.active == 0 && statistics.idle == 1, "\(statistics)")
        pool.release(doomed, discard: false)
        statistics = pool.statistics()
        #expect(statistics.total == 1 && statistics.active == 0 && statistics.idle == 1, "\(statistics)")
        #expect(statistics.closed == 1 && statistics.closesByReason["broken"] == 1)
        await pool.shutdown()
        statistics = pool.statistics()
        #expect(statistics.total == 0 && statistics.active == 0 && statistics.idle == 0, "\(statistics)")
        #expect(statistics.closesByReason["shutdown"] == 1)
        try await observer.close()
    }

    /// The pool's alarm holds the pool strongly (no weak reference: Sources/ReliableDB/Documentation.docc/Performance.md), so what
    /// ends that cycle must run: a shut-down pool, and one whose backend is gone, are freed (soon
    /// after: libdispatch lets go of a timer's handler on the timer's queue).
    @Test func aShutDownPoolAndADroppedBackendsPoolAreFreed() async throws {
        weak var shutDown: PostgresPool?
        do {
            let pool = try Self.pool(limit: 2)
            shutDown = pool
            pool.release(try await Self.lease(1, from: pool), discard: false)
            await pool.shutdown()
        }
        #expect(try await eventually { shutDown == nil })
        weak var backendsPool: PostgresPool?
        do {
            let backend = try PostgresBackend(url: try TestServer.url(), connectionLimit: 2)
            backendsPool = backend.pool
        }
        #expect(try await eventually { backendsPool == nil })
    }

    /// The pool timeout and the attempt's deadline reach the pool as two instants: a wait the
    /// attempt's deadline ends is the attempt's time running out, not an acquire timeout.
    @Test func aWaitEndedByTheAttemptsDeadlineIsNotAnAcquireTimeout() async throws {
        let backend = try PostgresBackend(url: try TestServer.url(), connectionLimit: 1, poolTimeout: .seconds(10))
        let held = try await backend.pool.lease(timeout: nil)
        let scheduler = DeadlineScheduler(clock: SystemClock())
        await #expect(throws: AttemptDeadlineExceeded.self) {
            try await scheduler.bounded(until: SystemClock().now + .milliseconds(100)) { attempt in
                _ = try await backend.lease(within: attempt)
            }
        }
        #expect(backend.pool.statistics().acquireTimeouts == 0)
        #expect(backend.pool.shell.statistics.deadlinesReached == 1)

        await #expect(throws: DatabasePoolTimeoutError.self) {
            _ = try await backend.lease(from: backend.pool, within: .unbounded, wait: .milliseconds(50))
        }
        #expect(backend.pool.statistics().acquireTimeouts == 1, "the pool's own limit still counts")
        backend.pool.release(held, discard: false)
        scheduler.stop()
        try await backend.shutdown()
    }

    struct InjectedConnectFailure: Error {}

    final class HeldCount: Sendable {
        let value = Atomic<Int>(0)
    }

    /// A pool of real connections to the test server; `beforeConnect` sees the attempt number
    /// (from 1) and may throw to fail that attempt.
    static func pool(
        limit: Int,
        beforeConnect: @escaping @Sendable (Int) throws -> Void = { _ in }
    ) throws -> PostgresPool {
        let configuration = try PostgresBackend.connectionConfiguration(for: try TestServer.url())
        let logger = Logger(label: "test.pool")
        let attempts = Atomic<Int>(0)
        return PostgresPool(
            configuration: .init(maximumConnections: limit, idleTimeout: .seconds(60), connectBackoffInitial: .zero),
            logger: logger
        ) { id, eventLoop in
            do {
                try beforeConnect(attempts.add(1, ordering: .relaxed).newValue)
            } catch {
                return eventLoop.makeFailedFuture(error)
            }
            return PostgresConnection.startConnectWithBackendKey(
                on: eventLoop,
                configuration: configuration,
                id: id,
                logger: logger
            ).0.map { PooledPostgresConnection(id: id, underlying: $0, key: $1) }
        }
    }

    static func lease(_ id: Int, from pool: PostgresPool) async throws -> PooledPostgresConnection {
        try await pool.lease(timeout: nil)
    }
}
