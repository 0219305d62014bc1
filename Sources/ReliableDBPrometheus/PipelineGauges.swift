// Gauges the exporter registers only when the database uses the feature: load shedding, several servers,
// a standby's breaker.
import Prometheus
import ReliableDB

/// The load shedder's point-in-time numbers. The count of shed operations is the counter
/// `db_operations_shed_total`, recorded as it happens.
struct LoadSheddingGauges: Sendable {
    static let names = ["db_load_shedding_limit", "db_load_shedding_in_flight", "db_load_shedding_waiting"]

    let limit: Gauge
    let inFlight: Gauge
    let waiting: Gauge

    init(registry: PrometheusCollectorRegistry) {
        limit = registry.gauge(
            "db_load_shedding_limit",
            help: "Operations the load-shedding limit lets in flight now (adaptive, at most its maximum)."
        )
        inFlight = registry.gauge("db_load_shedding_in_flight", help: "Operations holding a load-shedding slot.")
        waiting = registry.gauge("db_load_shedding_waiting", help: "Callers waiting for a load-shedding slot.")
    }

    func set(from snapshot: LoadSheddingSnapshot) {
        limit.set(Double(snapshot.limit))
        inFlight.set(Double(snapshot.inFlight))
        waiting.set(Double(snapshot.waiting))
    }
}

/// Per server of a multi-host configuration, labelled `host` (`host:port` as configured, so the
/// label's values are bounded by the configuration): `db_host_up` is 0 while the walk skips the
/// server as failing, `db_host_current` is 1 for the server new connections go to, and
/// `db_circuit_breaker_server` is 1 for the server the primary's breaker state is about (it starts
/// CLOSED for a new one, Sources/ReliableDB/Documentation.docc/Breaker.md).
struct ServerGauges: Sendable {
    static let names = ["db_host_up", "db_host_current", "db_circuit_breaker_server"]

    let up: [String: Gauge]
    let current: [String: Gauge]
    let breaker: [String: Gauge]

    init(registry: PrometheusCollectorRegistry, hosts: [String]) {
        var up: [String: Gauge] = [:]
        var current: [String: Gauge] = [:]
        var breaker: [String: Gauge] = [:]
        for host in hosts {
            breaker[host] = registry.gauge(
                "db_circuit_breaker_server",
                labels: [("host", host)],
                help: "1 for the server the circuit breaker's state is about (multi-host URLs)."
            )
            up[host] = registry.gauge(
                "db_host_up",
                labels: [("host", host)],
                help: "1 unless new connections skip this server as failing (multi-host URLs)."
            )
            current[host] = registry.gauge(
                "db_host_current",
                labels: [("host", host)],
                help: "1 for the server new connections go to (multi-host URLs with target_session_attrs)."
            )
        }
        self.up = up
        self.current = current
        self.breaker = breaker
    }

    func set(from servers: [ServerHealth], breakerServer: String?) {
        for server in servers {
            up[server.host]?.set(to: server.state == "ejected" ? 0.0 : 1.0)
            current[server.host]?.set(to: server.state == "current" ? 1.0 : 0.0)
            breaker[server.host]?.set(to: server.host == breakerServer ? 1.0 : 0.0)
        }
    }
}

/// A breaker's state as one series per state, labelled `value`, 1 for the current one:
/// `db_circuit_breaker_state{value="CLOSED"} 1` for the primary's breaker, and
/// `db_standby_circuit_breaker_state` for the breaker of reads on standbys
/// (``ReliableDB/ReliableDatabase/standbyCircuitBreaker``), registered when there is one.
struct BreakerStateGauges: Sendable {
    static let standbyName = "db_standby_circuit_breaker_state"

    let series: [(state: CircuitState, gauge: Gauge)]

    init(registry: PrometheusCollectorRegistry, name: String, help: String) {
        series = CircuitState.allCases.map { state in
            (state, registry.gauge(name, labels: [("value", state.rawValue)], help: help))
        }
    }

    func set(_ current: CircuitState) {
        for (state, gauge) in series { gauge.set(to: state == current ? 1.0 : 0.0) }
    }
}
