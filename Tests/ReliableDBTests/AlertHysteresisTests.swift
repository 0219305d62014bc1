import Foundation
import PropertyBased
import ReliableDBTesting
import Testing

@testable import ReliableDB

/// Alerts with hysteresis: each kind's `for` and `keepFiringFor`, as Prometheus rules apply them.
/// Time reaches the engine as `MonotonicTime` values (and the monitor through a manual clock):
/// nothing sleeps.
@Suite("Alert hysteresis (for, keep firing for)")
struct AlertHysteresisTests {
    static let origin = MonotonicTime(nanoseconds: 1_000_000_000)
    static let wallClock = Date(timeIntervalSince1970: 1_700_000_000)

    static func time(_ seconds: Double) -> MonotonicTime {
        origin + .milliseconds(Int64((seconds * 1000).rounded()))
    }

    static func observation(_ kind: AlertKind, _ active: Bool) -> AlertEngine.Observation {
        AlertEngine.Observation(
            kind: kind,
            active: active,
            value: active ? 1 : 0,
            threshold: 0,
            summary: "\(kind.rawValue) \(active ? "holds" : "clear")"
        )
    }

    /// An engine fed evaluations at times in seconds, keeping what it sent and when.
    struct Recorder {
        var engine: AlertEngine
        var sent: [(seconds: Double, notification: AlertNotification)] = []

        init(_ timings: AlertTimings = .init(), repeatInterval: Duration = .seconds(3600)) {
            engine = AlertEngine(configuration: .init(timings: timings, repeatInterval: repeatInterval))
        }

        mutating func evaluate(at seconds: Double, _ observations: [AlertEngine.Observation]) {
            let notifications = engine.evaluate(
                observations,
                at: AlertHysteresisTests.time(seconds),
                wallClock: AlertHysteresisTests.wallClock.addingTimeInterval(seconds)
            )
            sent += notifications.map { (seconds, $0) }
        }

        mutating func evaluate(at seconds: Double, _ kind: AlertKind, active: Bool) {
            evaluate(at: seconds, [AlertHysteresisTests.observation(kind, active)])
        }

        /// Firing and resolution notices for `kind`, repeats left out.
        func transitions(_ kind: AlertKind) -> [(seconds: Double, status: AlertStatus)] {
            sent.filter { $0.notification.kind == kind && !$0.notification.isRepeat }
                .map { ($0.seconds, $0.notification.status) }
        }
    }

    // MARK: Defaults

    @Test func theDefaultsFireAtOnceOnlyWhereAWaitWouldHideAnOutage() {
        let timings = AlertTimings()
        for kind in [AlertKind.databaseUnreachable, .circuitBreakerState] {
            #expect(timings[kind] == AlertTiming(for: .zero, keepFiringFor: .seconds(30)), "\(kind)")
        }
        #expect(timings[.databaseFailedOver] == AlertTiming(for: .zero, keepFiringFor: .seconds(30)))
        for kind in [AlertKind.errorRate, .slowQueries, .poolUtilization, .healthScore, .databaseOverloaded] {
            #expect(timings[kind] == AlertTiming(for: .seconds(60), keepFiringFor: .seconds(60)), "\(kind)")
        }
        #expect(AlertConfiguration().timings == timings, "the engine's default configuration uses them")
        #expect(HealthMonitor.Configuration().alerts.timings == timings)
        let immediate: Set<AlertKind> = [.databaseUnreachable, .circuitBreakerState, .databaseFailedOver]
        #expect(AlertTimings.thresholdKinds.union(immediate) == Set(AlertKind.allCases), "every kind has its group")
    }

    @Test(arguments: [1.0, 5, 30])
    func anErrorRateBlipAtOneCheckNeverFires(interval: Double) {
        var recorder = Recorder()
        recorder.evaluate(at: 0, .errorRate, active: false)
        recorder.evaluate(at: interval, .errorRate, active: true)
        for check in 2...20 { recorder.evaluate(at: Double(check) * interval, .errorRate, active: false) }
        #expect(recorder.sent.isEmpty, "a blip fired: \(recorder.sent.map(\.notification.summary))")
    }

    @Test func aSlowQueryAtOneProbeNeverFires() {
        var recorder = Recorder()
        recorder.evaluate(at: 0, .slowQueries, active: true)
        recorder.evaluate(at: 1, .slowQueries, active: false)
        recorder.evaluate(at: 120, .slowQueries, active: false)
        #expect(recorder.sent.isEmpty)
    }

    @Test func aThresholdAlertFiresOnceItHeldForItsFullForAtConsecutiveChecks() {
        var recorder = Recorder()
        for second in stride(from: 0.0, through: 59, by: 1) { recorder.evaluate(at: second, .errorRate, active: true) }
        #expect(recorder.sent.isEmpty, "held 59 s of the 60 s")
        recorder.evaluate(at: 60, .errorRate, active: true)
        #expect(recorder.transitions(.errorRate).map(\.status) == [.firing], "held 60 s")

        var interrupted = Recorder()
        for second in stride(from: 0.0, through: 50, by: 10) {
            interrupted.evaluate(at: second, .errorRate, active: true)
        }
        interrupted.evaluate(at: 55, .errorRate, active: false)
        for second in stride(from: 60.0, through: 110, by: 10) {
            interrupted.evaluate(at: second, .errorRate, active: true)
        }
        #expect(interrupted.sent.isEmpty, "one check without the condition starts the wait again")
        interrupted.evaluate(at: 120, .errorRate, active: true)
        #expect(interrupted.transitions(.errorRate).map(\.seconds) == [120])
    }

    @Test func aFlappingProbeStaysOneIncidentAndResolvesAfterKeepFiringFor() {
        var recorder = Recorder()
        recorder.evaluate(at: 0, .databaseUnreachable, active: true)
        #expect(recorder.transitions(.databaseUnreachable).map(\.status) == [.firing], "pages at once")
        let pattern = [false, false, true, false, true, true, false]
        for (index, active) in pattern.enumerated() {
            recorder.evaluate(at: Double(index + 1) * 2, .databaseUnreachable, active: active)
        }
        #expect(recorder.sent.count == 1, "the probe flapping inside 30 s stays one incident")
        #expect(recorder.engine.firing.map(\.kind) == [.databaseUnreachable], "still firing while kept")
        // Absent since 14 s: still firing at 43.9 s, resolved at the first evaluation from 44 s.
        recorder.evaluate(at: 43.9, .databaseUnreachable, active: false)
        #expect(recorder.sent.count == 1)
        recorder.evaluate(at: 45, .databaseUnreachable, active: false)
        #expect(recorder.transitions(.databaseUnreachable).map(\.status) == [.firing, .resolved])
        #expect(recorder.sent.last?.notification.summary.hasPrefix("Resolved: ") == true)
        #expect(recorder.sent.last?.notification.endsAt == Self.wallClock.addingTimeInterval(45))
        #expect(recorder.engine.firing.isEmpty)
        recorder.evaluate(at: 50, .databaseUnreachable, active: true)
        #expect(recorder.transitions(.databaseUnreachable).map(\.status) == [.firing, .resolved, .firing])
        #expect(Set(recorder.sent.map(\.notification.fingerprint)).count == 1, "the same alert, a new incident")
    }

    @Test func aKeptFiringAlertIsStillRepeatedSoAReceiverDoesNotLetItLapse() {
        let timing = AlertTiming(for: .zero, keepFiringFor: .seconds(600))
        var recorder = Recorder(AlertTimings(all: timing), repeatInterval: .seconds(60))
        recorder.evaluate(at: 0, .circuitBreakerState, active: true)
        for second in stride(from: 30.0, through: 630, by: 30) {
            recorder.evaluate(at: second, .circuitBreakerState, active: false)
        }
        let sent = recorder.sent.map(\.notification)
        #expect(sent.first?.status == .firing && sent.first?.isRepeat == false)
        #expect(sent.dropFirst().dropLast().allSatisfy { $0.status == .firing && $0.isRepeat })
        #expect(sent.dropFirst().dropLast().count == 10, "every 60 s while kept firing")
        // Each repeat's endsAt (four intervals ahead) lies past the next repeat: never a gap.
        #expect(sent.dropFirst().dropLast().allSatisfy { $0.endsAt != nil })
        #expect(recorder.sent.last?.seconds == 630 && sent.last?.status == .resolved, "absent since 30 s")
    }

    @Test func eachKindKeepsItsOwnTiming() {
        var timings = AlertTimings.immediate
        timings[.errorRate] = AlertTiming(for: .seconds(10), keepFiringFor: .seconds(5))
        var recorder = Recorder(timings)
        recorder.evaluate(at: 0, [Self.observation(.errorRate, true), Self.observation(.poolUtilization, true)])
        #expect(recorder.transitions(.poolUtilization).map(\.status) == [.firing])
        #expect(recorder.transitions(.errorRate).isEmpty)
        recorder.evaluate(at: 10, [Self.observation(.errorRate, true), Self.observation(.poolUtilization, false)])
        #expect(recorder.transitions(.poolUtilization).map(\.status) == [.firing, .resolved])
        #expect(recorder.transitions(.errorRate).map(\.status) == [.firing])
        recorder.evaluate(at: 11, [Self.observation(.errorRate, false)])
        recorder.evaluate(at: 15.5, [Self.observation(.errorRate, false)])
        #expect(recorder.transitions(.errorRate).map(\.status) == [.firing])
        recorder.evaluate(at: 16, [Self.observation(.errorRate, false)])
        #expect(recorder.transitions(.errorRate).map(\.status) == [.firing, .resolved])
    }

    // MARK: A database restart

    /// One restart as one service instance's monitor sees it: a check every `interval` (probe,
    /// breaker, error rate and health score) and an evaluation at every breaker transition, as
    /// `HealthMonitor` does, while the database is down for `outage` seconds. Everything flaps:
    /// the probe fails, succeeds, fails; the breaker goes OPEN, HALF_OPEN, OPEN, then a probe
    /// through PgBouncer closes it and it opens again, and it closes after the restart; the error
    /// rate is above its threshold in one check window and below in the next.
    struct Restart {
        let interval: Double
        let outage: Double
        /// When the database stops: a check time for every interval, after healthy checks.
        static let start = 120.0
        var end: Double { Self.start + outage }

        var breakerTransitions: [(seconds: Double, state: CircuitState)] {
            let start = Self.start
            return [
                (start + 0.2, .open), (start + outage / 3, .halfOpen), (start + outage / 3 + 0.1, .open),
                (start + outage * 2 / 3, .halfOpen), (start + outage * 2 / 3 + 0.05, .closed),
                (start + outage * 2 / 3 + 0.5, .open), (end + 0.1, .halfOpen), (end + 0.3, .closed),
            ]
        }

        func breaker(at seconds: Double) -> CircuitState {
            breakerTransitions.last { $0.seconds <= seconds }?.state ?? .closed
        }

        /// Every evaluation in time order, until five minutes after the restart.
        var evaluations: [(seconds: Double, observations: [AlertEngine.Observation])] {
            var checks: [(seconds: Double, observations: [AlertEngine.Observation])] = []
            var probesDuringOutage = 0
            var windowsDuringOutage = 0
            var index = 0
            while Double(index) * interval <= end + 300 {
                let seconds = Double(index) * interval
                index += 1
                var probeFails = false
                if seconds >= Self.start && seconds < end {
                    probeFails = probesDuringOutage % 3 != 1
                    probesDuringOutage += 1
                }
                // The error rate covers the queries since the previous check.
                var errors = false
                if seconds > Self.start && seconds - interval < end {
                    errors = windowsDuringOutage % 2 == 0
                    windowsDuringOutage += 1
                }
                checks.append(
                    (
                        seconds,
                        [
                            observation(.databaseUnreachable, probeFails),
                            observation(.circuitBreakerState, breaker(at: seconds) != .closed),
                            observation(.errorRate, errors),
                            observation(.healthScore, probeFails),
                        ]
                    )
                )
            }
            let transitions = breakerTransitions.map { transition in
                (transition.seconds, [observation(.circuitBreakerState, transition.state != .closed)])
            }
            // Stable: a check and a transition at the same instant keep this order.
            return (checks + transitions).enumerated()
                .sorted { ($0.element.seconds, $0.offset) < ($1.element.seconds, $1.offset) }
                .map(\.element)
        }

        static let kinds: [AlertKind] = [.databaseUnreachable, .circuitBreakerState, .errorRate, .healthScore]

        /// Firings and resolutions per kind (repeats left out) with `timings`.
        func notifications(_ timings: AlertTimings) -> [AlertKind: (fired: Int, resolved: Int)] {
            var recorder = Recorder(timings)
            for evaluation in evaluations { recorder.evaluate(at: evaluation.seconds, evaluation.observations) }
            var counts: [AlertKind: (fired: Int, resolved: Int)] = [:]
            for kind in Self.kinds {
                let transitions = recorder.transitions(kind)
                counts[kind] = (
                    transitions.filter { $0.status == .firing }.count,
                    transitions.filter { $0.status == .resolved }.count
                )
            }
            return counts
        }

        static func describe(_ counts: [AlertKind: (fired: Int, resolved: Int)]) -> String {
            kinds.map { "\($0.rawValue) \(counts[$0]?.fired ?? 0)/\(counts[$0]?.resolved ?? 0)" }
                .joined(separator: ", ")
        }
    }

    @Test(arguments: [1.0, 5, 30], [3.0, 6, 15])
    func aRestartFiresAndResolvesEachAlertAtMostOnce(interval: Double, outage: Double) {
        let restart = Restart(interval: interval, outage: outage)
        let before = restart.notifications(.immediate)
        let after = restart.notifications(AlertTimings())
        let pages = { (counts: [AlertKind: (fired: Int, resolved: Int)]) in counts.values.map(\.fired).reduce(0, +) }
        print(
            "alert hysteresis: checks every \(Int(interval)) s, outage \(Int(outage)) s (fired/resolved):",
            "before \(Restart.describe(before)) (\(pages(before)) pages);",
            "after \(Restart.describe(after)) (\(pages(after)) pages)"
        )
        #expect(before.values.contains { $0.fired > 1 }, "without hysteresis the restart does flap")
        for kind in Restart.kinds {
            let counts = after[kind] ?? (0, 0)
            #expect(counts.fired <= 1 && counts.resolved <= 1, "\(kind.rawValue): \(counts)")
            #expect(counts.fired == counts.resolved, "\(kind.rawValue) resolved once it was over")
        }
        #expect(after[.databaseUnreachable]?.fired == 1, "an unreachable database still pages, at once")
        #expect(after[.circuitBreakerState]?.fired == 1)
        #expect(after[.errorRate]?.fired == 0, "a restart's errors last less than DB_ALERT_FOR")
    }

    // MARK: Invariants over random observations

    /// Durations in milliseconds, zero drawn as often as the rest of 0...120 s.
    static let milliseconds = zip(Gen.int(in: 0...3), Gen.int64(in: 0...120_000)).map { pick, uniform in
        pick == 0 ? 0 : uniform
    }

    /// For every kind at every evaluation, with `A` the timing of threshold kinds and `B` the
    /// others': notices alternate firing, resolved (repeats only between them); a firing comes
    /// exactly at the first evaluation where the condition has held for `for` since the first
    /// evaluation of its current unbroken run, and a resolution exactly at the first where it has
    /// been absent for `keepFiringFor` since the first evaluation of its current absence.
    @Test func notificationsAlternateAndRespectForAndKeepFiringFor() async {
        var coverage = Coverage()
        await propertyCheck(
            count: 200,
            input: Self.milliseconds,
            Self.milliseconds,
            Self.milliseconds,
            Self.milliseconds,
            Gen.int64(in: 1...600),
            // A bit flips with probability 1/8 per step: long runs, and flapping.
            zip(Gen.int64(in: 0...40_000), Gen.int(in: 0...255), Gen.int(in: 0...255), Gen.int(in: 0...255))
                .map { gap, a, b, c in (gap, a & b & c) }
                .array(of: 1...200)
        ) { forA, keepA, forB, keepB, repeatSeconds, steps in
            // A few milliseconds of CPU each: give the parallel suites' deadline tests a turn.
            await Task.yield()
            var timings = AlertTimings.immediate
            for kind in AlertKind.allCases {
                let threshold = AlertTimings.thresholdKinds.contains(kind)
                timings[kind] = AlertTiming(
                    for: .milliseconds(threshold ? forA : forB),
                    keepFiringFor: .milliseconds(threshold ? keepA : keepB)
                )
            }
            let violations = Self.violations(
                timings: timings,
                repeatInterval: .seconds(repeatSeconds),
                steps: steps.map { (Duration.milliseconds($0.0), $0.1) },
                coverage: &coverage
            )
            #expect(violations.isEmpty, "\(violations.prefix(5))")
        }
        print("alert hysteresis property: \(coverage)")
        #expect(coverage.fired > 2000 && coverage.resolved > 2000, "\(coverage)")
        #expect(coverage.rescued > 500 && coverage.repeats > 500, "\(coverage)")
    }

    /// What a random run exercised, so the invariants are not met vacuously.
    struct Coverage {
        var fired = 0
        var resolved = 0
        /// Kept firing: the condition returned within `keepFiringFor`.
        var rescued = 0
        var repeats = 0
    }

    /// Feeds `steps` (the time since the previous evaluation, and which kinds change, one bit per
    /// kind in `AlertKind.allCases` order) and lists every broken invariant.
    static func violations(
        timings: AlertTimings,
        repeatInterval: Duration,
        steps: [(gap: Duration, flips: Int)],
        coverage: inout Coverage
    ) -> [String] {
        var engine = AlertEngine(configuration: .init(timings: timings, repeatInterval: repeatInterval))
        var violations: [String] = []
        var mask = 0
        var firing: Set<AlertKind> = []
        var runStart: [AlertKind: MonotonicTime] = [:]
        var absenceStart: [AlertKind: MonotonicTime] = [:]
        var now = origin
        for (step, (gap, flips)) in steps.enumerated() {
            now = now + gap
            mask ^= flips
            let observations = AlertKind.allCases.enumerated().map { bit, kind in
                observation(kind, mask & (1 << bit) != 0)
            }
            let sent = engine.evaluate(observations, at: now, wallClock: wallClock)
            for observation in observations {
                let kind = observation.kind
                if observation.active {
                    if firing.contains(kind), absenceStart[kind] != nil { coverage.rescued += 1 }
                    runStart[kind] = runStart[kind] ?? now
                    absenceStart[kind] = nil
                } else {
                    absenceStart[kind] = absenceStart[kind] ?? now
                    runStart[kind] = nil
                }
                let notices = sent.filter { $0.kind == kind && !$0.isRepeat }.map(\.status)
                let repeats = sent.filter { $0.kind == kind && $0.isRepeat }
                let due: Bool
                if firing.contains(kind) {
                    due = absenceStart[kind].map { now - $0 >= timings[kind].keepFiringFor } ?? false
                    if notices != (due ? [.resolved] : []) {
                        violations.append("step \(step) \(kind): \(notices) while firing, resolution due: \(due)")
                    }
                    if due {
                        firing.remove(kind)
                        coverage.resolved += 1
                    }
                } else {
                    due = runStart[kind].map { now - $0 >= timings[kind].for } ?? false
                    if notices != (due ? [.firing] : []) {
                        violations.append("step \(step) \(kind): \(notices) while not firing, firing due: \(due)")
                    }
                    if due {
                        firing.insert(kind)
                        coverage.fired += 1
                    }
                }
                coverage.repeats += repeats.count
                if !repeats.isEmpty && (due || !firing.contains(kind)) {
                    violations.append("step \(step) \(kind): a repeat outside an incident")
                }
            }
            if Set(engine.firing.map(\.kind)) != firing {
                violations.append("step \(step): firing \(engine.firing.map(\.kind)), expected \(firing)")
            }
        }
        return violations
    }

    // MARK: Through the health monitor

    @Test func theMonitorKeepsAFlappingBreakerOneIncidentAndResolvesAtTheFirstCheckAfterKeepFiringFor()
        async throws
    {
        let clock = ManualClock()
        let backend = ScriptedBackend()
        let sink = RecordingSink()
        let db = try ReliableDatabase(backend: backend, clock: clock)
        let monitor = HealthMonitor(database: db, configuration: .init(interval: .seconds(5)), sinks: [sink])
        let runner = Task { try await monitor.run() }
        await clock.waitForSleepers(count: 1)
        db.circuitBreaker.forceState(.open)
        #expect(await eventually { sink.of(.circuitBreakerState).count == 1 }, "fires at once")
        db.circuitBreaker.forceState(.closed)
        db.circuitBreaker.forceState(.halfOpen)
        // HALF_OPEN handled (and CLOSED before it): the incident is still the same one.
        #expect(await eventually { monitor.status.activeAlerts.first?.summary == "Circuit breaker is HALF_OPEN" })
        db.circuitBreaker.reset()
        await monitor.checkNow()  // sees it CLOSED from now on, however late the transition arrives
        var probes = backend.probes
        for _ in 0..<5 {
            clock.advance(by: .seconds(5))
            probes += 1
            #expect(await eventually { backend.probes == probes })
            await clock.waitForSleepers(count: 1)
        }
        #expect(sink.of(.circuitBreakerState).map(\.status) == [.firing], "closed for 25 s: still one incident")
        #expect(monitor.status.activeAlerts.map(\.kind) == [.circuitBreakerState])
        clock.advance(by: .seconds(5))
        #expect(await eventually { sink.of(.circuitBreakerState).count == 2 })
        #expect(
            sink.of(.circuitBreakerState).map(\.status) == [.firing, .resolved],
            "resolved at the first check 30 s after it closed"
        )
        #expect(sink.notifications.allSatisfy { $0.kind == .circuitBreakerState }, "nothing else fired")
        runner.cancel()
        try await runner.value
    }

    @Test func theMonitorPagesAnUnreachableDatabaseAtOnceAndOnceThroughAFlappingProbe() async throws {
        let clock = ManualClock()
        let backend = ScriptedBackend()
        let sink = RecordingSink()
        let db = try ReliableDatabase(backend: backend, clock: clock)
        let monitor = HealthMonitor(database: db, configuration: .init(interval: .seconds(5)), sinks: [sink])
        await monitor.checkNow()
        // Checks every 5 s: down at 5 s, up at 10 s, down at 15 s, up for good from 20 s.
        for (second, reachable) in [(5, false), (10, true), (15, false), (20, true)] {
            backend.reachable = reachable
            clock.advance(by: .seconds(5))
            await monitor.checkNow()
            if second == 5 { #expect(sink.of(.databaseUnreachable).map(\.status) == [.firing], "at once") }
        }
        for _ in 0..<5 {
            clock.advance(by: .seconds(5))
            await monitor.checkNow()
        }
        #expect(sink.of(.databaseUnreachable).map(\.status) == [.firing], "up since 20 s; now 45 s")
        clock.advance(by: .seconds(5))
        await monitor.checkNow()
        #expect(sink.of(.databaseUnreachable).map(\.status) == [.firing, .resolved], "resolved at 50 s")
        #expect(sink.of(.healthScore).isEmpty, "the score was low at two checks 10 s apart: never 60 s")
        #expect(sink.notifications.count == 2)
    }

    // MARK: Configuration

    static func load(_ environment: [String: String]) async throws(ConfigurationError) -> ReliableDBConfiguration {
        try await ReliableDBConfiguration.fromEnvironment(environment, dotEnvPath: nil)
    }

    @Test func unsetTheVariablesGiveTheDefaultTimings() async throws {
        let config = try await Self.load([:])
        #expect(config.alertFor == .seconds(60))
        #expect(config.alertKeepFiringFor == nil, "each alert's own default")
        #expect(HealthMonitor.Configuration(config).alerts.timings == AlertTimings())
        #expect(ReliableDBConfiguration.additionalVariableNames.contains("DB_ALERT_FOR"))
        #expect(ReliableDBConfiguration.additionalVariableNames.contains("DB_ALERT_KEEP_FIRING_FOR"))
    }

    @Test func theVariablesAreMillisecondsAndReachTheMonitor() async throws {
        let config = try await Self.load(["DB_ALERT_FOR": "120000", "DB_ALERT_KEEP_FIRING_FOR": "45500"])
        #expect(config.alertFor == .seconds(120))
        #expect(config.alertKeepFiringFor == .milliseconds(45_500))
        let timings = HealthMonitor.Configuration(config).alerts.timings
        #expect(timings[.errorRate] == AlertTiming(for: .seconds(120), keepFiringFor: .milliseconds(45_500)))
        #expect(timings[.healthScore] == AlertTiming(for: .seconds(120), keepFiringFor: .milliseconds(45_500)))
        #expect(
            timings[.databaseUnreachable] == AlertTiming(for: .zero, keepFiringFor: .milliseconds(45_500)),
            "DB_ALERT_FOR never delays an unreachable database"
        )
        #expect(timings[.circuitBreakerState] == AlertTiming(for: .zero, keepFiringFor: .milliseconds(45_500)))
        let onlyFor = try await Self.load(["DB_ALERT_FOR": "5000"])
        #expect(HealthMonitor.Configuration(onlyFor).alerts.timings == AlertTimings(thresholdFor: .seconds(5)))
    }

    @Test func zeroGivesTheOldImmediateAlertsAndTheMaximumIsADay() async throws {
        let zero = try await Self.load(["DB_ALERT_FOR": "0", "DB_ALERT_KEEP_FIRING_FOR": "0"])
        #expect(zero.alertFor == .zero && zero.alertKeepFiringFor == .zero)
        #expect(HealthMonitor.Configuration(zero).alerts.timings == .immediate)
        let day = try await Self.load(["DB_ALERT_FOR": "86400000", "DB_ALERT_KEEP_FIRING_FOR": " 86400000 "])
        #expect(day.alertFor == .seconds(86_400) && day.alertKeepFiringFor == .seconds(86_400))
    }

    static let malformed: [(variable: String, value: String)] = [
        ("DB_ALERT_FOR", "-1"), ("DB_ALERT_FOR", "a minute"), ("DB_ALERT_FOR", "86400001"), ("DB_ALERT_FOR", "inf"),
        ("DB_ALERT_KEEP_FIRING_FOR", "-30000"), ("DB_ALERT_KEEP_FIRING_FOR", "30s"),
        ("DB_ALERT_KEEP_FIRING_FOR", "1e12"), ("DB_ALERT_KEEP_FIRING_FOR", "NaN"),
    ]

    @Test(arguments: malformed)
    func aBadValueNamesTheVariableTheValueAndTheRange(variable: String, value: String) async {
        do {
            _ = try await Self.load([variable: value, "DB_CONNECTION_LIMIT": "0"])
            Issue.record("accepted \(variable)=\(value)")
        } catch {
            let problem = error.problems.first { $0.variable == variable }
            #expect(error.problems.count == 2, "reported with the others: \(error.problems)")
            #expect(problem?.value == value)
            #expect(problem?.expected == "a number of milliseconds from 0 to 86400000")
            #expect(error.description.contains(variable))
        }
    }

    @Test func aDotEnvFileAndSwiftConfigurationReadThemToo() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("rdb-\(UUID().uuidString).env").path
        try "DB_ALERT_FOR=30000\nDB_ALERT_KEEP_FIRING_FOR=90000\n".write(
            toFile: path,
            atomically: true,
            encoding: .utf8
        )
        defer { try? FileManager.default.removeItem(atPath: path) }
        let config = try await ReliableDBConfiguration.fromEnvironment([:], dotEnvPath: path)
        #expect(config.alertFor == .seconds(30) && config.alertKeepFiringFor == .seconds(90))
        #expect(
            ReliableDBConfiguration.configKey(for: "DB_ALERT_KEEP_FIRING_FOR") == [
                "db", "alert", "keep", "firing", "for",
            ]
        )
    }
}
