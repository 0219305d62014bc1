import CoreMetrics
import Prometheus

/// A swift-metrics factory that registers ReliableDB's event metrics with their `# HELP` text.
///
/// swift-prometheus's own factory registers every metric with an empty help text, and a name may
/// only ever have one help text, so the text has to be given at registration: this factory looks
/// it up in ``helpTexts`` and delegates everything else (names it does not know, meters, value
/// recorders) to a `PrometheusMetricsFactory` on the same registry.
struct DocumentedMetricsFactory: MetricsFactory {
    /// HELP for every event metric ReliableDB records through swift-metrics.
    static let helpTexts: [String: String] = [
        "db_queries_successful_total": "Operations that succeeded, each counted once whatever its retries.",
        "db_queries_failed_total": "Operations that failed after their last attempt.",
        "db_queries_slow_total": "Operations slower than the slow-query threshold.",
        "db_timeouts_total": "Operations that ended at their deadline.",
        "db_retries_total": "Attempts made after a first attempt failed.",
        "db_errors_total": "Failed attempts by error class.",
        "db_circuit_breaker_calls_total": "Calls the circuit breaker saw, by outcome (not_permitted: rejected).",
        "db_degraded_answers_total":
            "Reads answered with an earlier result (a declared fallback) because the database failed them.",
        "db_operations_shed_total": "Operations answered at once as overloaded by the load-shedding limit; never sent.",
        "db_circuit_breaker_transitions_total": "Circuit breaker state changes, by the state entered.",
        "db_query_duration_seconds": "Operation duration including retries and backoff, by operation and outcome.",
        "db_pool_acquire_duration_seconds": "Time spent waiting for a pooled connection.",
        "db_consistency_reads_total":
            "Reads of read-your-writes sessions, by route: a standby that had replayed the session's position, the primary (none had in time), or the primary for a position of another history.",
        "db_consistency_wait_seconds": "Time reads of read-your-writes sessions waited for a standby's replay.",
        "db_connection_leaks_total":
            "Connection leases held past DB_LEAK_DETECTION_THRESHOLD (a leak, or slow work inside the operation), each counted once.",
        "db_alerts_sent_total": "Alert notifications the webhook receiver accepted.",
        "db_alerts_failed_total": "Alert notifications given up on after retries or a permanent error.",
        "db_alerts_dropped_total": "Alert notifications dropped from the full queue (the oldest first).",
        "db_alert_delivery_retries_total": "Alert delivery attempts after a first one failed.",
    ]

    let registry: PrometheusCollectorRegistry
    let fallback: PrometheusMetricsFactory
    let durationBuckets: [String: [Duration]]

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        guard let help = Self.helpTexts[label] else {
            return fallback.makeCounter(label: label, dimensions: dimensions)
        }
        return registry.makeCounter(descriptor: Self.descriptor(label, help), labels: dimensions)
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        guard let help = Self.helpTexts[label] else {
            return fallback.makeFloatingPointCounter(label: label, dimensions: dimensions)
        }
        return registry.makeCounter(descriptor: Self.descriptor(label, help), labels: dimensions)
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        fallback.makeRecorder(label: label, dimensions: dimensions, aggregate: aggregate)
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        fallback.makeMeter(label: label, dimensions: dimensions)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        guard let help = Self.helpTexts[label], let buckets = durationBuckets[label] else {
            return fallback.makeTimer(label: label, dimensions: dimensions)
        }
        return registry.makeDurationHistogram(
            descriptor: Self.descriptor(label, help),
            labels: dimensions,
            buckets: buckets
        )
    }

    /// The whole name in `metricName` (no namespace or unit parts are added).
    private static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    func destroyCounter(_ handler: any CounterHandler) { fallback.destroyCounter(handler) }
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        fallback.destroyFloatingPointCounter(handler)
    }
    func destroyRecorder(_ handler: any RecorderHandler) { fallback.destroyRecorder(handler) }
    func destroyMeter(_ handler: any MeterHandler) { fallback.destroyMeter(handler) }
    func destroyTimer(_ handler: any TimerHandler) { fallback.destroyTimer(handler) }
}
