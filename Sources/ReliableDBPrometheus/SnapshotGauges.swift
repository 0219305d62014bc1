import Prometheus
import ReliableDB

/// The gauges read from a ``ReliableDB/MetricsSnapshot``: the pool, query-time, breaker
/// and active-operation numbers, plus the pool's `waiting` and `max`.
///
/// They are registered once, when the exporter is created, so every family appears in every
/// scrape with a stable label set, even before the first query.
struct SnapshotGauges: Sendable {
    static let names = [
        "db_connections_total",
        "db_connections_active",
        "db_connections_idle",
        "db_connections_waiting",
        "db_connections_max",
        "db_pool_utilization_percent",
        "db_query_duration_avg_ms",
        "db_circuit_breaker_state",
        "db_circuit_breaker_failures",
        "db_operations_active",
    ]

    let connectionsTotal: Gauge
    let connectionsActive: Gauge
    let connectionsIdle: Gauge
    let connectionsWaiting: Gauge
    let connectionsMax: Gauge
    let poolUtilization: Gauge
    let averageQueryTime: Gauge
    let breakerState: BreakerStateGauges
    let breakerFailures: Gauge
    let operationsActive: Gauge

    init(registry: PrometheusCollectorRegistry) {
        connectionsTotal = registry.gauge("db_connections_total", help: "Open connections in the pool.")
        connectionsActive = registry.gauge("db_connections_active", help: "Connections lent out to an operation.")
        connectionsIdle = registry.gauge("db_connections_idle", help: "Open connections waiting for work.")
        connectionsWaiting = registry.gauge("db_connections_waiting", help: "Callers waiting for a connection.")
        connectionsMax = registry.gauge("db_connections_max", help: "The most connections the pool may open.")
        poolUtilization = registry.gauge(
            "db_pool_utilization_percent",
            help: "Active connections as a percentage of the pool's maximum."
        )
        averageQueryTime = registry.gauge(
            "db_query_duration_avg_ms",
            help: "Average operation duration since start, in milliseconds; see db_query_duration_seconds for rates."
        )
        breakerState = BreakerStateGauges(
            registry: registry,
            name: "db_circuit_breaker_state",
            help: "1 for the circuit breaker's current state, 0 for the others."
        )
        breakerFailures = registry.gauge(
            "db_circuit_breaker_failures",
            help: "Failures the circuit breaker counts towards opening in its current window."
        )
        operationsActive = registry.gauge("db_operations_active", help: "Operations currently in the pipeline.")
    }

    func set(from metrics: MetricsSnapshot) {
        let pool = metrics.pool
        connectionsTotal.setFinite(Double(pool.total))
        connectionsActive.setFinite(Double(pool.active))
        connectionsIdle.setFinite(Double(pool.idle))
        connectionsWaiting.setFinite(Double(pool.waiting))
        connectionsMax.setFinite(Double(pool.max))
        poolUtilization.setFinite(pool.utilization)
        averageQueryTime.setFinite(metrics.queries.averageQueryTime.milliseconds)
        breakerState.set(metrics.circuitBreaker.state)
        breakerFailures.setFinite(Double(metrics.circuitBreaker.failures))
        operationsActive.setFinite(Double(metrics.queries.activeOperations))
    }
}
