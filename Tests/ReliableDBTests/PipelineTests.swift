import ReliableDBTesting
import Synchronization
import Testing

@testable import ReliableDB

@Suite("Reliability pipeline")
struct PipelineTests {
    let noTimeouts = TimeoutConfiguration(enabled: false)
    let threeAttempts = RetryConfiguration(attempts: 3, initialDelay: .milliseconds(100), maxDelay: .seconds(1))

    @Test func transientErrorsAreRetriedUntilSuccess() async throws {
        let clock = ManualClock()
        let db = makeDatabase(clock: clock, breaker: .init(), retry: threeAttempts, timeouts: noTimeouts)
        let script = Script([
            .failure(.init(errorClass: .transientTransaction)), .failure(.init(errorClass: .overload)), .success(7),
        ])
        let value = try await driving(clock) {
            try await db.execute(OperationOptions("transfer", kind: .transaction)) { _ in try script.next() }
        }
        #expect(value == 7)
        #expect(script.calls.count == 3)
        let metrics = db.metrics()
        #expect(metrics.retries == 2)
        #expect(metrics.successfulQueries == 1)
        #expect(metrics.failedQueries == 0)
        #expect(
            metrics.circuitBreaker.totalFailures == 1,
            "overload counts against the breaker, a serialization failure does not"
        )
    }

    @Test func callerErrorsAreNeitherRetriedNorCounted() async throws {
        let clock = ManualClock()
        let db = makeDatabase(
            clock: clock,
            breaker: .init(failureThreshold: 1),
            retry: threeAttempts,
            timeouts: noTimeouts
        )
        let script = Script([.failure(.init(errorClass: .caller))])
        for _ in 0..<5 {
            await #expect(throws: ClassifiedError(errorClass: .caller)) {
                try await db.execute(OperationOptions("insert-user")) { _ in try script.next() }
            }
        }
        #expect(script.calls.count == 5, "one attempt per call")
        #expect(db.circuitBreaker.state == .closed)
        #expect(db.metrics().failedQueries == 5)
        #expect(db.metrics().errorsByClass[.caller] == 5)
    }

    @Test func aWriteThatMayHaveReachedTheServerIsNotRetriedUnlessIdempotent() async throws {
        let clock = ManualClock()
        let db = makeDatabase(clock: clock, breaker: .init(), retry: threeAttempts, timeouts: noTimeouts)
        let lostReply = ClassifiedError(errorClass: .connection, mayHaveReachedServer: true)

        let write = Script([.failure(lostReply), .success(1)])
        await #expect(throws: lostReply) {
            try await db.execute(OperationOptions("insert-order")) { _ in try write.next() }
        }
        #expect(write.calls.count == 1)

        let read = Script([.failure(lostReply), .success(1)])
        let value = try await driving(clock) {
            try await db.execute(.read("get-order")) { _ in try read.next() }
        }
        #expect(value == 1)
        #expect(read.calls.count == 2)

        let unsent = Script([.failure(ClassifiedError(errorClass: .connection)), .success(1)])
        _ = try await driving(clock) {
            try await db.execute(OperationOptions("insert-order")) { _ in try unsent.next() }
        }
        #expect(unsent.calls.count == 2, "a request that never left may always be retried")
    }

    @Test func noClassIsRetriedWhenTheStatementMayHaveTakenEffect() async throws {
        let clock = ManualClock()
        let db = makeDatabase(clock: clock, breaker: .init(), retry: threeAttempts, timeouts: noTimeouts)
        for errorClass in [ErrorClass.transientTransaction, .overload, .connection] {
            let maybeApplied = ClassifiedError(errorClass: errorClass, mayHaveReachedServer: true)
            let write = Script([.failure(maybeApplied), .success(1)])
            await #expect(throws: maybeApplied) {
                try await db.execute(OperationOptions("autocommit-writes")) { _ in try write.next() }
            }
            #expect(write.calls.count == 1, "\(errorClass) was retried although the write may have applied")
            let read = Script([.failure(maybeApplied), .success(1)])
            _ = try await driving(clock) {
                try await db.execute(.read("idempotent-read")) { _ in try read.next() }
            }
            #expect(read.calls.count == 2, "\(errorClass): an idempotent operation is retried")
        }
    }

    @Test func exhaustedRetriesReportAttemptsAndTheLastError() async throws {
        let clock = ManualClock()
        let db = makeDatabase(
            clock: clock,
            breaker: .init(failureThreshold: 100),
            retry: threeAttempts,
            timeouts: noTimeouts
        )
        let script = Script([.failure(.init(errorClass: .connection))])
        do {
            _ = try await driving(clock) {
                try await db.execute(OperationOptions("get-users")) { _ in try script.next() }
            }
            Issue.record("expected a retry error")
        } catch let error as DatabaseRetryError {
            #expect(error.attempts == 3)
            #expect(error.reason == .attemptsExhausted)
            #expect(error.lastErrorClass == .connection)
            #expect(error.lastError as? ClassifiedError == ClassifiedError(errorClass: .connection))
            #expect(error.description.contains("failed after 3 attempts"))
        }
        #expect(script.calls.count == 3)
    }

    /// The failure that opens the breaker ends the retry sequence at once: no further retry is
    /// scheduled, counted or slept, and no rejection is provoked.
    @Test func anOpeningBreakerStopsFurtherAttempts() async throws {
        let clock = ManualClock()
        let db = makeDatabase(
            clock: clock,
            breaker: .init(failureThreshold: 2),
            retry: .init(attempts: 10, initialDelay: .milliseconds(10)),
            timeouts: noTimeouts
        )
        let script = Script([.failure(.init(errorClass: .connection))])
        do {
            _ = try await driving(clock) {
                try await db.execute(OperationOptions("get-users")) { _ in try script.next() }
            }
            Issue.record("expected the retries to stop")
        } catch let error as DatabaseRetryError {
            #expect(error.reason == .circuitOpened)
            #expect(error.attempts == 2)
            #expect(error.lastErrorClass == .connection)
        }
        #expect(script.calls.count == 2)
        #expect(db.circuitBreaker.state == .open)
        #expect(db.metrics().rejectedByCircuitBreaker == 0, "no attempt was made only to be rejected")
        #expect(db.metrics().retries == 1, "only the retry before the opening is counted")
    }

    @Test func theRetryBudgetCapsRetriesDuringAnOutage() async throws {
        let clock = ManualClock()
        let db = makeDatabase(
            clock: clock,
            breaker: .init(failureThreshold: 10_000),
            retry: .init(attempts: 5, initialDelay: .zero, maxDelay: .zero),
            timeouts: noTimeouts,
            budget: .init(ratio: 0.1, minRetriesPerSecond: 0, window: .seconds(60))
        )
        let script = Script([.failure(.init(errorClass: .connection))])
        for _ in 0..<100 {
            _ = try? await db.execute(OperationOptions("get-users")) { _ in try script.next() }
        }
        #expect(db.metrics().retries == 10, "10% of 100 requests")
        #expect(script.calls.count == 110)
    }

    @Test func theDeadlineCancelsTheWorkAndReportsATimeout() async throws {
        let clock = ManualClock()
        let db = makeDatabase(clock: clock, timeouts: .init(query: .milliseconds(250)))
        let cancelled = Flag()
        let task = Task {
            try await db.execute(OperationOptions("slow-report")) { attempt in
                try await attempt.cancellingAtDeadline {
                    try await withTaskCancellationHandler {
                        try await clock.sleep(for: .seconds(3600))
                    } onCancel: {
                        cancelled.set()
                    }
                    return 1
                }
            }
        }
        await clock.waitForSleepers(count: 2)
        clock.advance(by: .milliseconds(250))
        do {
            _ = try await task.value
            Issue.record("expected a timeout")
        } catch let error as DatabaseTimeoutError {
            #expect(error.operation == "slow-report")
            #expect(error.timeout == .milliseconds(250))
            #expect(error.elapsed == .milliseconds(250))
        }
        #expect(cancelled.isSet, "the work itself was cancelled, not just abandoned")
        #expect(db.metrics().timeouts == 1)
        #expect(db.circuitBreaker.metrics.totalFailures == 1, "timeouts count against the breaker")
    }

    @Test func oneDeadlineBoundsAttemptsAndBackoff() async throws {
        let clock = ManualClock()
        let db = makeDatabase(
            clock: clock,
            breaker: .init(),
            retry: .init(attempts: 10, initialDelay: .seconds(2), maxDelay: .seconds(2), backoffMultiplier: 1),
            timeouts: .init(query: .seconds(3))
        )
        let script = Script([.failure(.init(errorClass: .overload))])
        do {
            _ = try await driving(clock, step: .milliseconds(100)) {
                try await db.execute(OperationOptions("get-users")) { _ in try script.next() }
            }
            Issue.record("expected the deadline to stop retries")
        } catch let error as DatabaseRetryError {
            #expect(error.reason == .deadlineReached)
        } catch let error as DatabaseTimeoutError {
            #expect(error.elapsed <= .seconds(3))
        }
        #expect(script.calls.count < 10)
        #expect(clock.now - MonotonicTime(nanoseconds: 1_000_000_000) <= .seconds(3))
    }

    @Test func callerCancellationIsNotHeldAgainstTheDatabase() async throws {
        let clock = ManualClock()
        let db = makeDatabase(clock: clock, breaker: .init(failureThreshold: 1))
        let task = Task {
            try await db.execute(OperationOptions("wait")) { _ in
                try await clock.sleep(for: .seconds(1))
                return 1
            }
        }
        // Only the work sleeps: nothing interruptible registered the deadline with the scheduler.
        await clock.waitForSleepers(count: 1)
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(db.circuitBreaker.state == .closed)
        #expect(db.metrics().retries == 0)
    }

    @Test func disabledBreakerLetsEverythingThrough() async throws {
        let clock = ManualClock()
        let db = makeDatabase(
            clock: clock,
            breaker: .init(failureThreshold: 1),
            retry: .none,
            timeouts: noTimeouts,
            circuitBreakerEnabled: false
        )
        let script = Script([.failure(.init(errorClass: .connection))])
        for _ in 0..<3 {
            _ = try? await db.execute(OperationOptions("x")) { _ in try script.next() }
        }
        #expect(script.calls.count == 3)
        #expect(db.circuitBreaker.metrics.requests == 0)
    }

    /// The backend learns which attempt is the breaker's half-open trial, so its pool can connect at
    /// once instead of waiting out its own backoff (PoolStateMachine's `bypassingBackoff`).
    @Test func onlyTheHalfOpenTrialIsMarkedAsTheBreakersProbe() async throws {
        let clock = ManualClock()
        let db = makeDatabase(
            clock: clock,
            breaker: .init(failureThreshold: 1, successThreshold: 1, timeout: .seconds(1)),
            retry: .none,
            timeouts: noTimeouts
        )
        let seen = Mutex<[Bool]>([])
        let script = Script([.failure(.init(errorClass: .connection)), .success(1), .success(2)])
        for _ in 0..<2 {
            _ = try? await db.execute(OperationOptions("x")) { context in
                seen.withLock { $0.append(context.isBreakerProbe) }
                return try script.next()
            }
        }
        #expect(db.circuitBreaker.state == .open)
        clock.advance(by: .seconds(1))
        for _ in 0..<2 {
            _ = try await db.execute(OperationOptions("x")) { context in
                seen.withLock { $0.append(context.isBreakerProbe) }
                return try script.next()
            }
        }
        #expect(seen.withLock { $0 } == [false, true, false], "closed, the rejected call never ran, trial, closed")
    }

    @Test func breakerTransitionsAreDelivered() async throws {
        let clock = ManualClock()
        let db = makeDatabase(clock: clock, breaker: .init(failureThreshold: 1), retry: .none, timeouts: noTimeouts)
        let transitions = db.circuitBreaker.transitions.subscribe()
        let script = Script([.failure(.init(errorClass: .connection))])
        _ = try? await db.execute(OperationOptions("x")) { _ in try script.next() }
        db.circuitBreaker.reset()
        var iterator = transitions.makeAsyncIterator()
        let opened = await iterator.next()
        let closed = await iterator.next()
        #expect(opened?.to == .open)
        #expect(opened?.reason == .failureThreshold)
        #expect(closed?.to == .closed)
        #expect(closed?.reason == .reset)
    }
}
