import Foundation

// MARK: - Timings

/// When one alert fires and when it resolves: Prometheus alerting rules' `for` and
/// `keep_firing_for`.
///
/// Health checks see a database restart as a burst of flapping observations (the probe fails,
/// succeeds, fails; the breaker goes OPEN, HALF_OPEN, OPEN, CLOSED). Without hysteresis every
/// flap is a page and every gap a resolution: one restart paged each instance several times per
/// alert. `for` keeps a blip from firing; `keepFiringFor` keeps a flapping incident one incident.
public struct AlertTiming: Sendable, Equatable {
    /// How long the condition must hold, at consecutive evaluations, before the alert fires
    /// (Prometheus `for`). It is measured from the first evaluation that saw the condition, so an
    /// evaluation that does not see it starts the wait again. Zero fires at the first evaluation.
    public var `for`: Duration
    /// How long a firing alert's condition must be absent before it resolves (Prometheus
    /// `keep_firing_for`), measured from the first evaluation that no longer saw it. The
    /// condition returning meanwhile keeps the same incident firing, with no new notification.
    /// Zero resolves at the first evaluation without the condition.
    ///
    /// Evaluations happen only at health checks (every `DB_HEALTH_CHECK_INTERVAL`) and at breaker
    /// transitions, so an alert resolves at the first evaluation after this has elapsed: up to
    /// one interval later.
    public var keepFiringFor: Duration

    public init(for: Duration = .zero, keepFiringFor: Duration = .zero) {
        self.for = `for`
        self.keepFiringFor = keepFiringFor
    }

    /// Fires at the first evaluation that sees the condition and resolves at the first that does
    /// not (no hysteresis: every flap is a notification).
    public static let immediate = AlertTiming()
}

/// The ``AlertTiming`` of every alert kind.
///
/// The defaults turn one database restart (an outage of a few seconds up to about 20 s, seen by
/// checks every 1 to 30 s) into at most one firing and one resolution per alert kind:
///
/// | alert | for | keep firing for |
/// |---|---|---|
/// | `database_unreachable`, `circuit_breaker_state`, `database_failed_over` | 0 | 30 s |
/// | `error_rate`, `slow_queries`, `pool_utilization`, `health_score`, `database_overloaded` | 60 s | 60 s |
///
/// An unreachable database must page at once, and the breaker's state is already debounced by
/// its own failure threshold; both keep firing for 30 s, longer than a restart's flapping, so a
/// probe that fails, succeeds and fails again, or a breaker going OPEN→HALF_OPEN→OPEN, stays one
/// incident. A failover is a fact (connections went to another server; the old primary needs
/// rebuilding), not a level that may pass, so it fires at once too, and keeps firing for 30 s so
/// connections moving back and forth during a switchover stay one incident. Threshold alerts
/// measure one check interval's traffic, which a restart spoils for a moment: they must hold for
/// 60 s (two default check intervals, longer than a restart) before they fire, and once firing a
/// figure that dips below its threshold for less than 60 s does not resolve them.
public struct AlertTimings: Sendable, Equatable {
    /// The alerts on a measured figure crossing a threshold, which `thresholdFor` (`DB_ALERT_FOR`)
    /// delays.
    public static let thresholdKinds: Set<AlertKind> = [
        .errorRate, .slowQueries, .poolUtilization, .healthScore, .databaseOverloaded, .serverConnections,
    ]
    /// The default `for` of threshold alerts.
    public static let defaultThresholdFor = Duration.seconds(60)
    /// The default `keepFiringFor` of threshold alerts.
    public static let defaultThresholdKeepFiringFor = Duration.seconds(60)
    /// The default `keepFiringFor` of the alerts that fire at once (unreachable, breaker, failover).
    public static let defaultImmediateKeepFiringFor = Duration.seconds(30)

    private var table: [AlertKind: AlertTiming]

    /// Threshold alerts wait `thresholdFor`; `database_unreachable`, `circuit_breaker_state` and
    /// `database_failed_over` fire at once. Every alert keeps firing for `keepFiringFor`, or when
    /// it is nil, for its default (30 s for those firing at once, 60 s for threshold alerts).
    public init(thresholdFor: Duration = defaultThresholdFor, keepFiringFor: Duration? = nil) {
        table = [:]
        for kind in AlertKind.allCases {
            let threshold = Self.thresholdKinds.contains(kind)
            table[kind] = AlertTiming(
                for: threshold ? thresholdFor : .zero,
                keepFiringFor: keepFiringFor
                    ?? (threshold ? Self.defaultThresholdKeepFiringFor : Self.defaultImmediateKeepFiringFor)
            )
        }
    }

    /// The same timing for every kind.
    public init(all timing: AlertTiming) {
        table = Dictionary(uniqueKeysWithValues: AlertKind.allCases.map { ($0, timing) })
    }

    /// Every alert fires at the first evaluation that sees its condition and resolves at the first
    /// that does not: the behaviour before hysteresis, for tests of other behaviour.
    public static let immediate = AlertTimings(all: .immediate)

    /// The timing of `kind`.
    public subscript(kind: AlertKind) -> AlertTiming {
        get { table[kind] ?? .immediate }
        set { table[kind] = newValue }
    }
}

// MARK: - Configuration

public struct AlertConfiguration: Sendable, Equatable {
    /// When each kind fires and resolves; the defaults turn one database restart into at most
    /// one firing and one resolution per kind (``AlertTimings`` says why).
    public var timings: AlertTimings
    /// How often a firing alert is sent again, also while it is kept firing after its
    /// condition ended. A firing notice is valid for four of these (its `endsAt`); for
    /// Alertmanager keep it well inside `resolve_timeout`'s scale (a minute, as Prometheus
    /// re-sends), for chat an hour.
    public var repeatInterval: Duration
    /// Added to every notification (`service`, `backend`).
    public var labels: [String: String]

    public init(
        timings: AlertTimings = .init(),
        repeatInterval: Duration = .seconds(3600),
        labels: [String: String] = [:]
    ) {
        self.timings = timings
        self.repeatInterval = repeatInterval
        self.labels = labels
    }
}

// MARK: - The engine

/// Turns what each health check observed into alert notifications: pending → firing → resolved,
/// one incident per alert kind (deduplicated by fingerprint), repeated while it keeps firing.
///
/// Each kind has its own ``AlertTiming``, applied as Prometheus applies a rule's `for` and
/// `keep_firing_for`: a condition must hold for `for` at consecutive evaluations before it fires,
/// and a firing alert resolves only once its condition has been absent for `keepFiringFor`. The
/// engine sees time only at evaluations (each health check and each breaker transition), so both
/// waits end at the first evaluation after they have elapsed.
///
/// A pure value: time comes in as arguments, notifications come out; the monitor delivers them.
package struct AlertEngine: Sendable {
    package typealias Configuration = AlertConfiguration

    /// What one check saw for one alert kind.
    public struct Observation: Sendable, Equatable {
        public var kind: AlertKind
        /// True while the alert condition holds.
        public var active: Bool
        public var value: Double
        public var threshold: Double
        public var summary: String
        /// What went wrong, when the observation knows (a probe's error).
        public var cause: String?

        public init(
            kind: AlertKind,
            active: Bool,
            value: Double,
            threshold: Double,
            summary: String,
            cause: String? = nil
        ) {
            self.kind = kind
            self.active = active
            self.value = value
            self.threshold = threshold
            self.summary = summary
            self.cause = cause
        }
    }

    private enum Phase: Sendable {
        case inactive
        case pending(since: MonotonicTime)
        /// `absentSince`: the first evaluation without the condition since it last held; nil while
        /// it holds.
        case firing(notification: AlertNotification, lastSent: MonotonicTime, absentSince: MonotonicTime?)
    }

    public private(set) var configuration: Configuration
    private var phases: [AlertKind: Phase] = [:]

    /// New timings for the alerts from now on (live settings); pending and firing alerts stay.
    public mutating func reconfigure(_ configuration: Configuration) {
        self.configuration = configuration
    }

    public init(configuration: Configuration = .init()) {
        self.configuration = configuration
    }

    /// The alerts firing now (those kept firing after their condition ended included), with their
    /// latest values.
    public var firing: [AlertNotification] {
        AlertKind.allCases.compactMap { kind in
            if case .firing(let notification, _, _) = phases[kind] { return notification }
            return nil
        }
    }

    // MARK: - Evaluating observations

    /// Folds in observations and returns the notifications to send now.
    public mutating func evaluate(
        _ observations: [Observation],
        at now: MonotonicTime,
        wallClock: Date
    ) -> [AlertNotification] {
        observations.compactMap { evaluate($0, at: now, wallClock: wallClock) }
    }

    private mutating func evaluate(
        _ observation: Observation,
        at now: MonotonicTime,
        wallClock: Date
    ) -> AlertNotification? {
        let phase = phases[observation.kind] ?? .inactive
        switch (phase, observation.active) {
        case (.inactive, false):
            return nil
        case (.pending, false):
            phases[observation.kind] = .inactive
            return nil
        case (.inactive, true):
            phases[observation.kind] = .pending(since: now)
            return fireIfDue(observation, pendingSince: now, now: now, wallClock: wallClock)
        case (.pending(let since), true):
            return fireIfDue(observation, pendingSince: since, now: now, wallClock: wallClock)
        case (.firing(var notification, let lastSent, _), true):
            notification.value = observation.value
            notification.summary = observation.summary
            notification.cause = observation.cause ?? notification.cause
            return repeatIfDue(
                notification,
                kind: observation.kind,
                lastSent: lastSent,
                absentSince: nil,
                now: now,
                wallClock: wallClock
            )
        case (.firing(var notification, let lastSent, let absentSince), false):
            let absentSince = absentSince ?? now
            guard now - absentSince >= configuration.timings[observation.kind].keepFiringFor else {
                // Kept firing: still reminded, so a receiver does not let it lapse meanwhile.
                return repeatIfDue(
                    notification,
                    kind: observation.kind,
                    lastSent: lastSent,
                    absentSince: absentSince,
                    now: now,
                    wallClock: wallClock
                )
            }
            phases[observation.kind] = .inactive
            notification.status = .resolved
            notification.endsAt = wallClock
            notification.value = observation.value
            notification.summary = "Resolved: " + observation.summary
            notification.isRepeat = false
            return notification
        }
    }

    private mutating func repeatIfDue(
        _ notification: AlertNotification,
        kind: AlertKind,
        lastSent: MonotonicTime,
        absentSince: MonotonicTime?,
        now: MonotonicTime,
        wallClock: Date
    ) -> AlertNotification? {
        guard now - lastSent >= configuration.repeatInterval else {
            phases[kind] = .firing(notification: notification, lastSent: lastSent, absentSince: absentSince)
            return nil
        }
        var notification = notification
        notification.isRepeat = true
        notification.endsAt = validUntil(wallClock)
        phases[kind] = .firing(notification: notification, lastSent: now, absentSince: absentSince)
        return notification
    }

    private mutating func fireIfDue(
        _ observation: Observation,
        pendingSince: MonotonicTime,
        now: MonotonicTime,
        wallClock: Date
    ) -> AlertNotification? {
        guard now - pendingSince >= configuration.timings[observation.kind].for else { return nil }
        var labels = configuration.labels
        labels["alertname"] = observation.kind.rawValue
        let notification = AlertNotification(
            kind: observation.kind,
            fingerprint: ([observation.kind.rawValue]
                + configuration.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" })
                .joined(separator: "|"),
            status: .firing,
            severity: Self.severity(of: observation.kind),
            summary: observation.summary,
            value: observation.value,
            threshold: observation.threshold,
            startsAt: wallClock,
            endsAt: validUntil(wallClock),
            cause: observation.cause,
            labels: labels
        )
        phases[observation.kind] = .firing(notification: notification, lastSent: now, absentSince: nil)
        return notification
    }

    /// When a firing notice sent at `wallClock` lapses unless repeated.
    private func validUntil(_ wallClock: Date) -> Date {
        wallClock.addingTimeInterval(4 * configuration.repeatInterval.seconds)
    }

    static func severity(of kind: AlertKind) -> AlertSeverity {
        switch kind {
        case .circuitBreakerState, .healthScore, .databaseUnreachable: .critical
        case .poolUtilization, .slowQueries, .errorRate, .databaseFailedOver, .databaseOverloaded, .serverConnections:
            .warning
        }
    }
}
