import Foundation
import Logging
import ReliableDBTesting
import Synchronization
import Testing

@testable import ReliableDB

final class RecordingSink: AlertSink {
    private let received = Mutex<[AlertNotification]>([])
    let repeatInterval: Duration?

    init(repeatInterval: Duration? = nil) {
        self.repeatInterval = repeatInterval
    }

    func deliver(_ notification: AlertNotification) {
        received.withLock { $0.append(notification) }
    }

    var notifications: [AlertNotification] { received.withLock { $0 } }

    func of(_ kind: AlertKind) -> [AlertNotification] {
        notifications.filter { $0.kind == kind }
    }
}

@Suite("Health monitor and alerts")
struct HealthMonitorTests {
    struct Fixture {
        let clock = ManualClock()
        let backend = ScriptedBackend()
        let sink: RecordingSink
        let db: ReliableDatabase<ScriptedBackend>
        let monitor: HealthMonitor

        let logs = CapturedLogs()

        /// Alerts fire and resolve at the first check by default here (`.immediate`): these tests
        /// are about the monitor, not hysteresis (AlertHysteresisTests).
        init(
            timings: AlertTimings = .immediate,
            repeatInterval: Duration = .seconds(600),
            sinkRepeatInterval: Duration? = nil
        ) {
            sink = RecordingSink(repeatInterval: sinkRepeatInterval)
            db = try! ReliableDatabase(
                backend: backend,
                configuration: .init(
                    circuitBreaker: .init(failureThreshold: 3),
                    retry: .none,
                    timeouts: .init(enabled: false)
                ),
                clock: clock
            )
            monitor = HealthMonitor(
                database: db,
                configuration: .init(
                    interval: .seconds(30),
                    thresholds: .init(
                        healthScore: 70,
                        poolUtilization: 80,
                        queryTime: .milliseconds(100),
                        errorRate: 5
                    ),
                    alerts: .init(timings: timings, repeatInterval: repeatInterval, labels: ["service": "test"])
                ),
                sinks: [sink],
                logger: logs.logger(label: "test.monitor", level: .info)
            )
        }

        /// Runs operations taking `duration` each on the manual clock; `failing` of them fail.
        func traffic(count: Int, failing: Int = 0, duration: Duration = .milliseconds(1)) async {
            for index in 0..<count {
                _ = try? await db.execute(OperationOptions("op", retries: false)) { _ in
                    clock.advance(by: duration)
                    if index < failing { throw ClassifiedError(errorClass: .caller) }
                    return 1
                }
            }
        }
    }

    @Test func aHealthyDatabaseScoresFullMarks() async {
        let fixture = Fixture()
        await fixture.traffic(count: 10)
        let status = await fixture.monitor.checkNow()
        #expect(status.state == .healthy)
        #expect(status.score == 100)
        #expect(
            status.checks
                == HealthChecks(connectivity: true, queryPerformance: true, poolHealth: true, circuitBreakerState: true)
        )
        #expect(status.serverVersion == "scripted 1.0")
        #expect(fixture.sink.notifications.isEmpty)
    }

    @Test func readingTheStatusNeverProbes() async {
        let fixture = Fixture()
        await fixture.monitor.checkNow()
        let probes = fixture.backend.probes
        for _ in 0..<100 { _ = fixture.monitor.status }
        #expect(fixture.backend.probes == probes)
    }

    @Test func theStatusAgreesWithTheBreakerAtTheMomentItIsRead() async {
        let fixture = Fixture()
        #expect(await fixture.monitor.checkNow().state == .healthy)
        fixture.db.circuitBreaker.forceState(.open)
        let status = fixture.monitor.status
        #expect(status.metrics.circuitBreaker.state == .open)
        #expect(!status.checks.circuitBreakerState)
        #expect(status.state != .healthy, "an open breaker never sits beside healthy")
        #expect(status.score == 80)
        fixture.db.circuitBreaker.forceState(.closed)
        #expect(fixture.monitor.status.state == .healthy)
    }

    @Test func aConditionIsLoggedOnceWhenItBeginsAndOnceWhenItEnds() async {
        let fixture = Fixture()
        // Alert transitions are logged too (once each); these are the health lines.
        var health: [String] { fixture.logs.lines.filter { $0.contains(" database ") } }
        await fixture.monitor.checkNow()
        #expect(health.isEmpty, "nothing to say while healthy")
        fixture.backend.reachable = false
        for _ in 0..<5 {
            fixture.clock.advance(by: .seconds(30))
            await fixture.monitor.checkNow()
        }
        #expect(health.count == 1, "one line for the incident, not one per check: \(health)")
        #expect(health.first?.contains("probe failed: ") == true)
        let alertLines = fixture.logs.lines.count - health.count
        #expect(alertLines == 2, "health_score and database_unreachable fired, once each")
        fixture.backend.reachable = true
        for _ in 0..<3 {
            fixture.clock.advance(by: .seconds(30))
            await fixture.monitor.checkNow()
        }
        #expect(health == [health.first ?? "", "notice database healthy again"])
        #expect(fixture.logs.lines.count - health.count == 4, "and resolved, once each")
    }

    @Test func concurrentChecksShareOneProbe() async {
        let fixture = Fixture()
        fixture.backend.holdProbes(on: fixture.clock, for: .seconds(1))
        await withTaskGroup(of: HealthStatus.self) { group in
            group.addTask { await fixture.monitor.checkNow() }
            await fixture.clock.waitForSleepers(count: 1)
            for _ in 0..<49 { group.addTask { await fixture.monitor.checkNow() } }
            #expect(await eventually { fixture.monitor.checkJoiners == 49 })
            fixture.clock.advance(by: .seconds(1))
            var answered = 0
            for await status in group {
                #expect(status.score == 100)
                answered += 1
            }
            #expect(answered == 50)
        }
        #expect(fixture.backend.probes == 1, "checks in flight were joined, not repeated")
    }

    @Test func anUnreachableDatabaseIsUnhealthyAndFiresTheHealthScoreAlert() async {
        let fixture = Fixture()
        fixture.backend.reachable = false
        let status = await fixture.monitor.checkNow()
        #expect(status.state == .unhealthy)
        #expect(status.score == 60)
        #expect(!status.checks.connectivity)
        #expect(status.lastError != nil)
        let alerts = fixture.sink.of(.healthScore)
        #expect(alerts.count == 1)
        #expect(alerts.first?.status == .firing)
        #expect(alerts.first?.severity == .critical)
        #expect(Set(status.activeAlerts.map(\.kind)) == [.healthScore, .databaseUnreachable])
        let unreachable = fixture.sink.of(.databaseUnreachable)
        #expect(unreachable.count == 1, "an unreachable database says so, not only through the score")
        #expect(unreachable.first?.severity == .critical)
        #expect(unreachable.first?.cause == status.lastError, "with the probe's cause")
        #expect(unreachable.first?.summary.hasPrefix("Database unreachable: ") == true)
    }

    @Test func aFailoverFiresWhileConnectionsGoToAServerOtherThanTheFirst() {
        let onFirst = [
            ServerHealth(host: "db1:5432", role: "primary", state: "current", lastOutcome: nil),
            ServerHealth(host: "db2:5432", role: "standby", state: "available", lastOutcome: nil),
        ]
        #expect(!HealthMonitor.failoverObservation(onFirst).active)
        #expect(!HealthMonitor.failoverObservation([]).active, "one server: never")
        let failedOver = [
            ServerHealth(host: "db1:5432", role: "primary", state: "ejected", lastOutcome: "refused"),
            ServerHealth(host: "db2:5432", role: "primary", state: "current", lastOutcome: nil),
        ]
        let observation = HealthMonitor.failoverObservation(failedOver)
        #expect(observation.active)
        #expect(
            observation.summary
                == "Failed over: connections go to db2:5432 (primary), not db1:5432, the first configured"
        )
        #expect(AlertEngine.severity(of: .databaseFailedOver) == .warning)
    }

    @Test func operationsShedSinceTheLastCheckRaiseTheOverloadAlert() {
        var previous = OperationMetricsRecorder().snapshot()
        previous.shedByLoadLimit = 10
        var current = previous
        #expect(HealthMonitor.recentWindow(current: current, previous: previous).shed == 0)
        current.shedByLoadLimit = 25
        #expect(HealthMonitor.recentWindow(current: current, previous: previous).shed == 15)
    }

    @Test func firingNoticesLapseFourRepeatIntervalsAheadAndResolvedOnesEndNow() async {
        let fixture = Fixture(repeatInterval: .seconds(60))
        fixture.backend.reachable = false
        await fixture.monitor.checkNow()
        let firing = fixture.sink.of(.databaseUnreachable).last
        let lapse = firing.flatMap { notice in notice.endsAt.map { $0.timeIntervalSince(notice.startsAt) } }
        #expect(lapse == 240, "endsAt is four repeat intervals after it was sent")
        fixture.backend.reachable = true
        fixture.clock.advance(by: .seconds(30))
        await fixture.monitor.checkNow()
        let resolved = fixture.sink.of(.databaseUnreachable).last
        #expect(resolved?.status == .resolved)
        #expect(resolved.flatMap { $0.endsAt.map { abs($0.timeIntervalSinceNow) < 5 } } == true)
    }

    /// Alertmanager expires an alert that is not sent again before its `endsAt`: its sink asks for
    /// a minute, and the monitor repeats at the shortest interval asked for.
    @Test(arguments: [
        (configured: 3600, sink: Int?.some(60), effective: 60),
        (configured: 3600, sink: nil, effective: 3600),
        (configured: 30, sink: 60, effective: 30),
    ])
    func firingAlertsRepeatAsOftenAsTheMostDemandingSinkAsks(configured: Int, sink: Int?, effective: Int) async {
        let fixture = Fixture(repeatInterval: .seconds(configured), sinkRepeatInterval: sink.map { .seconds($0) })
        #expect(fixture.monitor.configuration.alerts.repeatInterval == .seconds(effective))
        fixture.backend.reachable = false
        await fixture.monitor.checkNow()
        let first = fixture.sink.of(.databaseUnreachable)
        #expect(first.count == 1)
        let lapse = first.last.flatMap { notice in notice.endsAt.map { $0.timeIntervalSince(notice.startsAt) } }
        #expect(lapse == Double(4 * effective), "endsAt is four of the repeat intervals used ahead")
        fixture.clock.advance(by: .seconds(effective) - .milliseconds(1))
        await fixture.monitor.checkNow()
        #expect(fixture.sink.of(.databaseUnreachable).count == 1, "not repeated early")
        fixture.clock.advance(by: .milliseconds(1))
        await fixture.monitor.checkNow()
        #expect(fixture.sink.of(.databaseUnreachable).filter(\.isRepeat).count == 1, "repeated on time")
    }

    @Test(arguments: [
        AlertKind.poolUtilization, .slowQueries, .errorRate, .healthScore, .databaseUnreachable, .serverConnections,
    ])
    func eachAlertFiresAfterItsConditionHoldsIsNotRepeatedEarlyRepeatsAndResolves(kind: AlertKind) async {
        let fixture = Fixture(timings: AlertTimings(all: AlertTiming(for: .seconds(60))), repeatInterval: .seconds(300))
        func unhealthyInterval() async {
            switch kind {
            case .poolUtilization: fixture.backend.pool = PoolStatistics(total: 10, active: 9, idle: 1, max: 10)
            case .slowQueries: await fixture.traffic(count: 5, duration: .milliseconds(500))
            case .errorRate: await fixture.traffic(count: 10, failing: 5)
            case .healthScore, .databaseUnreachable: fixture.backend.reachable = false
            case .serverConnections:
                // 95 of the 97 ordinary slots: the fleet together, though this pool is idle.
                fixture.backend.serverConnections = ServerConnections(inUse: 95, max: 100, reserved: 3)
            case .circuitBreakerState, .databaseFailedOver, .databaseOverloaded: break
            }
        }
        func healthyInterval() async {
            fixture.backend.pool = PoolStatistics(max: 10)
            fixture.backend.serverConnections = ServerConnections(inUse: 12, max: 100, reserved: 3)
            fixture.backend.reachable = true
            await fixture.traffic(count: 10)
        }
        func check() async {
            fixture.clock.advance(by: .seconds(30))
            await fixture.monitor.checkNow()
        }

        await unhealthyInterval()
        await check()
        #expect(fixture.sink.of(kind).isEmpty, "pending: the condition has held for 0 s of the 60 s required")
        await unhealthyInterval()
        await check()
        #expect(fixture.sink.of(kind).isEmpty, "still pending after 30 s")
        await unhealthyInterval()
        await check()
        #expect(fixture.sink.of(kind).map(\.status) == [.firing], "fires once it held for 60 s")
        #expect(fixture.monitor.status.activeAlerts.contains { $0.kind == kind })
        for _ in 0..<4 {
            await unhealthyInterval()
            await check()
        }
        let firing = fixture.sink.of(kind)
        #expect(firing.count == 1, "deduplicated: no second message within the 300 s repeat interval")
        for _ in 0..<6 {
            await unhealthyInterval()
            await check()
        }
        #expect(fixture.sink.of(kind).filter(\.isRepeat).count == 1, "repeated after 300 s")
        #expect(Set(fixture.sink.of(kind).map(\.fingerprint)).count == 1, "one fingerprint per incident")
        await healthyInterval()
        await check()
        let last = fixture.sink.of(kind).last
        #expect(last?.status == .resolved)
        #expect(last?.endsAt != nil)
        #expect(!fixture.monitor.status.activeAlerts.contains { $0.kind == kind })
    }

    @Test func breakerTransitionsAlertImmediately() async throws {
        let fixture = Fixture()
        let runner = Task { try await fixture.monitor.run() }
        await fixture.clock.waitForSleepers(count: 1)
        fixture.db.circuitBreaker.forceState(.open)
        #expect(await eventually { fixture.sink.of(.circuitBreakerState).count == 1 })
        fixture.db.circuitBreaker.forceState(.halfOpen)
        fixture.db.circuitBreaker.forceState(.open)
        fixture.db.circuitBreaker.reset()
        #expect(await eventually { fixture.sink.of(.circuitBreakerState).count == 2 })
        #expect(
            fixture.sink.of(.circuitBreakerState).map(\.status) == [.firing, .resolved],
            "OPEN→HALF_OPEN→OPEN is one incident"
        )
        runner.cancel()
        try await runner.value
    }

    @Test func theMonitorChecksEveryInterval() async throws {
        let fixture = Fixture()
        let runner = Task { try await fixture.monitor.run() }
        await fixture.clock.waitForSleepers(count: 1)
        #expect(fixture.backend.probes == 1)
        for expected in 2...4 {
            fixture.clock.advance(by: .seconds(30))
            #expect(await eventually { fixture.backend.probes == expected })
            await fixture.clock.waitForSleepers(count: 1)
        }
        runner.cancel()
        try await runner.value
        #expect(fixture.monitor.hasChecked)
    }

    @Test func aDisabledMonitorDoesNotRun() async throws {
        let clock = ManualClock()
        let db = try ReliableDatabase(backend: ScriptedBackend(), clock: clock)
        let monitor = HealthMonitor(database: db, configuration: .init(enabled: false))
        try await monitor.run()
        #expect(!monitor.hasChecked)
    }

    @Test func scoreFormula() {
        let thresholds = AlertThresholds(
            healthScore: 70,
            poolUtilization: 80,
            queryTime: .milliseconds(100),
            errorRate: 5
        )
        func score(_ inputs: HealthScore.Inputs) -> HealthScore.Verdict {
            HealthScore.evaluate(inputs, thresholds: thresholds)
        }
        let healthy = HealthScore.Inputs(
            probeSucceeded: true,
            breakerState: .closed,
            recentAverageQueryTime: .milliseconds(10),
            recentErrorRate: 0,
            poolUtilization: 10,
            poolWaiting: 0
        )
        #expect(score(healthy).score == 100)
        var slow = healthy
        slow.recentAverageQueryTime = .milliseconds(250)  // 2.5× threshold: half the 15 points
        #expect(score(slow).score == 93)
        #expect(score(slow).state == .degraded)
        var open = healthy
        open.breakerState = .open
        #expect(score(open).score == 80)
        #expect(score(open).state == .unhealthy)
        var saturated = healthy
        saturated.poolUtilization = 90
        #expect(score(saturated).score == 95)
        saturated.poolWaiting = 3
        #expect(score(saturated).score == 90)
        #expect(!score(saturated).checks.poolHealth)
        var down = healthy
        down.probeSucceeded = false
        down.breakerState = .open
        down.recentErrorRate = 100
        #expect(score(down).score == 25)
    }
}

/// Polls an in-process condition, yielding between polls.
func eventually(_ condition: () -> Bool) async -> Bool {
    for _ in 0..<100_000 {
        if condition() { return true }
        await Task.yield()
    }
    return condition()
}
