import ReliableDBTesting
import Testing

@testable import ReliableDB

/// `withFallback`: a failing read answers with its last good result no older than the bound,
/// marked degraded and counted; the caller's own errors never degrade.
@Suite("Read fallback (graceful degradation)")
struct ReadFallbackTests {
    struct Broken: Error {}

    @Test func aFailingReadServesItsLastGoodResultUntilItIsTooOld() async throws {
        let clock = ManualClock()
        let db = try ReliableDatabase(backend: ScriptedBackend(), clock: clock)
        let fallback = ReadFallback(key: "orders-42", maxAge: .seconds(60))
        let fresh = try await db.withFallback(fallback) { ["A-1", "A-2"] }
        #expect(!fresh.isDegraded && fresh.value == ["A-1", "A-2"])

        db.circuitBreaker.forceState(.forcedOpen)
        clock.advance(by: .seconds(12))
        let degraded = try await db.withFallback(fallback) {
            try await db.execute(.read("orders")) { _ in ["never"] }
        }
        #expect(degraded.value == ["A-1", "A-2"])
        #expect(degraded.degradation?.age == .seconds(12))
        #expect(degraded.degradation?.headerValue == "cached; age=12")
        #expect(degraded.degradation?.cause.contains("Circuit breaker") == true)
        #expect(db.metrics().degradedAnswers == 1)

        clock.advance(by: .seconds(49))
        await #expect(throws: DatabaseCircuitBreakerError.self, "61 s old: past the bound") {
            _ = try await db.withFallback(fallback) { try await db.execute(.read("orders")) { _ in ["never"] } }
        }
        await #expect(throws: DatabaseCircuitBreakerError.self, "another key has nothing kept") {
            _ = try await db.withFallback(ReadFallback(key: "orders-7", maxAge: .seconds(60))) {
                try await db.execute(.read("orders")) { _ in ["never"] }
            }
        }
    }

    @Test func theCallersOwnErrorsNeverDegrade() async throws {
        let db = try ReliableDatabase(backend: ScriptedBackend(), clock: ManualClock())
        let fallback = ReadFallback(key: "k", maxAge: .seconds(60))
        _ = try await db.withFallback(fallback) { 1 }
        await #expect(throws: Broken.self) {
            _ = try await db.withFallback(fallback) { () async throws -> Int in throw Broken() }
        }
        #expect(db.metrics().degradedAnswers == 0)
        #expect(
            ReliableDatabase<ScriptedBackend>.degrades(
                DatabaseOverloadedError(operation: "x", limit: 1, inFlight: 1, waited: .zero),
                .caller
            )
        )
    }

    @Test func keptResultsAreBounded() {
        let kept = LastGoodResults()
        for index in 0..<(LastGoodResults.capacity + 10) {
            kept.store(index, for: "key-\(index)", at: MonotonicTime(nanoseconds: Int64(index)))
        }
        #expect(kept.value(for: "key-0", as: Int.self) == nil, "the oldest went first")
        #expect(
            kept.value(for: "key-\(LastGoodResults.capacity + 9)", as: Int.self)?.value == LastGoodResults.capacity + 9
        )
    }
}

/// With a standby: a failing read is tried once more on it (under the standby's own breaker),
/// and a read a standby answered while the primary was down is marked degraded.
@Suite("Read fallback to a standby")
struct StandbyFallbackTests {
    /// A read as a multi-host backend runs it: on the standby when the scope asks for one (or
    /// usually, with `standby_reads`), where it reports who answered; on the primary otherwise.
    static func read(
        _ db: ReliableDatabase<ScriptedBackend>,
        primaryUp: Bool,
        standbyUp: Bool = true,
        lag: Duration? = .seconds(2)
    ) async throws -> String {
        try await db.execute(.read("orders")) { _ in
            let scope = ReadScope.current
            let onStandby =
                switch scope?.route {
                case .standby?: true
                case .primary?: false
                case .usual?, nil: db.raw.standbyReads == .always
                }
            if onStandby {
                scope?.servedByStandby(.init(server: "db2:5432", lag: lag, primaryReachable: primaryUp))
                guard standbyUp else { throw ClassifiedError(errorClass: .connection) }
                return "from the standby"
            }
            guard primaryUp else { throw ClassifiedError(errorClass: .connection) }
            return "from the primary"
        }
    }

    @Test func aReadThePrimaryFailsIsAnsweredByTheStandbyMarkedDegraded() async throws {
        let backend = ScriptedBackend()
        backend.standbyReads = .onFallback
        let db = try ReliableDatabase(backend: backend, clock: ManualClock())
        let fallback = ReadFallback(key: "orders", maxAge: .seconds(10))
        let fresh = try await db.withFallback(fallback) { try await Self.read(db, primaryUp: true) }
        #expect(fresh.value == "from the primary" && !fresh.isDegraded)

        db.circuitBreaker.forceState(.forcedOpen)
        let answer = try await db.withFallback(fallback) { try await Self.read(db, primaryUp: false) }
        #expect(answer.value == "from the standby")
        #expect(answer.degradation?.source == .standby(server: "db2:5432"))
        #expect(answer.degradation?.headerValue == #"standby; age=2; server="db2:5432""#)
        #expect(answer.degradation?.cause.contains("Circuit breaker") == true)
        #expect(db.metrics().degradedAnswers == 1)
        #expect(db.standbyCircuitBreaker?.state == .closed, "the standby's breaker let it through")
        #expect(db.metrics().standbyCircuitBreaker?.successes == 1)
    }

    @Test func aStandbyFurtherBehindThanTheBoundGivesWayToTheKeptResult() async throws {
        let backend = ScriptedBackend()
        backend.standbyReads = .onFallback
        let clock = ManualClock()
        let db = try ReliableDatabase(backend: backend, clock: clock)
        let fallback = ReadFallback(key: "orders", maxAge: .seconds(10))
        _ = try await db.withFallback(fallback) { try await Self.read(db, primaryUp: true) }
        clock.advance(by: .seconds(3))
        db.circuitBreaker.forceState(.forcedOpen)
        let behind = try await db.withFallback(fallback) {
            try await Self.read(db, primaryUp: false, lag: .seconds(30))
        }
        #expect(behind.value == "from the primary" && behind.degradation?.source == .cached)
        #expect(behind.degradation?.age == .seconds(3))
        let unknown = try await db.withFallback(fallback) { try await Self.read(db, primaryUp: false, lag: nil) }
        #expect(unknown.degradation?.source == .cached, "an unknown lag counts as too far behind")
    }

    @Test func standbyReadsGoOnWhileWritesOpenThePrimarysBreaker() async throws {
        let backend = ScriptedBackend()
        backend.standbyReads = .always
        let db = try ReliableDatabase(
            backend: backend,
            configuration: .init(circuitBreaker: .init(failureThreshold: 2), retry: .none),
            clock: ManualClock()
        )
        for _ in 0..<5 {
            _ = try? await db.execute(.init("write")) { _ in throw ClassifiedError(errorClass: .connection) }
        }
        #expect(db.circuitBreaker.state == .open)
        let fallback = ReadFallback(key: "orders", maxAge: .seconds(10))
        let answer = try await db.withFallback(fallback) { try await Self.read(db, primaryUp: false) }
        #expect(answer.value == "from the standby")
        #expect(answer.degradation?.cause == "the primary is unavailable", "the primary is down: it may miss writes")
        #expect(db.standbyCircuitBreaker?.state == .closed)

        db.circuitBreaker.forceState(.closed)
        let fresh = try await db.withFallback(fallback) { try await Self.read(db, primaryUp: true) }
        #expect(!fresh.isDegraded, "a standby read while the primary is up is an ordinary answer")
    }

    @Test func oneServerHasNoStandbyBreaker() throws {
        let db = try ReliableDatabase(backend: ScriptedBackend(), clock: ManualClock())
        #expect(db.standbyCircuitBreaker == nil && db.metrics().standbyCircuitBreaker == nil)
    }

    @Test func aReadAStandbyFailsIsTriedOnThePrimary() async throws {
        let backend = ScriptedBackend()
        backend.standbyReads = .always
        let db = try ReliableDatabase(
            backend: backend,
            configuration: .init(retry: .none),
            clock: ManualClock()
        )
        let answer = try await db.withFallback(ReadFallback(key: "orders", maxAge: .seconds(10))) {
            try await Self.read(db, primaryUp: true, standbyUp: false)
        }
        #expect(answer.value == "from the primary" && !answer.isDegraded, "the primary answered: a fresh answer")
        #expect(db.metrics().standbyCircuitBreaker?.failures == 1, "the standby's failure on its own breaker")
    }

    @Test func aStandbysAnswerIsKeptAsOldAsItsLag() async throws {
        let backend = ScriptedBackend()
        backend.standbyReads = .onFallback
        let clock = ManualClock()
        // No retries: their backoff would wait on the manual clock.
        let db = try ReliableDatabase(
            backend: backend,
            configuration: .init(retry: .none),
            clock: clock
        )
        let fallback = ReadFallback(key: "orders", maxAge: .seconds(60))
        db.circuitBreaker.forceState(.forcedOpen)
        let fromStandby = try await db.withFallback(fallback) { try await Self.read(db, primaryUp: false) }
        #expect(fromStandby.degradation?.age == .seconds(2))
        clock.advance(by: .seconds(3))
        let cached = try await db.withFallback(fallback) {
            try await Self.read(db, primaryUp: false, standbyUp: false)
        }
        #expect(cached.degradation?.source == .cached)
        #expect(cached.degradation?.age == .seconds(5), "2 s behind when read, 3 s ago")
    }
}
