import Foundation

/// The overall verdict of the last health check.
public enum HealthState: String, Sendable, Codable, CaseIterable {
    case healthy
    case degraded
    case unhealthy
}

/// The four checks of `/api/health`, each true when that part is fine.
public struct HealthChecks: Sendable, Codable, Equatable {
    public var connectivity: Bool
    public var queryPerformance: Bool
    public var poolHealth: Bool
    public var circuitBreakerState: Bool

    public init(connectivity: Bool, queryPerformance: Bool, poolHealth: Bool, circuitBreakerState: Bool) {
        self.connectivity = connectivity
        self.queryPerformance = queryPerformance
        self.poolHealth = poolHealth
        self.circuitBreakerState = circuitBreakerState
    }
}

/// What the health monitor knows, as of its last check. Reading it never touches the database.
public struct HealthStatus: Sendable, Equatable {
    public var state: HealthState
    /// 0-100; see `HealthScore` for the formula.
    public var score: Double
    public var checks: HealthChecks
    /// When the last check finished; nil before the first one.
    public var checkedAt: Date?
    /// How long the monitor has been running.
    public var uptime: Duration
    /// The pipeline, pool and breaker numbers at the last check.
    public var metrics: MetricsSnapshot
    /// Average query time and error rate over the last check interval (not since start).
    public var recentAverageQueryTime: Duration
    public var recentErrorRate: Double
    /// Alerts currently firing.
    public var activeAlerts: [AlertNotification]
    /// Why the last probe failed, secret-free.
    public var lastError: String?
    /// The server version the last successful probe reported.
    public var serverVersion: String?
    /// The server's connection slots at the last successful probe (the whole fleet's use).
    public var serverConnections: ServerConnections?

    public init(
        state: HealthState,
        score: Double,
        checks: HealthChecks,
        checkedAt: Date?,
        uptime: Duration,
        metrics: MetricsSnapshot,
        recentAverageQueryTime: Duration = .zero,
        recentErrorRate: Double = 0,
        activeAlerts: [AlertNotification] = [],
        lastError: String? = nil,
        serverVersion: String? = nil,
        serverConnections: ServerConnections? = nil
    ) {
        self.state = state
        self.score = score
        self.checks = checks
        self.checkedAt = checkedAt
        self.uptime = uptime
        self.metrics = metrics
        self.recentAverageQueryTime = recentAverageQueryTime
        self.recentErrorRate = recentErrorRate
        self.activeAlerts = activeAlerts
        self.lastError = lastError
        self.serverVersion = serverVersion
        self.serverConnections = serverConnections
    }
}
