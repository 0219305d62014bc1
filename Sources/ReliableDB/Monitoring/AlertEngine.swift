import Foundation

/// Turns what each health check observed into alert notifications: pending → firing → resolved,
/// one incident per alert kind (deduplicated by fingerprint), repeated while it keeps firing.
///
/// A pure value: time comes in as arguments, notifications come out; the monitor delivers them.
public struct AlertEngine: Sendable {
    public struct Configuration: Sendable, Equatable {
        /// How long a condition must hold before the alert fires (0: at the first check).
        public var pendingFor: Duration
        /// How often a firing alert is sent again. A firing notice is valid for four of these
        /// (its `endsAt`); for Alertmanager keep it well inside `resolve_timeout`'s scale (a
        /// minute, as Prometheus re-sends), for chat an hour.
        public var repeatInterval: Duration
        /// Added to every notification (`service`, `backend`).
        public var labels: [String: String]

        public init(
            pendingFor: Duration = .zero,
            repeatInterval: Duration = .seconds(3600),
            labels: [String: String] = [:]
        ) {
            self.pendingFor = pendingFor
            self.repeatInterval = repeatInterval
            self.labels = labels
        }
    }

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
        case firing(notification: AlertNotification, lastSent: MonotonicTime)
    }

    public let configuration: Configuration
    private var phases: [AlertKind: Phase] = [:]

    public init(configuration: Configuration = .init()) {
        self.configuration = configuration
    }

    /// The alerts firing now, with their latest values.
    public var firing: [AlertNotification] {
        AlertKind.allCases.compactMap { kind in
            if case .firing(let notification, _) = phases[kind] { return notification }
            return nil
        }
    }

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
        case (.firing(var notification, let lastSent), true):
            notification.value = observation.value
            notification.summary = observation.summary
            notification.cause = observation.cause ?? notification.cause
            guard now - lastSent >= configuration.repeatInterval else {
                phases[observation.kind] = .firing(notification: notification, lastSent: lastSent)
                return nil
            }
            notification.isRepeat = true
            notification.endsAt = validUntil(wallClock)
            phases[observation.kind] = .firing(notification: notification, lastSent: now)
            return notification
        case (.firing(var notification, _), false):
            phases[observation.kind] = .inactive
            notification.status = .resolved
            notification.endsAt = wallClock
            notification.value = observation.value
            notification.summary = "Resolved: " + observation.summary
            notification.isRepeat = false
            return notification
        }
    }

    private mutating func fireIfDue(
        _ observation: Observation,
        pendingSince: MonotonicTime,
        now: MonotonicTime,
        wallClock: Date
    ) -> AlertNotification? {
        guard now - pendingSince >= configuration.pendingFor else { return nil }
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
        phases[observation.kind] = .firing(notification: notification, lastSent: now)
        return notification
    }

    /// When a firing notice sent at `wallClock` lapses unless repeated.
    private func validUntil(_ wallClock: Date) -> Date {
        wallClock.addingTimeInterval(4 * configuration.repeatInterval.seconds)
    }

    static func severity(of kind: AlertKind) -> AlertSeverity {
        switch kind {
        case .circuitBreakerState, .healthScore, .databaseUnreachable: .critical
        case .poolUtilization, .slowQueries, .errorRate, .databaseFailedOver, .databaseOverloaded: .warning
        }
    }
}
