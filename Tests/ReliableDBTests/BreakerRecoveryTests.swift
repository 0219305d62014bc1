import ReliableDBTesting
import Synchronization
import Testing

@testable import ReliableDB

/// A breaker that never lengthens an outage (Sources/ReliableDB/Documentation.docc/Breaker.md), with the settings a user gets:
/// `DB_CB_TIMEOUT=60000`, `DB_CB_FAILURE_THRESHOLD=5`, three attempts.
@Suite("Circuit breaker recovery")
struct BreakerRecoveryTests {
    typealias Machine = CircuitBreakerStateMachine
    let t0 = MonotonicTime(nanoseconds: 1_000_000_000)
    let defaults = ReliableDBConfiguration().reliability
    let lostConnection = ClassifiedError(errorClass: .connection, connectionScoped: true)
    let refused = ClassifiedError(errorClass: .connection)

    func database(
        _ clock: ManualClock,
        backend: ScriptedBackend = ScriptedBackend()
    ) -> ReliableDatabase<
        ScriptedBackend
    > {
        var configuration = defaults
        configuration.timeouts.enabled = false
        configuration.retryBudget = .unlimited
        // The tests' configurations are valid; an invalid one is a bug in the test.
        return try! ReliableDatabase(backend: backend, configuration: configuration, clock: clock, jitterSeed: 7)
    }

    /// Moves `clock` 10 ms when something sleeps on it, else gives the prober (between two sleeps,
    /// or done) a moment. That pause is a real one but times nothing (the test reads the manual
    /// clock only): `Task.yield()` alone would spin a cooperative thread the parallel suites need.
    func nudge(_ clock: ManualClock) async {
        if clock.sleeperCount > 0 {
            clock.advance(by: .milliseconds(10))
        } else {
            try? await Task.sleep(for: .microseconds(200))
        }
    }

    /// Opens `db`'s breaker the way a stopped server does: connects refused, five times.
    func openBreaker(_ db: ReliableDatabase<ScriptedBackend>, _ clock: ManualClock) async throws {
        let refused = self.refused
        for _ in 0..<5 where db.circuitBreaker.state == .closed {
            _ = try? await driving(clock, step: .milliseconds(10)) {
                try await db.execute(OperationOptions("write")) { _ -> Int in throw refused }
            }
        }
        #expect(db.circuitBreaker.state == .open)
    }

    // MARK: - Failure rate on every call

    @Test func aFailureRateIsEvaluatedOnSuccessesToo() {
        var machine = Machine(configuration: .init(failureRateThreshold: 50, minimumNumberOfCalls: 5))
        let outcomes: [CircuitCallOutcome] = [.failure, .failure, .failure, .success, .success]
        var opened: Int?
        for (index, outcome) in outcomes.enumerated() {
            guard case .permitted(let permit) = machine.acquire(at: t0).0 else { break }
            if machine.record(permit, outcome: outcome, duration: .milliseconds(1), at: t0)?.to == .open {
                opened = index + 1
            }
        }
        #expect(opened == 5, "3 failures in 5 calls is 60%: the fifth call opens it")
    }

    // MARK: - Evidence closes the breaker

    @Test func aServerThatAnswersTurnsAnOpenBreakerHalfOpenAtOnce() {
        var machine = Machine(configuration: .init(failureThreshold: 1, timeout: .seconds(60)))
        guard case .permitted(let permit) = machine.acquire(at: t0).0 else { return }
        _ = machine.record(permit, outcome: .failure, duration: .zero, at: t0)
        #expect(machine.state == .open)
        let transition = machine.serverAnswered(at: t0 + .milliseconds(100))
        #expect(transition?.to == .halfOpen)
        #expect(transition?.reason == .serverAnswered)
        #expect(machine.serverAnswered(at: t0 + .milliseconds(200)) == nil, "only an open breaker moves")
    }

    @Test func anOperatorsForcedOpenIsKeptWhenTheServerAnswers() {
        var machine = Machine()
        _ = machine.force(.forcedOpen, at: t0)
        #expect(machine.serverAnswered("a:5432", at: t0) == nil)
        #expect(machine.serve("b:5432", at: t0) == nil)
        #expect(machine.state == .forcedOpen)
    }

    @Test func aNewServerStartsClosedAndOldOutcomesAreIgnored() {
        var machine = Machine(configuration: .init(failureThreshold: 2))
        _ = machine.serve("old:5432", at: t0)
        guard case .permitted(let inFlight) = machine.acquire(at: t0).0 else { return }
        for _ in 0..<2 {
            guard case .permitted(let permit) = machine.acquire(at: t0).0 else { return }
            _ = machine.record(permit, outcome: .failure, duration: .zero, at: t0)
        }
        #expect(machine.state == .open)
        let transition = machine.serve("new:5432", at: t0 + .seconds(1))
        #expect(transition?.to == .closed)
        #expect(transition?.reason == .serverChanged)
        #expect(machine.server == "new:5432")
        #expect(machine.record(inFlight, outcome: .failure, duration: .zero, at: t0 + .seconds(1)) == nil)
        #expect(machine.windowFailures(at: t0 + .seconds(1)) == 0, "a call to the old server says nothing of the new")
    }

    /// Random events against the invariants of evidence and servers.
    @Test(arguments: 0..<20)
    func randomEventsKeepTheInvariants(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        var machine = Machine(
            configuration: .init(failureThreshold: 3, successThreshold: 2, timeout: .seconds(60))
        )
        var now = t0
        var permits: [Machine.Permit] = []
        let servers = ["a:5432", "b:5432", "c:5432"]
        for _ in 0..<2_000 {
            now = now + .milliseconds(Int64.random(in: 0...3_000, using: &random))
            let before = machine.state
            switch Int.random(in: 0..<10, using: &random) {
            case 0...3:
                if case .permitted(let permit) = machine.acquire(at: now).0 { permits.append(permit) }
            case 4...6 where !permits.isEmpty:
                let permit = permits.remove(at: Int.random(in: 0..<permits.count, using: &random))
                let outcome: CircuitCallOutcome = [.success, .failure, .ignored].randomElement(using: &random)!
                _ = machine.record(permit, outcome: outcome, duration: .milliseconds(5), at: now)
            case 7:
                let server = servers.randomElement(using: &random)!
                let known = machine.server
                _ = machine.serverAnswered(server, at: now)
                if before == .open, known == nil || known == server {
                    #expect(machine.state == .halfOpen, "an answer while open turns it half-open")
                } else if known != nil, known != server, ![.forcedOpen, .disabled].contains(before) {
                    #expect(machine.state == .closed, "a new server starts closed")
                }
                #expect(machine.server == server)
            case 8:
                _ = machine.force([.forcedOpen, .disabled, .closed].randomElement(using: &random)!, at: now)
            default:
                _ = machine.reset(at: now)
            }
            #expect(machine.probesInFlight <= machine.configuration.maxConcurrentProbes)
            if machine.state == .open {
                #expect(machine.openUntil.map { $0 <= now + .seconds(60) } == true, "open at most the timeout")
            }
        }
    }

    // MARK: - A lost connection is the connection's

    @Test func terminatedSessionsOnAHealthyServerOpenNoBreaker() async throws {
        let clock = ManualClock()
        let db = database(clock)
        let lost = lostConnection
        // Twenty operations each lose their connection once, and succeed on a fresh one.
        for _ in 0..<20 {
            let first = Mutex(true)
            let value = try await db.execute(OperationOptions("create-order", kind: .transaction)) { _ -> Int in
                let isFirst = first.withLock { value -> Bool in
                    let was = value
                    value = false
                    return was
                }
                if isFirst { throw lost }
                return 1
            }
            #expect(value == 1)
        }
        #expect(db.circuitBreaker.state == .closed)
        #expect(db.metrics().circuitBreaker.totalFailures == 0)
        #expect(db.metrics().circuitBreaker.ignored == 20)
        #expect(db.metrics().successfulQueries == 20)
        #expect(db.metrics().retries == 20)
    }

    @Test func aLostConnectionIsRetriedAtOnceWithoutBackoff() async throws {
        let clock = ManualClock()
        let db = database(clock)
        let lost = lostConnection
        let calls = Counter()
        // No clock advance at all: a backoff sleep would hang here.
        let value = try await db.execute(OperationOptions("read")) { _ -> Int in
            if calls.increment() == 1 { throw lost }
            return 2
        }
        #expect(value == 2)
        #expect(clock.now == MonotonicTime(nanoseconds: 1_000_000_000))
    }

    @Test func aFreshConnectionFailingToo() async throws {
        let clock = ManualClock()
        let db = database(clock)
        let (lost, refused) = (lostConnection, self.refused)
        let calls = Counter()
        _ = try? await driving(clock, step: .milliseconds(10)) {
            try await db.execute(OperationOptions("read", kind: .query)) { _ -> Int in
                throw calls.increment() == 1 ? lost : refused
            }
        }
        #expect(db.metrics().circuitBreaker.totalFailures == 2, "the lost connection is ignored, connects count")
        let second = Counter()
        _ = try? await driving(clock, step: .milliseconds(10)) {
            try await db.execute(OperationOptions("read", kind: .query)) { _ -> Int in
                second.increment()
                throw lost
            }
        }
        #expect(second.count == 3, "every attempt lost its connection")
        #expect(
            db.metrics().circuitBreaker.totalFailures == 2,
            "sessions that opened and then ended are the connections' failures, however many"
        )
    }

    @Test func aTransactionLostBeforeCommitIsRetriedWhole() async throws {
        let clock = ManualClock()
        let db = database(clock)
        let lost = ClassifiedError(errorClass: .connection, mayHaveReachedServer: true, connectionScoped: true)
        let calls = Counter()
        let value = try await db.execute(OperationOptions("create-order", kind: .transaction)) { _ -> Int in
            if calls.increment() == 1 { throw TransactionNotCommittedError(underlying: lost) }
            return 3
        }
        #expect(value == 3)
        #expect(calls.count == 2, "rolled back with its session: run again as a whole")
        #expect(db.circuitBreaker.state == .closed)
    }

    // MARK: - Probes close an open breaker

    @Test func theBreakersOwnProbeEndsAnOpenBreakerWithinASecond() async throws {
        let clock = ManualClock()
        let backend = ScriptedBackend()
        let db = database(clock, backend: backend)
        backend.reachable = false
        try await openBreaker(db, clock)
        let openedAt = clock.now
        // The server stays down for 3 s: probes back off to about a second apart.
        while clock.now - openedAt < .seconds(3) { await nudge(clock) }
        let probesWhileDown = db.breakerProbes
        #expect(probesWhileDown >= 3 && probesWhileDown <= 8, "about one a second after the first few")
        #expect(db.circuitBreaker.state == .open)
        backend.reachable = true
        let backAt = clock.now
        while db.circuitBreaker.state == .open { await nudge(clock) }
        #expect(db.circuitBreaker.state == .halfOpen)
        #expect(clock.now - backAt <= .milliseconds(1_300), "the next probe finds it, not DB_CB_TIMEOUT")
        // Two trial calls close it.
        for _ in 0..<2 { _ = try await db.execute(OperationOptions("read")) { _ in 1 } }
        #expect(db.circuitBreaker.state == .closed)
    }

    @Test func theStandbysBreakerHasItsOwnProber() async throws {
        let clock = ManualClock()
        let backend = ScriptedBackend()
        backend.standbyReads = .always
        let db = database(clock, backend: backend)
        let standby = try #require(db.standbyCircuitBreaker)
        let refused = self.refused
        for _ in 0..<5 where standby.state == .closed {
            _ = try? await driving(clock, step: .milliseconds(10)) {
                try await db.execute(.read("read")) { _ -> Int in throw refused }
            }
        }
        #expect(standby.state == .open)
        #expect(db.circuitBreaker.state == .closed, "the primary's is another breaker")
        let openedAt = clock.now
        while standby.state == .open { await nudge(clock) }
        #expect(standby.state == .halfOpen)
        #expect(clock.now - openedAt <= .milliseconds(150), "the first probe goes out about 100 ms after opening")
    }

    @Test func anOperatorsOpenWaitsOutItsTimeout() async throws {
        let clock = ManualClock()
        let db = database(clock)
        db.circuitBreaker.forceState(.open)
        for _ in 0..<200 { await nudge(clock) }
        #expect(db.breakerProbes == 0, "no probe for an operator's open")
        #expect(db.circuitBreaker.state == .open)
        db.circuitBreaker.serverAnswered()
        #expect(db.circuitBreaker.state == .open, "nor does a monitor's answer end it")
    }

    /// A server that answers SELECT 1 but fails the work (here: every trial call times out): the
    /// breaker goes OPEN, HALF_OPEN, OPEN... at most about once a second, not every 100 ms.
    @Test func failedTrialsKeepTheProbesBackoff() async throws {
        let clock = ManualClock()
        let db = database(clock)
        let timeout = ClassifiedError(errorClass: .timeout)
        for _ in 0..<5 where db.circuitBreaker.state == .closed {
            _ = try? await db.execute(OperationOptions("write")) { _ -> Int in throw timeout }
        }
        let openedAt = clock.now
        while clock.now - openedAt < .seconds(10) {
            if db.circuitBreaker.state == .halfOpen {
                _ = try? await db.execute(OperationOptions("write")) { _ -> Int in throw timeout }
            }
            await nudge(clock)
        }
        #expect(db.breakerProbes <= 14, "about one probe a second after the first few: \(db.breakerProbes)")
        #expect(db.breakerProbes >= 8, "and it keeps probing: \(db.breakerProbes)")
    }

    @Test func aBreakerIsNotKeptOpenAfterTheMonitorsProbeSucceeded() async throws {
        let clock = ManualClock()
        let backend = ScriptedBackend()
        let db = database(clock, backend: backend)
        backend.reachable = false
        try await openBreaker(db, clock)
        backend.reachable = true
        let monitor = HealthMonitor(database: db)
        await monitor.checkNow()
        #expect(db.circuitBreaker.state == .halfOpen, "a successful probe is evidence: no 60 s wait")
        _ = try await db.execute(OperationOptions("read")) { _ in 1 }
        _ = try await db.execute(OperationOptions("read")) { _ in 1 }
        #expect(db.circuitBreaker.state == .closed)
    }

    @Test func theOldPrimarysBreakerDoesNotBlockTheNewOne() async throws {
        let clock = ManualClock()
        let backend = ScriptedBackend()
        backend.currentServer = "old:5432"
        let db = database(clock, backend: backend)
        try await openBreaker(db, clock)
        #expect(db.circuitBreaker.server == "old:5432")
        await #expect(throws: DatabaseCircuitBreakerError.self) {
            try await db.execute(OperationOptions("write")) { _ in 1 }
        }
        // The walk found the promoted standby: writes go there, judged afresh.
        backend.currentServer = "new:5432"
        let value = try await db.execute(OperationOptions("write")) { _ in 4 }
        #expect(value == 4)
        #expect(db.circuitBreaker.state == .closed)
        #expect(db.circuitBreaker.server == "new:5432")
        #expect(db.metrics().circuitBreaker.server == "new:5432")
    }

    // MARK: - The monitor takes the database's configuration

    @Test func theMonitorDefaultsToTheConfigurationTheDatabaseWasBuiltFrom() throws {
        var environment = ReliableDBConfiguration()
        environment.healthCheckInterval = .milliseconds(1_234)
        environment.alertThresholds.errorRate = 17
        let db = try ReliableDatabase(
            backend: ScriptedBackend(),
            configuration: environment.reliability,
            environmentConfiguration: environment
        )
        let monitor = HealthMonitor(database: db)
        #expect(monitor.configuration.interval == .milliseconds(1_234))
        #expect(monitor.configuration.thresholds.errorRate == 17)
        let plain = HealthMonitor(database: try ReliableDatabase(backend: ScriptedBackend()))
        #expect(plain.configuration.interval == .seconds(30))
    }
}
