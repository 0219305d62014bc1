import Foundation

/// What a health check saw, turned into the observations the alert engine decides on: pure
/// functions of the check's snapshot, so each threshold is testable without a monitor.
extension HealthMonitor {
    struct RecentWindow {
        var averageQueryTime: Duration
        var errorRate: Double
        /// Operations shed as overloaded since the previous check.
        var shed = 0
    }

    /// Average query time and error rate since the previous check, so a long-running service's
    /// lifetime averages do not hide a fresh problem.
    static func recentWindow(current: OperationMetricsSnapshot, previous: OperationMetricsSnapshot?) -> RecentWindow {
        let previousSuccesses = previous?.successfulQueries ?? 0
        let previousFailures = previous?.failedQueries ?? 0
        let previousCount = previousSuccesses + previousFailures
        let count = current.successfulQueries + current.failedQueries
        let newCalls = count - previousCount
        let shed = max(0, current.shedByLoadLimit - (previous?.shedByLoadLimit ?? 0))
        guard newCalls > 0 else { return RecentWindow(averageQueryTime: .zero, errorRate: 0, shed: shed) }
        let previousTotal = (previous?.averageQueryTime ?? .zero) * previousCount
        let total = current.averageQueryTime * count
        let average = max(.zero, (total - previousTotal) / newCalls)
        let newFailures = current.failedQueries - previousFailures
        return RecentWindow(
            averageQueryTime: average,
            errorRate: Double(newFailures) * 100 / Double(newCalls),
            shed: shed
        )
    }

    /// Firing while new connections go to a server other than the first configured.
    static func failoverObservation(_ servers: [ServerHealth]) -> AlertEngine.Observation {
        guard let current = servers.firstIndex(where: { $0.state == "current" }), current > 0 else {
            return AlertEngine.Observation(
                kind: .databaseFailedOver,
                active: false,
                value: 0,
                threshold: 0,
                summary: "Connections go to the first configured server"
            )
        }
        let server = servers[current]
        return AlertEngine.Observation(
            kind: .databaseFailedOver,
            active: true,
            value: 1,
            threshold: 0,
            summary: "Failed over: connections go to \(server.host) (\(server.role ?? "role unknown")),"
                + " not \(servers[0].host), the first configured"
        )
    }

    static func breakerObservation(_ state: CircuitState, server: String? = nil) -> AlertEngine.Observation {
        AlertEngine.Observation(
            kind: .circuitBreakerState,
            active: state != .closed && state != .disabled,
            value: state == .closed || state == .disabled ? 0 : 1,
            threshold: 0,
            summary: "Circuit breaker\(server.map { " of \($0)" } ?? "") is \(state.rawValue)"
        )
    }

    /// Firing while the server's connections in use, every instance's together, are above the
    /// threshold; quiet when the probe read none (SQLite, or the probe failed).
    static func serverConnectionsObservation(
        _ connections: ServerConnections?,
        threshold: Double
    ) -> AlertEngine.Observation {
        guard let connections else {
            return AlertEngine.Observation(
                kind: .serverConnections,
                active: false,
                value: 0,
                threshold: threshold,
                summary: "Server connections not measured"
            )
        }
        let utilization = connections.utilization
        return AlertEngine.Observation(
            kind: .serverConnections,
            active: utilization > threshold,
            value: utilization,
            threshold: threshold,
            summary: String(
                format: "Server connections %d of %d in use (%.0f%% of the %d ordinary clients get, threshold %.0f%%)",
                connections.inUse,
                connections.max,
                utilization,
                connections.max - connections.reserved,
                threshold
            )
        )
    }

    static func observations(
        verdict: HealthScore.Verdict,
        metrics: MetricsSnapshot,
        recent: RecentWindow,
        thresholds: AlertThresholds,
        probeError: String? = nil,
        serverConnections: ServerConnections? = nil
    ) -> [AlertEngine.Observation] {
        let utilization = metrics.pool.utilization
        let averageMs = recent.averageQueryTime.milliseconds
        return [
            .init(
                kind: .databaseUnreachable,
                active: probeError != nil,
                value: probeError == nil ? 0 : 1,
                threshold: 0,
                summary: probeError.map { "Database unreachable: \($0)" } ?? "Database reachable",
                cause: probeError
            ),
            breakerObservation(metrics.circuitBreaker.state, server: metrics.circuitBreaker.server),
            failoverObservation(metrics.servers),
            serverConnectionsObservation(serverConnections, threshold: thresholds.serverConnections),
            .init(
                kind: .databaseOverloaded,
                active: recent.shed > 0,
                value: Double(recent.shed),
                threshold: 0,
                summary: "\(recent.shed) operations shed as overloaded since the last check"
            ),
            .init(
                kind: .poolUtilization,
                active: utilization > thresholds.poolUtilization,
                value: utilization,
                threshold: thresholds.poolUtilization,
                summary: String(
                    format: "Pool utilization %.0f%% (threshold %.0f%%)",
                    utilization,
                    thresholds.poolUtilization
                )
            ),
            .init(
                kind: .slowQueries,
                active: recent.averageQueryTime > thresholds.queryTime,
                value: averageMs,
                threshold: thresholds.queryTime.milliseconds,
                summary: String(
                    format: "Average query time %.0f ms (threshold %.0f ms)",
                    averageMs,
                    thresholds.queryTime.milliseconds
                )
            ),
            .init(
                kind: .errorRate,
                active: recent.errorRate > thresholds.errorRate,
                value: recent.errorRate,
                threshold: thresholds.errorRate,
                summary: String(format: "Error rate %.1f%% (threshold %.1f%%)", recent.errorRate, thresholds.errorRate)
            ),
            .init(
                kind: .healthScore,
                active: verdict.score < thresholds.healthScore,
                value: verdict.score,
                threshold: thresholds.healthScore,
                summary: String(format: "Health score %.0f (threshold %.0f)", verdict.score, thresholds.healthScore)
            ),
        ]
    }
}
