import Foundation
import GRDB
import ReliableDB
import ReliableDBSQLite
import Synchronization
import Testing

@Suite("SQLite backend against a real file")
struct SQLiteIntegrationTests {
    @Test func queriesAndTransactionsWork() async throws {
        let file = try TemporaryDatabaseFile()
        let db = try file.open()
        try await db.createCarmenSchema()
        let created = try await db.transaction(.init("create-user-with-profile", timeout: .seconds(10))) { tx in
            try tx.execute(sql: "INSERT INTO user (email) VALUES (?)", arguments: ["ana@carmen.example"])
            let userID = tx.lastInsertedRowID
            try tx.execute(sql: "INSERT INTO profile (userId, name) VALUES (?, ?)", arguments: [userID, "Ana"])
            return userID
        }
        let users = try await db.query(.read("get-users", table: "user")) { conn in
            try Row.fetchAll(conn, sql: "SELECT id, email FROM user").map { ($0["id"] as Int64, $0["email"] as String) }
        }
        #expect(users.count == 1)
        #expect(users.first?.0 == created)
        let metrics = db.metrics()
        #expect(metrics.successfulQueries == 2)
        #expect(metrics.operations["create-user-with-profile"]?.successes == 1)
        #expect(metrics.pool.active == 0)
        #expect(metrics.pool.max == 5)
        try await db.shutdown()
    }

    @Test func aTimeoutInterruptsTheRunningStatementAndThePoolStaysUsable() async throws {
        let file = try TemporaryDatabaseFile()
        let db = try file.open(connectionLimit: 1)
        // Long enough that the statement starts before the deadline even while a loaded test run
        // (browsers, servers, other suites) delays it; the assertion is on how fast it stops.
        let limit = Duration.seconds(3)
        // Measured on the database thread: when SQLite stopped the statement, against the deadline,
        // so the figure is the interrupt's, not how soon a busy test machine resumed this task.
        let statement = StatementTimes()
        let deadline = ContinuousClock.now + limit
        do {
            _ = try await db.query(.read("endless-count", timeout: limit)) { conn in
                statement.started()
                defer { statement.stopped() }
                return try Int.fetchOne(conn, sql: endlessQuery)
            }
            Issue.record("the endless query returned")
        } catch let error as DatabaseTimeoutError {
            #expect(error.operation == "endless-count")
            #expect(error.timeout == limit)
            let stopped = try #require(statement.stoppedAt, "the statement never ran")
            #expect(stopped - deadline < .milliseconds(100), "SQLite stopped \(stopped - deadline) after the deadline")
        }
        // The single reader connection is free again at once: the next query runs straight away.
        let one = try await db.query(.read("select-one", timeout: .milliseconds(500))) { conn in
            try Int.fetchOne(conn, sql: "SELECT 1")
        }
        #expect(one == 1)
        #expect(db.metrics().timeouts == 1)
        #expect(db.metrics().pool.active == 0)
        #expect(db.metrics().pool.acquireTimeouts == 0)
        try await db.shutdown()
    }

    @Test func aLockedDatabaseIsRetriedAndThenSucceeds() async throws {
        let file = try TemporaryDatabaseFile()
        let db = try file.open(
            busyTimeout: .milliseconds(20),
            reliability: .init(
                retry: .init(attempts: 50, initialDelay: .milliseconds(5), maxDelay: .milliseconds(20))
            )
        )
        try await db.createCarmenSchema()

        // Another connection, as another process would, takes the write lock and holds it.
        let blocker = try DatabaseQueue(path: file.path)
        let locked = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            try? blocker.writeWithoutTransaction { db in
                try db.execute(sql: "BEGIN EXCLUSIVE")
                locked.signal()
                release.wait()
                try db.execute(sql: "COMMIT")
            }
        }
        await waitOffTheCooperativePool(for: locked)

        let events = db.events.subscribe()
        let insert = Task {
            try await db.transaction(.init("insert-user")) { tx in
                try tx.execute(sql: "INSERT INTO user (email) VALUES ('locked@carmen.example')")
            }
        }
        // Release the lock only after the pipeline has seen BUSY and scheduled a retry.
        for await event in events {
            if case .retryScheduled(_, _, _, let errorClass) = event {
                #expect(errorClass == .transientTransaction)
                break
            }
        }
        release.signal()
        try await insert.value

        let count = try await db.query(.read("count-users")) { try Int.fetchOne($0, sql: "SELECT count(*) FROM user") }
        #expect(count == 1)
        let metrics = db.metrics()
        #expect(metrics.retries >= 1)
        #expect(metrics.circuitBreaker.state == .closed)
        #expect(metrics.circuitBreaker.totalFailures == 0, "BUSY is transient, not a database failure")
        try await db.shutdown()
    }

    @Test func aConstraintViolationIsNotRetriedAndLeavesTheBreakerClosed() async throws {
        let file = try TemporaryDatabaseFile()
        let db = try file.open(
            reliability: .init(circuitBreaker: .init(failureThreshold: 1), retry: .init(attempts: 5))
        )
        try await db.createCarmenSchema()
        _ = try await db.write(.init("insert-user")) {
            try $0.execute(sql: "INSERT INTO user (email) VALUES ('dup@x')")
        }
        for _ in 0..<3 {
            do {
                try await db.write(.init("insert-user")) {
                    try $0.execute(sql: "INSERT INTO user (email) VALUES ('dup@x')")
                }
                Issue.record("duplicate accepted")
            } catch let error as DatabaseError {
                #expect(error.resultCode == .SQLITE_CONSTRAINT)
            }
        }
        let metrics = db.metrics()
        #expect(metrics.retries == 0)
        #expect(metrics.circuitBreaker.state == .closed)
        #expect(metrics.failedQueries == 3)
        #expect(metrics.errorsByClass[.caller] == 3)
        try await db.shutdown()
    }

    @Test func aFailedTransactionLeavesNothingBehind() async throws {
        let file = try TemporaryDatabaseFile()
        let db = try file.open()
        try await db.createCarmenSchema()
        await #expect(throws: DatabaseError.self) {
            try await db.transaction(.init("create-user-with-profile")) { tx in
                try tx.execute(sql: "INSERT INTO user (email) VALUES ('half@x')")
                try tx.execute(sql: "INSERT INTO profile (userId, name) VALUES (999, 'nobody')")  // FK violation
            }
        }
        let count = try await db.query(.read("count-users")) { try Int.fetchOne($0, sql: "SELECT count(*) FROM user") }
        #expect(count == 0)
        try await db.shutdown()
    }

    @Test func poolStatisticsAreExactUnderConcurrentReads() async throws {
        let file = try TemporaryDatabaseFile()
        let db = try file.open(connectionLimit: 3, poolTimeout: .seconds(5))
        let inside = Gate()
        let readers = (0..<5).map { _ in
            Task {
                try await db.query(.read("hold")) { _ in inside.enterAndWait() }
            }
        }
        // Three readers hold connections, two wait for one.
        while db.metrics().pool.active < 3 || db.metrics().pool.waiting < 2 { await Task.yield() }
        let busy = db.metrics().pool
        #expect(busy.active == 3)
        #expect(busy.waiting == 2)
        #expect(busy.max == 4)
        #expect(busy.utilization == 75)
        inside.open()
        for reader in readers { try await reader.value }
        let idle = db.metrics().pool
        #expect(idle.active == 0)
        #expect(idle.waiting == 0)
        #expect(idle.idle == idle.total)
        try await db.shutdown()
    }

    @Test func waitingLongerThanThePoolTimeoutFailsWithStatistics() async throws {
        let file = try TemporaryDatabaseFile()
        let db = try file.open(connectionLimit: 1, poolTimeout: .milliseconds(100))
        let inside = Gate()
        let holder = Task { try await db.query(.read("hold")) { _ in inside.enterAndWait() } }
        while db.metrics().pool.active < 1 { await Task.yield() }
        do {
            _ = try await db.query(OperationOptions("blocked", retries: false)) {
                try Int.fetchOne($0, sql: "SELECT 1")
            }
            Issue.record("expected a pool timeout")
        } catch let error as DatabasePoolTimeoutError {
            #expect(error.statistics.active == 1)
            #expect(error.statistics.max == 2)
            #expect(error.waited >= .milliseconds(100))
            #expect(error.description.contains("DB_POOL_TIMEOUT"))
        }
        inside.open()
        try await holder.value
        #expect(db.metrics().pool.acquireTimeouts == 1)
        #expect(db.metrics().errorsByClass[.overload] == 1)
        try await db.shutdown()
    }

    @Test func theDeadlineAlsoBoundsTheWaitForAConnection() async throws {
        let file = try TemporaryDatabaseFile()
        let db = try file.open(connectionLimit: 1, poolTimeout: .seconds(30))
        let inside = Gate()
        let holder = Task { try await db.query(.read("hold")) { _ in inside.enterAndWait() } }
        while db.metrics().pool.active < 1 { await Task.yield() }
        // The 150 ms deadline ends the wait, long before the 30 s pool timeout would.
        let error = await #expect(throws: DatabaseTimeoutError.self) {
            try await db.query(.read("blocked", timeout: .milliseconds(150))) { try Int.fetchOne($0, sql: "SELECT 1") }
        }
        #expect(error?.timeout == .milliseconds(150))
        #expect(try #require(error).elapsed < .seconds(1), "waited \(String(describing: error?.elapsed))")
        #expect(db.metrics().pool.acquireTimeouts == 0)
        #expect(db.metrics().pool.waiting == 0, "the timed-out waiter left the queue")
        inside.open()
        try await holder.value
        try await db.shutdown()
    }

    @Test func theProbeReportsTheServerVersion() async throws {
        let file = try TemporaryDatabaseFile()
        let db = try file.open()
        let probe = try await db.probe().get()
        #expect(probe.serverVersion.hasPrefix("SQLite 3."))
        #expect(await db.healthCheck())
        try await db.shutdown()
        #expect(await db.healthCheck() == false)
    }

    @Test func openingFromTheConfigurationUsesItsSettings() async throws {
        let file = try TemporaryDatabaseFile()
        let configuration = try await ReliableDBConfiguration.fromEnvironment(
            ["DATABASE_URL": "sqlite:\(file.path)", "DB_CONNECTION_LIMIT": "2", "DB_CB_FAILURE_THRESHOLD": "7"],
            dotEnvPath: nil
        )
        let db = try ReliableDatabase.sqlite(configuration: configuration)
        #expect(db.metrics().pool.max == 3)
        #expect(db.circuitBreaker.configuration.failureThreshold == 7)
        #expect(FileManager.default.fileExists(atPath: file.path))
        try await db.shutdown()
        let postgres = try await ReliableDBConfiguration.fromEnvironment(
            ["DATABASE_URL": "postgres://u:pw@h/d"],
            dotEnvPath: nil
        )
        #expect(throws: UnsupportedDatabaseError.self) { try ReliableDatabase.sqlite(configuration: postgres) }
    }
}

/// Holds SQLite closures (which run on GRDB's threads, not in tasks) until the test opens it.
final class Gate: Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    private let waiters = ManagedCount()

    func enterAndWait() {
        waiters.increment()
        semaphore.wait()
        semaphore.signal()
    }

    func open() {
        semaphore.signal()
    }
}

final class ManagedCount: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0

    func increment() {
        lock.lock()
        value += 1
        lock.unlock()
    }
}

/// Waits for a semaphore on a dispatch thread, so the few cooperative threads stay free.
func waitOffTheCooperativePool(for semaphore: DispatchSemaphore) async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        DispatchQueue.global().async {
            semaphore.wait()
            continuation.resume()
        }
    }
}

/// Start and stop instants of a statement, recorded on GRDB's thread.
final class StatementTimes: Sendable {
    private let times = Mutex<(start: ContinuousClock.Instant?, stop: ContinuousClock.Instant?)>((nil, nil))

    func started() { times.withLock { $0.start = .now } }
    func stopped() { times.withLock { $0.stop = .now } }

    var stoppedAt: ContinuousClock.Instant? {
        times.withLock { $0.start == nil ? nil : $0.stop }
    }
}
