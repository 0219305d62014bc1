import Prometheus
import ReliableDB

/// The gauges read from the health monitor's ``ReliableDB/HealthStatus``.
///
/// Registered only while a status is reported: with monitoring off there is no score to export,
/// and a family that is absent is more honest than one stuck at its last value.
struct HealthGauges: Sendable {
    static let names = ["db_health_score", "db_health_status", "db_up"]

    let score: Gauge
    /// One series per state, 1 for the current one, so `db_health_status{state="unhealthy"} == 1`
    /// is an alert rule.
    let status: [(state: HealthState, gauge: Gauge)]
    let up: Gauge

    init(registry: PrometheusCollectorRegistry) {
        score = registry.gauge("db_health_score", help: "Health score of the last check, 0 to 100.")
        status = HealthState.allCases.map { state in
            (
                state,
                registry.gauge(
                    "db_health_status",
                    labels: [("state", state.rawValue)],
                    help: "1 for the health state of the last check, 0 for the others."
                )
            )
        }
        up = registry.gauge("db_up", help: "1 when the last health check reached the database, else 0.")
    }

    func set(from health: HealthStatus) {
        score.setFinite(health.score)
        for (state, gauge) in status {
            gauge.setFinite(state == health.state ? 1 : 0)
        }
        up.setFinite(health.checks.connectivity ? 1 : 0)
    }

    func unregister(from registry: PrometheusCollectorRegistry) {
        registry.unregisterGauge(score)
        for (_, gauge) in status {
            registry.unregisterGauge(gauge)
        }
        registry.unregisterGauge(up)
    }
}

/// The server's connections in use by all its clients against its limit, from the health
/// monitor's last successful probe: `db_server_connections_in_use / db_server_connections_max`
/// is the whole fleet's share of `max_connections`, which no instance's own pool shows. Registered
/// at the first status that has the figures (not for an embedded database).
struct ServerConnectionGauges: Sendable {
    static let names = ["db_server_connections_in_use", "db_server_connections_max"]

    let inUse: Gauge
    let max: Gauge

    init(registry: PrometheusCollectorRegistry) {
        inUse = registry.gauge(
            "db_server_connections_in_use",
            help: "Client connections open on the database server, from every client, at the last health check."
        )
        max = registry.gauge(
            "db_server_connections_max",
            help: "Connections the database server's ordinary clients may open (max_connections minus reserved)."
        )
    }

    func set(from connections: ServerConnections) {
        inUse.set(Double(connections.inUse))
        max.set(Double(connections.max - connections.reserved))
    }
}
