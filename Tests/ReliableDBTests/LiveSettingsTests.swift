import Configuration
import Foundation
import Logging
import ReliableDBTesting
import Synchronization
import Testing

@testable import ReliableDB

/// Settings changed without a restart (`LiveSettings`, `ReliableDatabase.reconfigure(_:)`), on
/// the scripted backend and the manual clock.
@Suite("Live settings")
struct LiveSettingsTests {
    let refused = ClassifiedError(errorClass: .connection)

    func database(
        _ clock: ManualClock,
        _ environment: [String: String] = [:]
    ) throws -> (
        ReliableDatabase<ScriptedBackend>, ReliableDBConfiguration
    ) {
        let configuration = try ReliableDBConfiguration.parse(environment, problems: [])
        var reliability = configuration.reliability
        reliability.retryBudget = .unlimited
        let db = try ReliableDatabase(
            backend: ScriptedBackend(),
            configuration: reliability,
            clock: clock,
            jitterSeed: 3,
            environmentConfiguration: configuration
        )
        return (db, configuration)
    }

    /// A lowered breaker threshold opens the breaker at the new count; a raised one needs more.
    /// The state and the failures already in the window stay.
    @Test(arguments: [(5, 2), (2, 5), (5, 5), (3, 50)])
    func theBreakerThresholdInForceIsTheOneThatOpensIt(from: Int, to: Int) async throws {
        let clock = ManualClock()
        let (db, _) = try database(clock, ["DB_CB_FAILURE_THRESHOLD": "\(from)", "DB_RETRY_ATTEMPTS": "1"])
        let refused = self.refused
        func fail() async { _ = try? await db.execute(OperationOptions("w")) { _ -> Int in throw refused } }
        await fail()
        var reliability = db.configuration
        reliability.circuitBreaker.failureThreshold = to
        try db.reconfigure(reliability)
        #expect(db.circuitBreaker.configuration.failureThreshold == to)
        #expect(db.circuitBreaker.metrics.failureThreshold == to)
        var failures = 1
        while db.circuitBreaker.state == .closed && failures < to + 2 {
            await fail()
            failures += 1
        }
        #expect(db.circuitBreaker.state == .open)
        #expect(failures == to, "opened after \(failures) failures")
    }

    /// Timeouts and retries apply to the operations that start after the change.
    @Test func timeoutsAndRetriesApplyToTheNextOperation() async throws {
        let clock = ManualClock()
        let (db, _) = try database(clock)
        #expect(db.live.timeout(for: OperationOptions("q")) == .seconds(10))
        #expect(db.live.retryAttempts == 3)
        var reliability = db.configuration
        reliability.timeouts.query = .milliseconds(1500)
        reliability.timeouts.batchInsert = .seconds(2)
        reliability.timeouts.perRecord = .milliseconds(1)
        reliability.retry.attempts = 1
        reliability.slowQueryThreshold = .milliseconds(250)
        try db.reconfigure(reliability)
        #expect(db.live.timeout(for: OperationOptions("q")) == .milliseconds(1500))
        #expect(db.live.timeout(for: OperationOptions("b", kind: .batchInsert, recordCount: 1000)) == .seconds(3))
        #expect(db.live.timeout(for: OperationOptions("t", timeout: .seconds(7))) == .seconds(7))
        #expect(db.live.retryAttempts == 1)
        #expect(db.live.slowQueryThreshold == .milliseconds(250))
        #expect(db.configuration.timeouts.query == .milliseconds(1500))
        // One attempt only, now.
        let calls = Locked(0)
        let refused = self.refused
        _ = try? await db.execute(OperationOptions("w", idempotent: true)) { _ -> Int in
            calls.withLock { $0 += 1 }
            throw refused
        }
        #expect(calls.withLock { $0 } == 1)
    }

    /// A configuration the constructor would refuse is refused, and nothing changes.
    @Test func anInvalidReconfigurationChangesNothing() throws {
        let clock = ManualClock()
        let (db, _) = try database(clock)
        var reliability = db.configuration
        reliability.retry.attempts = 0
        reliability.timeouts.query = .seconds(1)
        #expect(throws: ConfigurationError.self) { try db.reconfigure(reliability) }
        #expect(db.live.retryAttempts == 3)
        #expect(db.live.timeout(for: OperationOptions("q")) == .seconds(10))
    }

    /// `LiveSettings.apply`: the live variables are put in force, others are named as taking
    /// effect at the next start, and a bad value is rejected whole, with the error a start gets.
    @Test func applyPutsLiveVariablesInForceAndRejectsABadSnapshotWhole() throws {
        let clock = ManualClock()
        let start = ["DB_CB_FAILURE_THRESHOLD": "5", "DB_HEALTH_CHECK_INTERVAL": "30000"]
        let (db, _) = try database(clock, start)
        let monitor = HealthMonitor(database: db)
        let logs = CapturedLogs()
        let live = LiveSettings(database: db, monitor: monitor, startedWith: start, logger: logs.logger())

        let changed = live.apply([
            "DB_CB_FAILURE_THRESHOLD": "2", "DB_HEALTH_CHECK_INTERVAL": "1000", "DB_TIMEOUT_QUERY": "2500",
            "DB_POOL_TIMEOUT": "3",
        ])
        #expect(changed.live == ["DB_CB_FAILURE_THRESHOLD", "DB_HEALTH_CHECK_INTERVAL", "DB_TIMEOUT_QUERY"])
        #expect(changed.atNextStart == ["DB_POOL_TIMEOUT"])
        #expect(db.circuitBreaker.configuration.failureThreshold == 2)
        #expect(monitor.configuration.interval == .seconds(1))
        #expect(db.live.timeout(for: OperationOptions("q")) == .milliseconds(2500))

        let bad = [
            "DB_CB_FAILURE_THRESHOLD": "zero", "DB_HEALTH_CHECK_INTERVAL": "500", "DB_TIMEOUT_QUERY": "2500",
            "DB_POOL_TIMEOUT": "3",
        ]
        let rejected = live.apply(bad)
        #expect(rejected.live.isEmpty && rejected.atNextStart.isEmpty)
        #expect(db.circuitBreaker.configuration.failureThreshold == 2, "the old value stays")
        #expect(monitor.configuration.interval == .seconds(1), "the whole snapshot is rejected")
        #expect(live.counts == (applied: 1, rejected: 1))
        // The same problem a start with these values reports.
        let atStart = #expect(throws: ConfigurationError.self) { try ReliableDBConfiguration.parse(bad, problems: []) }
        let logged = logs.records.filter { $0.level == .error }.map(\.message)
        #expect(logged.count == 1)
        #expect(logged.first?.contains("\(atStart!)") == true, "\(logged)")
        #expect(logged.first?.contains("DB_CB_FAILURE_THRESHOLD") == true)
        // The same values again change nothing and log nothing.
        #expect(live.apply(bad).live.isEmpty)
        let fixed = live.apply([
            "DB_CB_FAILURE_THRESHOLD": "3", "DB_HEALTH_CHECK_INTERVAL": "1000", "DB_TIMEOUT_QUERY": "2500",
            "DB_POOL_TIMEOUT": "3",
        ])
        #expect(fixed.live == ["DB_CB_FAILURE_THRESHOLD"])
        #expect(db.circuitBreaker.configuration.failureThreshold == 3)
        #expect(db.configuration.circuitBreaker.failureThreshold == 3)
        // A later change of another variable keeps the breaker's threshold (the first version reverted it).
        let other = live.apply([
            "DB_CB_FAILURE_THRESHOLD": "3", "DB_HEALTH_CHECK_INTERVAL": "2000", "DB_TIMEOUT_QUERY": "2500",
            "DB_POOL_TIMEOUT": "3",
        ])
        #expect(other.live == ["DB_HEALTH_CHECK_INTERVAL"])
        #expect(db.circuitBreaker.configuration.failureThreshold == 3)
        #expect(db.live.timeout(for: OperationOptions("q")) == .milliseconds(2500))
    }

    /// Monitor settings made in code stay unless the file changes their own variable.
    @Test func onlyTheMonitorSettingsThatChangedAreTakenFromTheFile() throws {
        let clock = ManualClock()
        let (db, _) = try database(clock)
        var configured = HealthMonitor.Configuration()
        configured.thresholds.healthScore = 50
        let monitor = HealthMonitor(database: db, configuration: configured)
        let live = LiveSettings(database: db, monitor: monitor, startedWith: [:], logger: CapturedLogs().logger())
        #expect(live.apply(["DB_HEALTH_CHECK_INTERVAL": "1000"]).live == ["DB_HEALTH_CHECK_INTERVAL"])
        #expect(monitor.configuration.interval == .seconds(1))
        #expect(monitor.configuration.thresholds.healthScore == 50, "not the file's default 70")
        _ = live.apply(["DB_HEALTH_CHECK_INTERVAL": "1000", "DB_ALERT_HEALTH_SCORE_THRESHOLD": "60"])
        #expect(monitor.configuration.thresholds.healthScore == 60)
    }

    /// The timeout variables: one per kind, named after it, over their whole range.
    @Test func eachKindHasATimeoutVariable() throws {
        #expect(ReliableDBConfiguration.timeoutVariable(for: .batchInsert) == "DB_TIMEOUT_BATCH_INSERT")
        #expect(ReliableDBConfiguration.timeoutVariable(for: .query) == "DB_TIMEOUT_QUERY")
        for kind in OperationKind.allCases {
            let name = ReliableDBConfiguration.timeoutVariable(for: kind)
            #expect(ReliableDBConfiguration.additionalVariableNames.contains(name))
            #expect(ReliableDBConfiguration.liveVariableNames.contains(name))
            for (value, valid) in [("1", true), ("86400000", true), ("0", false), ("86400001", false), ("-5", false)] {
                let parsed = try? ReliableDBConfiguration.parse([name: value], problems: [])
                #expect((parsed != nil) == valid, "\(name)=\(value)")
                if let parsed { #expect(parsed.timeouts[kind] == .milliseconds(Int64(value)!)) }
            }
        }
        let retry = try ReliableDBConfiguration.parse(
            ["DB_RETRY_ATTEMPTS": "1", "DB_RETRY_INITIAL_DELAY": "0", "DB_RETRY_MAX_DELAY": "0"],
            problems: []
        )
        #expect(retry.reliability.retry == RetryConfiguration(attempts: 1, initialDelay: .zero, maxDelay: .zero))
        #expect(throws: ConfigurationError.self) {
            try ReliableDBConfiguration.parse(
                ["DB_RETRY_INITIAL_DELAY": "500", "DB_RETRY_MAX_DELAY": "100"],
                problems: []
            )
        }
    }

    /// A `.env` file read as a swift-configuration snapshot: the provider's rules.
    @Test func aDotEnvSnapshotReadsLikeTheEnvironmentFileProvider() {
        let snapshot = DotEnvSnapshot(
            contents: "# comment\nDB_CONNECTION_LIMIT = 12\n\nnot a line\nDB_CB_TIMEOUT=1000\nDB_CB_TIMEOUT=2000\n"
        )
        let key = ReliableDBConfiguration.configKey(for: "DB_CONNECTION_LIMIT")
        let limit = try? snapshot.value(forKey: AbsoluteConfigKey(key), type: .string)
        #expect(limit?.value?.content == .string("12"))
        let timeout = try? snapshot.value(
            forKey: AbsoluteConfigKey(ReliableDBConfiguration.configKey(for: "DB_CB_TIMEOUT")),
            type: .string
        )
        #expect(timeout?.value?.content == .string("2000"), "the last line of a name wins")
    }
}

/// A lock box for the closures of these tests.
private final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<R>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
}
