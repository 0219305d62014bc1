import Foundation
import GRDB
import ReliableDB
import ReliableDBSQLite
import ReliableDBTesting
import Testing

/// The admission in front of GRDB's pool, which runs on the pool state machine: waits end on the
/// injected clock, so a ``ManualClock`` drives every timeout here without a real sleep.
@Suite("SQLite admission on the pool state machine")
struct SQLiteAdmissionTests {
    @Test func waitersPastThePoolTimeoutFailWithThePoolTimeout() async throws {
        let file = try TemporaryDatabaseFile()
        let clock = ManualClock()
        let backend = try SQLiteBackend(path: file.path, connectionLimit: 1, poolTimeout: .seconds(2), clock: clock)
        let inside = Gate()
        let holder = Task { try await backend.read { _ in inside.enterAndWait() } }
        try await waitUntil { backend.poolStatistics().active == 1 }

        let early = (0..<2).map { _ in Task { try await backend.read { try Int.fetchOne($0, sql: "SELECT 1") } } }
        try await waitUntil { backend.poolStatistics().waiting == 2 }
        await clock.waitForSleepers(count: 1)
        clock.advance(by: .seconds(1))
        let late = Task { try await backend.read { try Int.fetchOne($0, sql: "SELECT 1") } }
        try await waitUntil { backend.poolStatistics().waiting == 3 }
        #expect(clock.sleeperCount == 1, "one timer for the pool, not one per waiter")

        clock.advance(by: .seconds(1))
        for waiter in early {
            let error = await #expect(throws: DatabasePoolTimeoutError.self) { try await waiter.value }
            #expect(error?.waited == .seconds(2))
            #expect(error?.statistics.active == 1)
            #expect(error?.statistics.max == 2)
        }
        #expect(backend.poolStatistics().waiting == 1, "the later waiter has a second left")

        await clock.waitForSleepers(count: 1)
        clock.advance(by: .seconds(1))
        let error = await #expect(throws: DatabasePoolTimeoutError.self) { try await late.value }
        #expect(error?.waited == .seconds(2))
        let statistics = backend.poolStatistics()
        #expect(statistics.acquireTimeouts == 3)
        #expect(statistics.waiting == 0)
        #expect(statistics.active == 1)
        #expect(clock.sleeperCount == 0, "no timer while no one waits")

        inside.open()
        try await holder.value
        #expect(backend.poolStatistics().active == 0)
        try await backend.shutdown()
    }

    @Test func anEarlierAttemptDeadlineEndsTheWaitWithoutCountingAPoolTimeout() async throws {
        let file = try TemporaryDatabaseFile()
        let clock = ManualClock()
        let backend = try SQLiteBackend(path: file.path, connectionLimit: 1, poolTimeout: .seconds(10), clock: clock)
        let inside = Gate()
        let holder = Task { try await backend.read { _ in inside.enterAndWait() } }
        try await waitUntil { backend.poolStatistics().active == 1 }
        let patient = Task { try await backend.read { try Int.fetchOne($0, sql: "SELECT 1") } }
        try await waitUntil { backend.poolStatistics().waiting == 1 }
        await clock.waitForSleepers(count: 1)

        // A stopped scheduler never fires, so only the pool's own timer, moved to the earlier
        // instant, can end this wait.
        let scheduler = DeadlineScheduler(clock: clock)
        scheduler.stop()
        let deadline = clock.now + .seconds(1)
        let hurried = Task {
            try await scheduler.bounded(until: deadline) { attempt in
                try await backend.read(within: attempt) { try Int.fetchOne($0, sql: "SELECT 1") }
            }
        }
        try await waitUntil { backend.poolStatistics().waiting == 2 }
        await clock.waitForSleepers(count: 1)
        clock.advance(by: .seconds(1))
        await #expect(throws: AttemptDeadlineExceeded.self) { try await hurried.value }
        #expect(backend.poolStatistics().waiting == 1)
        #expect(backend.poolStatistics().acquireTimeouts == 0, "the attempt's deadline is not the pool's timeout")

        await clock.waitForSleepers(count: 1)
        clock.advance(by: .seconds(9))
        await #expect(throws: DatabasePoolTimeoutError.self) { try await patient.value }
        #expect(backend.poolStatistics().acquireTimeouts == 1)

        inside.open()
        try await holder.value
        try await backend.shutdown()
    }

    @Test func statisticsCountWhatIsLeasedAndWhoWaits() async throws {
        let file = try TemporaryDatabaseFile()
        let clock = ManualClock()
        let backend = try SQLiteBackend(path: file.path, connectionLimit: 2, poolTimeout: .seconds(60), clock: clock)
        let start = backend.poolStatistics()
        #expect(start.total == 1, "GRDB opens the writer at once")
        #expect(start.idle == 1)
        #expect(start.active == 0)
        #expect(start.opened == 1)
        #expect(start.max == 3)

        let reading = Gate()
        let writing = Gate()
        let readers = (0..<3).map { _ in Task { try await backend.read { _ in reading.enterAndWait() } } }
        let writers = (0..<2).map { _ in Task { try await backend.write { _ in writing.enterAndWait() } } }
        try await waitUntil {
            let statistics = backend.poolStatistics()
            return statistics.active == 3 && statistics.waiting == 2
        }
        let busy = backend.poolStatistics()
        #expect(busy.total == 3)
        #expect(busy.active == 3)
        #expect(busy.idle == 0)
        #expect(busy.waiting == 2)
        #expect(busy.opened == 3)
        #expect(busy.closed == 0)
        #expect(busy.utilization == 100)

        // The two waiters get their slots one second later, by the clock the backend was given.
        clock.advance(by: .seconds(1))
        reading.open()
        writing.open()
        for task in readers + writers { try await task.value }
        let idle = backend.poolStatistics()
        #expect(idle.active == 0)
        #expect(idle.waiting == 0)
        #expect(idle.idle == 3)
        #expect(idle.total == 3)
        #expect(idle.opened == 3)
        #expect(idle.acquireTimeouts == 0)
        #expect(idle.maxAcquireTime == .seconds(1))
        #expect(idle.averageAcquireTime == .milliseconds(400), "five admissions, two of which waited 1 s")

        try await backend.shutdown()
        let closed = backend.poolStatistics()
        #expect(closed.total == 0)
        #expect(closed.idle == 0)
        #expect(closed.closed == closed.opened)
        await #expect(throws: SQLiteShutDownError.self) {
            try await backend.read { try Int.fetchOne($0, sql: "SELECT 1") }
        }
    }

    @Test func aCancelledWaiterLeavesTheQueue() async throws {
        let file = try TemporaryDatabaseFile()
        let clock = ManualClock()
        let backend = try SQLiteBackend(path: file.path, connectionLimit: 1, poolTimeout: .seconds(5), clock: clock)
        let inside = Gate()
        let holder = Task { try await backend.read { _ in inside.enterAndWait() } }
        try await waitUntil { backend.poolStatistics().active == 1 }
        let waiter = Task { try await backend.read { try Int.fetchOne($0, sql: "SELECT 1") } }
        try await waitUntil { backend.poolStatistics().waiting == 1 }
        await clock.waitForSleepers(count: 1)

        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        #expect(backend.poolStatistics().waiting == 0)
        #expect(backend.poolStatistics().active == 1)
        #expect(clock.sleeperCount == 0, "the timer stops with the last waiter")
        clock.advance(by: .seconds(10))
        #expect(backend.poolStatistics().acquireTimeouts == 0)

        // The slot the cancelled waiter would have had goes to the next caller.
        inside.open()
        try await holder.value
        let one = try await backend.read { try Int.fetchOne($0, sql: "SELECT 1") }
        #expect(one == 1)
        #expect(backend.poolStatistics().active == 0)
        #expect(backend.poolStatistics().idle == 2)
        try await backend.shutdown()
    }

    @Test func aCallerCancelledBeforeItWaitsIsNotAdmitted() async throws {
        let file = try TemporaryDatabaseFile()
        let backend = try SQLiteBackend(path: file.path, connectionLimit: 1, clock: ManualClock())
        let inside = Gate()
        let holder = Task { try await backend.read { _ in inside.enterAndWait() } }
        try await waitUntil { backend.poolStatistics().active == 1 }
        let waiter = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await backend.read { try Int.fetchOne($0, sql: "SELECT 1") }
        }
        await #expect(throws: CancellationError.self) { try await waiter.value }
        #expect(backend.poolStatistics().waiting == 0)
        inside.open()
        try await holder.value
        try await backend.shutdown()
    }

    @Test func aZeroPoolTimeoutStillTakesAFreeSlot() async throws {
        let file = try TemporaryDatabaseFile()
        let backend = try SQLiteBackend(path: file.path, connectionLimit: 1, poolTimeout: .zero, clock: ManualClock())
        let one = try await backend.read { try Int.fetchOne($0, sql: "SELECT 1") }
        #expect(one == 1)
        #expect(backend.poolStatistics().acquireTimeouts == 0)
        try await backend.shutdown()
    }

    @Test func shutdownFailsTheWaiters() async throws {
        let file = try TemporaryDatabaseFile()
        let backend = try SQLiteBackend(path: file.path, connectionLimit: 1, clock: ManualClock())
        let inside = Gate()
        let holder = Task { try await backend.read { _ in inside.enterAndWait() } }
        try await waitUntil { backend.poolStatistics().active == 1 }
        let waiter = Task { try await backend.read { try Int.fetchOne($0, sql: "SELECT 1") } }
        try await waitUntil { backend.poolStatistics().waiting == 1 }

        // Shutdown fails the waiter at once, admits no one, and waits for the operation under way.
        let shutdown = Task { try await backend.shutdown() }
        let error = await #expect(throws: SQLiteShutDownError.self) { try await waiter.value }
        #expect(error?.description.contains("shut down") == true)
        if let error { #expect(backend.classify(error).errorClass == .caller) }
        await #expect(throws: SQLiteShutDownError.self) { try await backend.write { _ in } }
        #expect(backend.poolStatistics().active == 1)
        inside.open()
        try await holder.value
        try await shutdown.value
        let statistics = backend.poolStatistics()
        #expect(statistics.total == 0)
        #expect(statistics.active == 0)
        #expect(statistics.closed == statistics.opened)
    }
}

/// Yields until `condition` holds; fails the test after 10 s of real time instead of hanging.
func waitUntil(_ condition: () -> Bool, sourceLocation: SourceLocation = #_sourceLocation) async throws {
    let start = ContinuousClock.now
    while !condition() {
        if ContinuousClock.now - start > .seconds(10) {
            Issue.record("the condition did not hold within 10 s", sourceLocation: sourceLocation)
            throw CancellationError()
        }
        await Task.yield()
    }
}
