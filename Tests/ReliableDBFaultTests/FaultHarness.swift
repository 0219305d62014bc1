import Foundation
import Logging
import PostgresNIO
import ReliableDB
import ReliableDBPostgres
import ReliableDBTestSupport
import Synchronization
import Testing

/// The throwaway servers `scripts/test` starts. A missing one fails the test: fault tests are
/// never skipped.
enum FaultServers {
    struct Missing: Error, CustomStringConvertible {
        var name: String
        var description: String { "\(name) is not set: run the tests with scripts/test, which starts the servers" }
    }

    static func environment(_ name: String) throws -> String {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else { throw Missing(name: name) }
        return value
    }

    /// A URL of `variable`'s server with a unique `application_name`, so a test finds its own
    /// backends in `pg_stat_activity`.
    static func url(_ variable: String = "RELIABLEDB_TEST_POSTGRES_URL", port: Int? = nil) throws -> PostgresURL {
        var url = try PostgresURL.parse(try environment(variable)).get()
        url.applicationName = "rdb-fault-\(UUID().uuidString.prefix(8).lowercased())"
        url.sslMode = .disable
        if let port { url.port = port }
        return url
    }

    /// Runs the fault server's control script (`start`, `stop fast`), written by scripts/test.
    /// Only this suite stops that server, so no other suite sees the outage.
    static func controlOutageServer(_ arguments: String...) async throws {
        try await FaultServer.control(script: "RELIABLEDB_TEST_FAULT_POSTGRES_CTL", arguments)
    }
}

/// A plain PostgresNIO connection beside the code under test, for looking at the server.
struct Observer {
    let connection: PostgresConnection
    static let logger = Logger(label: "test.fault.observer")

    static func connect(_ url: PostgresURL) async throws -> Observer {
        let connection = try await PostgresConnection.connect(
            configuration: .init(
                host: url.host,
                port: url.port,
                username: url.username,
                password: url.password?.value,
                database: url.database,
                tls: .disable
            ),
            id: 1,
            logger: logger
        )
        return Observer(connection: connection)
    }

    func execute(_ sql: String) async throws {
        let connection = self.connection
        try await bounded(sql) {
            _ = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: Self.logger).collect()
        }
    }

    func int(_ sql: String) async throws -> Int {
        let connection = self.connection
        return try await bounded(sql) {
            var value = -1
            let rows = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: Self.logger)
            for try await count in rows.decode(Int.self) { value = count }
            return value
        }
    }

    /// The first column of every row, as text.
    func strings(_ sql: String) async throws -> [String] {
        let connection = self.connection
        return try await bounded(sql) {
            var values: [String] = []
            let rows = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: Self.logger)
            for try await value in rows.decode(String.self) { values.append(value) }
            return values
        }
    }

    /// How many times each id was written to `table`.
    func ledgerCounts(_ table: String) async throws -> [String: Int] {
        let connection = self.connection
        return try await bounded("ledger of \(table)") {
            var counts: [String: Int] = [:]
            let rows = try await connection.query(
                PostgresQuery(unsafeSQL: "SELECT id, count(*)::int FROM \(table) GROUP BY id"),
                logger: Self.logger
            )
            for try await (id, count) in rows.decode((String, Int).self) { counts[id] = count }
            return counts
        }
    }

    struct ObserverTimedOut: Error {
        var sql: String
    }

    /// Runs the observer's query in a task of its own and gives up after `limit`: a plain
    /// PostgresNIO 1.33.2 connection that the server closed can leave a query waiting forever
    /// (Sources/ReliableDB/Documentation.docc/Deadlines.md), and a test must fail, not hang.
    private func bounded<T: Sendable>(
        _ sql: String,
        _ limit: Duration = .seconds(15),
        _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let answer = Locked<CheckedContinuation<T, any Error>?>(continuation)
            let work = Task {
                let result: Result<T, any Error>
                do { result = .success(try await body()) } catch { result = .failure(error) }
                answer.withLock { slot in
                    defer { slot = nil }; return slot
                }?.resume(with: result)
            }
            Task {
                try? await Task.sleep(for: limit)
                answer.withLock { slot in
                    defer { slot = nil }; return slot
                }?.resume(throwing: ObserverTimedOut(sql: sql))
                work.cancel()
            }
        }
    }

    func close() async throws {
        try await connection.close()
    }
}

/// What a fault run saw, for the assertions and the `fault report:` line.
struct FaultReport: CustomStringConvertible {
    var fault: String
    var calls = 0
    var succeeded = 0
    var timedOut = 0
    var commitOutcomeUnknown = 0
    var otherFailures = 0
    var errorsByType: [String: Int] = [:]
    /// The longest any call took, and the most any call ran past its own deadline.
    var longestCall = Duration.zero
    var worstOverrun = Duration.seconds(-1_000)
    var worstOverrunOperation = ""
    /// From the end of the fault to the first call that succeeded after it.
    var recovery: Duration?
    /// From the end of the fault to the first write that succeeded after it (reads may recover
    /// sooner, on a standby).
    var writeRecovery: Duration?
    /// From the end of the fault to the end of the last call that failed after it started: from
    /// then on every call succeeded (``steadyRecovery``).
    var lastFailureAfterFault: Duration?
    /// Calls the circuit breaker rejected, and those of them made more than 1.5 s after the fault's
    /// end, when the server had been answering for longer than the prober's interval.
    var breakerRejections = 0
    var rejectedWhileServerAnswered = 0
    /// From the end of the fault until calls succeed steadily: the later of the first success and
    /// the last failure.
    var steadyRecovery: Duration? {
        guard let recovery else { return nil }
        return max(recovery, lastFailureAfterFault ?? .zero)
    }
    /// The longest time between two acknowledged writes.
    var longestWriteGap = Duration.zero
    var lastWriteAcknowledged: ContinuousClock.Instant?
    var acknowledgedWrites = 0
    var lostWrites: [String] = []
    var duplicatedWrites: [String] = []
    /// Writes whose caller was told "timed out" that are in the table anyway.
    var committedAfterTimeout: [String] = []
    var backendsAfter = -1
    var cancelBackendsAfter = -1
    var activeOperationsAfter = -1
    var activeConnectionsAfter = -1
    /// Reads, those that failed, and those answered degraded (``FaultWorkload/Settings/readsWithFallback``).
    var reads = 0
    var readFailures = 0
    var longestRead = Duration.zero
    var degradedByStandby = 0
    var degradedFromCache = 0

    var description: String {
        func ms(_ duration: Duration) -> String { String(format: "%.0f ms", duration.milliseconds) }
        return """
            fault=\(fault) calls=\(calls) ok=\(succeeded) timeouts=\(timedOut) \
            (commitUnknown=\(commitOutcomeUnknown)) other=\(otherFailures) \
            longest=\(ms(longestCall)) worstOverrun=\(ms(worstOverrun)) (\(worstOverrunOperation)) \
            recovery=\(recovery.map(ms) ?? "none") steadyRecovery=\(steadyRecovery.map(ms) ?? "none") \
            writeRecovery=\(writeRecovery.map(ms) ?? "none") breakerRejections=\(breakerRejections) \
            (while the server answered: \(rejectedWhileServerAnswered)) \
            longestWriteGap=\(ms(longestWriteGap)) acked=\(acknowledgedWrites) lost=\(lostWrites.count) \
            duplicated=\(duplicatedWrites.count) committedAfterTimeout=\(committedAfterTimeout.count) \
            backendsAfter=\(backendsAfter) cancelBackendsAfter=\(cancelBackendsAfter) \
            activeOps=\(activeOperationsAfter) activeConnections=\(activeConnectionsAfter) errors=\(errorsByType) \
            reads=\(reads) readFailures=\(readFailures) longestRead=\(ms(longestRead)) degraded=\(degradedByStandby) by a standby, \
            \(degradedFromCache) from the cache
            """
    }
}

/// The circuit-breaker settings a fault runs with. Users run the defaults, so every fault runs
/// with them too, besides the short ones that make a breaker's own timeout visible.
enum BreakerProfile: String, CaseIterable, Sendable, CustomTestStringConvertible {
    /// Open for 1 s after 5 failures, retries 20-200 ms apart.
    case short
    /// What `ReliableDBConfiguration()` gives: `DB_CB_TIMEOUT=60000`, `DB_CB_FAILURE_THRESHOLD=5`,
    /// 3 attempts 100 ms-5 s apart.
    case defaults

    var testDescription: String { rawValue }

    /// With the defaults, calls succeed again within this of the server answering (Sources/ReliableDB/Documentation.docc/Breaker.md).
    static let recoveryGoal = Duration.seconds(2)
}

/// Concurrent reads and writes through a ReliableDatabase while a fault is injected, with a
/// ledger of every write's outcome compared against the table afterwards.
final class FaultWorkload: Sendable {
    struct Settings: Sendable {
        var breaker = BreakerProfile.short
        var workers = 8
        var connectionLimit = 4
        var poolTimeout = Duration.seconds(1)
        var queryTimeout = Duration.milliseconds(800)
        var transactionTimeout = Duration.milliseconds(1_200)
        var breakerTimeout = Duration.seconds(1)
        /// The health monitor's interval, the other half of the recovery bound.
        var healthInterval = Duration.seconds(1)
        /// Pause inside each write transaction, between INSERT and COMMIT, so the backend sits
        /// `idle in transaction` where a terminate finds it.
        var pauseInTransaction = Duration.milliseconds(15)
        /// With several servers: the longest a failing one is skipped.
        var maxServerEjection = Duration.seconds(30)
        /// Reads through `withFallback` (a standby, then a kept result up to 5 s old); each may
        /// take two query timeouts.
        var readsWithFallback = false
        /// A Patroni cluster's REST APIs to follow (PatroniTests).
        var patroni: PatroniConfiguration?
    }

    private struct State {
        var report: FaultReport
        var acknowledged: Set<String> = []
        var timedOutWrites: Set<String> = []
        var faultEndedAt: ContinuousClock.Instant?
    }

    let settings: Settings
    let db: ReliableDatabase<PostgresBackend>
    let table: String
    private let state: Mutex<State>
    private let stopped = Atomic<Bool>(false)
    private let logger = Logger(label: "test.fault")

    init(fault: String, url: PostgresURL, settings: Settings = .init()) throws {
        self.settings = settings
        table = "fault_ledger_\(UUID().uuidString.prefix(8).lowercased())"
        let backend = try PostgresBackend(
            url: url,
            connectionLimit: settings.connectionLimit,
            poolTimeout: settings.poolTimeout,
            keepAliveInterval: .seconds(1),
            maxServerEjection: settings.maxServerEjection,
            patroni: settings.patroni
        )
        db = try ReliableDatabase(
            backend: backend,
            configuration: .init(
                circuitBreaker: settings.breaker == .defaults
                    ? ReliableDBConfiguration().reliability.circuitBreaker
                    : .init(failureThreshold: 5, timeout: settings.breakerTimeout),
                retry: settings.breaker == .defaults
                    ? ReliableDBConfiguration().reliability.retry
                    : .init(attempts: 3, initialDelay: .milliseconds(20), maxDelay: .milliseconds(200)),
                timeouts: .init(
                    query: settings.queryTimeout,
                    transaction: settings.transactionTimeout,
                    healthCheck: settings.queryTimeout
                )
            )
        )
        state = Mutex(State(report: FaultReport(fault: "\(fault) [\(settings.breaker.rawValue) breaker]")))
    }

    /// Creates the ledger table: no key, so a write applied twice shows as two rows.
    func setUp(_ observer: Observer) async throws {
        try await observer.execute("CREATE TABLE \(table) (id text NOT NULL, at timestamptz NOT NULL DEFAULT now())")
    }

    /// Runs the workers until `body` (the fault) returns and calls succeed again (or `settle`
    /// passes), then stops them and returns once every call has returned.
    func run(settle: Duration = .seconds(8), during body: () async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<settings.workers {
                group.addTask { await self.work(worker) }
            }
            do {
                try await body()
            } catch {
                stopped.store(true, ordering: .releasing)
                try await group.waitForAll()
                throw error
            }
            let ended = ContinuousClock.now
            state.withLock { $0.faultEndedAt = ended }
            while ContinuousClock.now - ended < settle,
                state.withLock({ $0.report.recovery == nil || $0.report.writeRecovery == nil })
            {
                try await Task.sleep(for: .milliseconds(20))
            }
            // A little more load after recovery, so what the fault left behind is exercised.
            try await Task.sleep(for: .milliseconds(300))
            stopped.store(true, ordering: .releasing)
            try await group.waitForAll()
        }
    }

    private func work(_ worker: Int) async {
        var sequence = 0
        while !stopped.load(ordering: .acquiring) {
            sequence += 1
            if sequence % 2 == 0, settings.readsWithFallback {
                await call("read", timeout: settings.queryTimeout * 2, write: nil) {
                    let answer = try await self.db.withFallback(ReadFallback(key: "fault-read", maxAge: .seconds(5))) {
                        try await self.read()
                    }
                    self.state.withLock { state in
                        switch answer.degradation?.source {
                        case nil: break
                        case .cached: state.report.degradedFromCache += 1
                        case .standby: state.report.degradedByStandby += 1
                        }
                    }
                }
            } else if sequence % 2 == 0 {
                await call("read", timeout: settings.queryTimeout, write: nil) { try await self.read() }
            } else {
                let id = "w\(worker)-\(sequence)"
                let pause = settings.pauseInTransaction
                await call("write", timeout: settings.transactionTimeout, write: id) {
                    try await self.db.transaction(.init("fault-write", table: self.table)) { connection in
                        _ = try await connection.query(
                            "INSERT INTO \(unescaped: self.table) (id) VALUES (\(id))",
                            logger: self.logger
                        ).collect()
                        try await Task.sleep(for: pause)
                    }
                }
            }
            // Keep a failing database from turning this into a busy loop.
            try? await Task.sleep(for: .milliseconds(2))
        }
    }

    private func read() async throws {
        try await db.query(.read("fault-read", table: table)) { connection in
            _ = try await connection.query(
                PostgresQuery(unsafeSQL: "SELECT count(*) FROM \(self.table)"),
                logger: self.logger
            ).collect()
        }
    }

    private func call(
        _ operation: String,
        timeout: Duration,
        write id: String?,
        _ body: () async throws -> Void
    ) async {
        let start = ContinuousClock.now
        var outcome: (any Error)?
        do {
            try await body()
        } catch {
            outcome = error
        }
        let end = ContinuousClock.now
        let elapsed = end - start
        state.withLock { state in
            state.report.calls += 1
            if operation == "read" {
                state.report.reads += 1
                if outcome != nil { state.report.readFailures += 1 }
                state.report.longestRead = max(state.report.longestRead, elapsed)
            }
            state.report.longestCall = max(state.report.longestCall, elapsed)
            if elapsed - timeout > state.report.worstOverrun {
                state.report.worstOverrun = elapsed - timeout
                state.report.worstOverrunOperation = "\(operation) \(outcome.map { "\(type(of: $0))" } ?? "ok")"
            }
            if outcome != nil, let ended = state.faultEndedAt, start >= ended {
                state.report.lastFailureAfterFault = max(state.report.lastFailureAfterFault ?? .zero, end - ended)
            }
            if let rejectedIn = outcome.flatMap(Self.rejectingState) {
                state.report.breakerRejections += 1
                // The server answers from the fault's end: the prober needs at most about 1.2 s
                // (its jittered interval) to see it. HALF_OPEN admits trials one at a time: a
                // rejection there is the breaker closing, not an open breaker.
                if rejectedIn == .open, let ended = state.faultEndedAt, start - ended > .milliseconds(1_500) {
                    state.report.rejectedWhileServerAnswered += 1
                }
            }
            switch outcome {
            case nil:
                state.report.succeeded += 1
                if let ended = state.faultEndedAt, start >= ended, state.report.recovery == nil {
                    state.report.recovery = end - ended
                }
                if let id {
                    state.acknowledged.insert(id)
                    if let last = state.report.lastWriteAcknowledged {
                        state.report.longestWriteGap = max(state.report.longestWriteGap, end - last)
                    }
                    state.report.lastWriteAcknowledged = end
                    if let ended = state.faultEndedAt, start >= ended, state.report.writeRecovery == nil {
                        state.report.writeRecovery = end - ended
                    }
                }
            case let error as DatabaseTimeoutError:
                state.report.timedOut += 1
                // Told "failed": it must never commit. A COMMIT cut off in flight is reported as
                // unknown instead, and is only checked for being applied at most once.
                if let id, !error.commitOutcomeUnknown { state.timedOutWrites.insert(id) }
                if error.commitOutcomeUnknown { state.report.commitOutcomeUnknown += 1 }
            case let error?:
                state.report.otherFailures += 1
                if error is CommitOutcomeUnknownError { state.report.commitOutcomeUnknown += 1 }
                state.report.errorsByType["\(type(of: error))", default: 0] += 1
            }
        }
    }

    /// The breaker's state when it rejected the call (directly, or as the reason retries
    /// stopped); nil when the breaker did not reject it.
    static func rejectingState(_ error: any Error) -> CircuitState? {
        if let rejected = error as? DatabaseCircuitBreakerError { return rejected.state }
        if let retry = error as? DatabaseRetryError { return (retry.lastError as? DatabaseCircuitBreakerError)?.state }
        return nil
    }

    /// Compares the ledger with the table and reads what was left behind. Waits `straggle` first,
    /// so a transaction that would commit late has the time to do it.
    func finish(
        _ observer: Observer,
        applicationName: String,
        straggle: Duration = .seconds(1)
    ) async throws -> FaultReport {
        try await Task.sleep(for: straggle)
        let counts = try await observer.ledgerCounts(table)
        var report = state.withLock { state in
            var report = state.report
            report.acknowledgedWrites = state.acknowledged.count
            report.lostWrites = state.acknowledged.filter { counts[$0] == nil }.sorted()
            report.committedAfterTimeout = state.timedOutWrites.filter { counts[$0] != nil }.sorted()
            return report
        }
        report.duplicatedWrites = counts.filter { $0.value > 1 }.map(\.key).sorted()
        let metrics = db.metrics()
        report.activeOperationsAfter = metrics.activeOperations
        report.activeConnectionsAfter = metrics.pool.active
        report.backendsAfter = try await observer.int(
            "SELECT count(*)::int FROM pg_stat_activity WHERE application_name = '\(applicationName)'"
        )
        report.cancelBackendsAfter = try await observer.int(
            "SELECT count(*)::int FROM pg_stat_activity WHERE application_name LIKE '\(applicationName)-%'"
        )
        try await db.shutdown()
        // The fault proxy may still be closing the server side of a connection ReliableDB has
        // closed; end such backends so that DROP TABLE does not wait on their locks.
        try await observer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '\(applicationName)'"
        )
        try await observer.execute("DROP TABLE IF EXISTS \(table)")
        print("fault report: \(report)")
        return report
    }

    /// The guarantees every fault must keep.
    func expectGuarantees(_ report: FaultReport, recoveryExpected: Bool = true) {
        #expect(report.worstOverrun <= .milliseconds(100), "a call outlived its deadline: \(report)")
        #expect(report.activeOperationsAfter == 0, "operations left active: \(report)")
        #expect(report.activeConnectionsAfter == 0, "connections left leased: \(report)")
        #expect(report.lostWrites.isEmpty, "acknowledged writes lost: \(report.lostWrites)")
        #expect(report.duplicatedWrites.isEmpty, "writes applied twice: \(report.duplicatedWrites)")
        #expect(
            report.committedAfterTimeout.isEmpty,
            "writes reported as timed out committed anyway: \(report.committedAfterTimeout)"
        )
        #expect(report.backendsAfter <= settings.connectionLimit, "\(report)")
        #expect(report.cancelBackendsAfter == 0, "cancel connections left open: \(report)")
        if recoveryExpected {
            let bound =
                settings.breaker == .defaults
                ? BreakerProfile.recoveryGoal : settings.breakerTimeout + settings.healthInterval
            #expect(report.recovery.map { $0 <= bound } == true, "no recovery within \(bound): \(report)")
            if settings.breaker == .defaults {
                #expect(
                    report.steadyRecovery.map { $0 <= bound } == true,
                    "failures went on past \(bound) after the fault: \(report)"
                )
                #expect(
                    report.rejectedWhileServerAnswered == 0,
                    "the open breaker rejected calls while the server answered: \(report)"
                )
            }
        }
    }
}
