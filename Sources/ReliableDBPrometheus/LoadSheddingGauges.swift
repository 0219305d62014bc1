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
