import CoreMetrics

/// The event metrics the pipeline records as things happen, through swift-metrics.
///
/// Created once from the `MetricsFactory` the application passes in (never a hidden global), so a
/// test or an app controls where they go; ReliableDBPrometheus supplies a factory bound to a
/// Prometheus registry. Labels come from bounded sets only: outcome, error class, breaker state, and
/// an operation name only for the names listed in ``operationLabels``. Point-in-time values (pool
/// numbers, health score, breaker state) are gauges the exporter reads at scrape time instead.
public final class ReliabilityInstruments: Sendable {
    /// Operation names that get their own `operation` label on the duration histogram.
    public let operationLabels: Set<String>

    let successful: Counter
    let failed: Counter
    let slow: Counter
    let timeouts: Counter
    let retries: Counter
    let rejected: Counter
    let shed: Counter
    let degraded: Counter
    let errorsByClass: [ErrorClass: Counter]
    let durationSuccess: Timer
    let durationFailure: Timer
    let durationByOperation: [String: (success: Timer, failure: Timer)]
    let breakerCalls: [CircuitCallOutcome: Counter]
    let breakerTransitions: [CircuitState: Counter]
    /// Time spent waiting for a pooled connection; backends record it.
    public let poolAcquireDuration: Timer
    /// Reads of read-your-writes sessions, by where they went (`standby`: it had replayed the
    /// session's position; `primary`: no standby had in time; `other_history`: the position is
    /// of another cluster or timeline); backends with standbys record them.
    public let consistencyReads: [String: Counter]
    /// How long such reads waited for a standby's replay.
    public let consistencyWait: Timer
    /// Leases held past `DB_LEAK_DETECTION_THRESHOLD`, each counted once.
    let connectionLeaks: Counter

    public init(factory: any MetricsFactory, operationLabels: Set<String> = []) {
        self.operationLabels = operationLabels
        successful = Counter(label: "db_queries_successful_total", factory: factory)
        failed = Counter(label: "db_queries_failed_total", factory: factory)
        slow = Counter(label: "db_queries_slow_total", factory: factory)
        timeouts = Counter(label: "db_timeouts_total", factory: factory)
        retries = Counter(label: "db_retries_total", factory: factory)
        shed = Counter(label: "db_operations_shed_total", factory: factory)
        degraded = Counter(label: "db_degraded_answers_total", factory: factory)
        rejected = Counter(
            label: "db_circuit_breaker_calls_total",
            dimensions: [("outcome", "not_permitted")],
            factory: factory
        )
        var errors: [ErrorClass: Counter] = [:]
        for errorClass in ErrorClass.allCases {
            errors[errorClass] = Counter(
                label: "db_errors_total",
                dimensions: [("class", errorClass.rawValue)],
                factory: factory
            )
        }
        errorsByClass = errors
        durationSuccess = Timer(
            label: "db_query_duration_seconds",
            dimensions: [("operation", "all"), ("outcome", "success")],
            factory: factory
        )
        durationFailure = Timer(
            label: "db_query_duration_seconds",
            dimensions: [("operation", "all"), ("outcome", "failure")],
            factory: factory
        )
        var byOperation: [String: (Timer, Timer)] = [:]
        for name in operationLabels {
            byOperation[name] = (
                Timer(
                    label: "db_query_duration_seconds",
                    dimensions: [("operation", name), ("outcome", "success")],
                    factory: factory
                ),
                Timer(
                    label: "db_query_duration_seconds",
                    dimensions: [("operation", name), ("outcome", "failure")],
                    factory: factory
                )
            )
        }
        durationByOperation = byOperation
        var calls: [CircuitCallOutcome: Counter] = [:]
        for (outcome, label) in [
            (CircuitCallOutcome.success, "successful"), (.failure, "failed"), (.ignored, "ignored"),
        ] {
            calls[outcome] = Counter(
                label: "db_circuit_breaker_calls_total",
                dimensions: [("outcome", label)],
                factory: factory
            )
        }
        breakerCalls = calls
        var transitions: [CircuitState: Counter] = [:]
        for state in CircuitState.allCases {
            transitions[state] = Counter(
                label: "db_circuit_breaker_transitions_total",
                dimensions: [("to", state.rawValue)],
                factory: factory
            )
        }
        breakerTransitions = transitions
        poolAcquireDuration = Timer(label: "db_pool_acquire_duration_seconds", factory: factory)
        var consistency: [String: Counter] = [:]
        for route in ["standby", "primary", "other_history"] {
            consistency[route] = Counter(
                label: "db_consistency_reads_total",
                dimensions: [("route", route)],
                factory: factory
            )
        }
        consistencyReads = consistency
        consistencyWait = Timer(label: "db_consistency_wait_seconds", factory: factory)
        connectionLeaks = Counter(label: "db_connection_leaks_total", factory: factory)
    }

    /// A backend found a lease held past its leak detection threshold.
    public func recordConnectionLeak() {
        connectionLeaks.increment()
    }

    func recordFinished(
        _ name: String,
        duration: Duration,
        outcome: OperationMetricsRecorder.Outcome,
        slowThreshold: Duration
    ) {
        let nanoseconds = duration.nanosecondsClamped
        let labelled = durationByOperation.isEmpty ? nil : durationByOperation[name]
        switch outcome {
        case .success:
            successful.increment()
            durationSuccess.recordNanoseconds(nanoseconds)
            labelled?.success.recordNanoseconds(nanoseconds)
        case .failure(let errorClass):
            failed.increment()
            errorsByClass[errorClass]?.increment()
            if errorClass == .timeout { timeouts.increment() }
            durationFailure.recordNanoseconds(nanoseconds)
            labelled?.failure.recordNanoseconds(nanoseconds)
        case .rejected:
            rejected.increment()
            return
        case .shed:
            shed.increment()
            return
        }
        if duration > slowThreshold { slow.increment() }
    }

    func recordDegraded() {
        degraded.increment()
    }

    func recordBreakerCall(_ outcome: CircuitCallOutcome) {
        breakerCalls[outcome]?.increment()
    }

    func recordTransition(_ transition: CircuitTransition) {
        breakerTransitions[transition.to]?.increment()
    }

    func recordRetry() {
        retries.increment()
    }
}
