import Foundation

/// The conditions an alert is raised for.
public enum AlertKind: String, Sendable, CaseIterable, Codable {
    /// The circuit breaker left CLOSED (fires at once) or has been back in it for its
    /// `keepFiringFor` (resolves).
    case circuitBreakerState = "circuit_breaker_state"
    /// Pool utilization above `DB_ALERT_POOL_UTILIZATION_THRESHOLD`.
    case poolUtilization = "pool_utilization"
    /// Average query time above `DB_ALERT_QUERY_TIME_THRESHOLD`.
    case slowQueries = "slow_queries"
    /// Error rate above `DB_ALERT_ERROR_RATE_THRESHOLD`.
    case errorRate = "error_rate"
    /// Health score below `DB_ALERT_HEALTH_SCORE_THRESHOLD`.
    case healthScore = "health_score"
    /// The health probe failed: the database cannot be reached or does not answer. Carries the
    /// cause (refused, timed out, authentication, TLS, DNS), and fires without any traffic.
    case databaseUnreachable = "database_unreachable"
    /// With several servers: connections go to a server other than the first configured one (a
    /// failover happened; the old primary needs rebuilding as a standby). Resolves when they have
    /// been back on the first for its `keepFiringFor`.
    case databaseFailedOver = "database_failed_over"
    /// The load-shedding limit shed operations since the last check.
    case databaseOverloaded = "database_overloaded"
    /// The server's connections in use (all instances together) above
    /// `DB_ALERT_SERVER_CONNECTIONS_THRESHOLD` percent of `max_connections`: soon new connections
    /// are refused (53300), first for the instances that need one.
    case serverConnections = "server_connections"
}

/// The payload shape of alert webhooks (`DB_ALERT_WEBHOOK_FORMAT`).
@available(*, deprecated, message: "Use WebhookFormat from ReliableDBWebhook, which posts the payloads")
public enum AlertWebhookFormat: String, Sendable, CaseIterable {
    /// A Slack incoming-webhook message (the default).
    case slack
    /// An Alertmanager API v2 `POST /api/v2/alerts` body.
    case alertmanager
}

public enum AlertSeverity: String, Sendable, Codable {
    case warning
    case critical
}

public enum AlertStatus: String, Sendable, Codable {
    case firing
    case resolved
}

/// One message about one alert: it started firing, is still firing (a repeat), or resolved.
public struct AlertNotification: Sendable, Codable, Equatable {
    public var kind: AlertKind
    /// Identifies the alert across its notifications; receivers deduplicate on it.
    public var fingerprint: String
    public var status: AlertStatus
    public var severity: AlertSeverity
    /// One line a person can act on, e.g. "Pool utilization 92% is above 80%".
    public var summary: String
    /// The observed value and the threshold it crossed, in the kind's unit (%, ms, score).
    public var value: Double
    public var threshold: Double
    public var startsAt: Date
    /// Resolved: when it resolved. Firing: when this notice lapses unless it is repeated (four
    /// repeat intervals ahead, as Prometheus sets it), so a receiver that stops hearing from a
    /// crashed service ends the alert itself rather than keeping it forever.
    public var endsAt: Date?
    /// What went wrong, in plain words (the probe's error for `database_unreachable`).
    public var cause: String?
    /// True for the reminders sent while an alert keeps firing.
    public var isRepeat: Bool
    /// Low-cardinality context: `service`, `backend`.
    public var labels: [String: String]

    public init(
        kind: AlertKind,
        fingerprint: String,
        status: AlertStatus,
        severity: AlertSeverity,
        summary: String,
        value: Double,
        threshold: Double,
        startsAt: Date,
        endsAt: Date? = nil,
        cause: String? = nil,
        isRepeat: Bool = false,
        labels: [String: String] = [:]
    ) {
        self.kind = kind
        self.fingerprint = fingerprint
        self.status = status
        self.severity = severity
        self.summary = summary
        self.value = value
        self.threshold = threshold
        self.startsAt = startsAt
        self.endsAt = endsAt
        self.cause = cause
        self.isRepeat = isRepeat
        self.labels = labels
    }
}

/// Where alert notifications go. `deliver` must return at once (queue, then send in the
/// background): it is called from the health monitor and must never hold up a query.
public protocol AlertSink: Sendable {
    func deliver(_ notification: AlertNotification)

    /// How often this receiver needs a firing alert sent again to keep it, if it expires alerts:
    /// Alertmanager ends an alert at its `endsAt`, four repeats ahead, so its sink asks for a
    /// minute. The monitor repeats at the shortest interval any of its sinks asks for, or at
    /// ``AlertConfiguration/repeatInterval`` when that is shorter. Nil (the default): no need.
    var repeatInterval: Duration? { get }
}

extension AlertSink {
    /// No need: the monitor's ``AlertConfiguration/repeatInterval`` applies.
    public var repeatInterval: Duration? { nil }
}
