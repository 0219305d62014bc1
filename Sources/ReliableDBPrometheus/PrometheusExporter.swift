import CoreMetrics
import Prometheus
import ReliableDB
import Synchronization

/// Exports ReliableDB's metrics in the Prometheus text format 0.0.4 (served at
/// `/api/health/metrics`).
///
/// Two kinds of numbers end up in one registry:
/// - **Events** (queries, failures, timeouts, retries, breaker calls and transitions, durations)
///   are counted in the hot path by ``ReliableDB/ReliabilityInstruments`` through swift-metrics.
///   Hand it ``metricsFactory`` so they land in this exporter's registry:
///   `ReliabilityInstruments(factory: exporter.metricsFactory)`.
/// - **Points in time** (pool numbers, average query time, breaker state, health) are gauges this
///   exporter owns and sets from a ``ReliableDB/MetricsSnapshot`` and a
///   ``ReliableDB/HealthStatus`` at the moment of a scrape, so a scrape never runs a query and the
///   hot path never updates a gauge.
///
/// The registry is passed in, never a hidden global, so a test or an application decides what
/// else is exported next to these metrics and no two tests share state.
///
/// swift-prometheus stops the process (`fatalError`) when one metric name is registered with two
/// help texts, two types, two bucket layouts, or both with and without labels. So: create Timers
/// for `db_query_duration_seconds`, `db_pool_acquire_duration_seconds` and
/// `db_consistency_wait_seconds` only through
/// ``metricsFactory`` (its buckets are ``durationBuckets``), and do not register the gauge names
/// this exporter owns (see ``ownedMetricNames``) anywhere else.
public final class PrometheusExporter: Sendable {
    /// The `Content-Type` of ``render(metrics:health:)``'s output.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// Upper bounds, in seconds, of the duration histograms: 0.5 ms to 10 s.
    ///
    /// swift-prometheus's default starts at 5 ms, which puts every healthy SQLite query and every
    /// uncontended pool acquisition into its first bucket; these resolve sub-millisecond work and
    /// still cover the 10 s default query timeout.
    public static let durationBuckets: [Duration] = [
        .microseconds(500),
        .milliseconds(1),
        .microseconds(2500),
        .milliseconds(5),
        .milliseconds(10),
        .milliseconds(25),
        .milliseconds(50),
        .milliseconds(100),
        .milliseconds(250),
        .milliseconds(500),
        .seconds(1),
        .milliseconds(2500),
        .seconds(5),
        .seconds(10),
    ]

    /// The Timer labels that get ``durationBuckets``.
    public static let durationHistogramNames = [
        "db_query_duration_seconds", "db_pool_acquire_duration_seconds", "db_consistency_wait_seconds",
    ]

    /// The gauge families this exporter registers itself, with help texts.
    public static var ownedMetricNames: [String] {
        SnapshotGauges.names + HealthGauges.names + LoadSheddingGauges.names + ServerGauges.names
            + ServerConnectionGauges.names + [BreakerStateGauges.standbyName]
    }

    /// Where every metric of this exporter lives; ``render(metrics:health:)`` emits all of it,
    /// including metrics other modules registered through ``metricsFactory``.
    public let registry: PrometheusCollectorRegistry

    /// A swift-metrics factory bound to ``registry``, with ``durationBuckets`` for the duration
    /// histograms and HELP text for ReliableDB's metrics. Pass it to
    /// `ReliabilityInstruments(factory:)` and to any other module that records through
    /// swift-metrics (the webhook's alert counters).
    public let metricsFactory: any MetricsFactory

    private let snapshotGauges: SnapshotGauges
    /// The health gauges while a health status is being reported, nil otherwise. The mutex also
    /// serializes whole renders, so concurrent scrapes each emit the gauges they set.
    private let healthGauges = Mutex<HealthGauges?>(nil)
    /// Registered at the first render whose database sheds load; absent otherwise.
    private let loadSheddingGauges = Mutex<LoadSheddingGauges?>(nil)
    /// Registered at the first render that lists servers (a multi-host URL).
    private let serverGauges = Mutex<ServerGauges?>(nil)
    /// Registered at the first render whose health status has the server's connection figures.
    private let serverConnectionGauges = Mutex<ServerConnectionGauges?>(nil)
    /// Registered at the first render whose database has a standby's breaker.
    private let standbyBreakerGauges = Mutex<BreakerStateGauges?>(nil)

    /// - Parameter registry: the registry to export; the application owns it and may register
    ///   its own metrics there too.
    public init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        for name in Self.durationHistogramNames {
            factory.durationHistogramBuckets[name] = Self.durationBuckets
        }
        metricsFactory = DocumentedMetricsFactory(
            registry: registry,
            fallback: factory,
            durationBuckets: factory.durationHistogramBuckets
        )
        snapshotGauges = SnapshotGauges(registry: registry)
    }

    /// Sets the point-in-time gauges from `metrics` and `health`, then returns the whole registry
    /// in the text format 0.0.4.
    ///
    /// - Parameters:
    ///   - metrics: `db.metrics()`, read just before the call.
    ///   - health: the monitor's cached status; nil when monitoring is off (`DB_MONITORING=false`).
    ///     Then `db_health_score`, `db_health_status` and `db_up` are left out of the output
    ///     (removed if an earlier render had them) rather than reported as a made-up value, so
    ///     `absent(db_health_score)` tells an operator monitoring is off.
    public func render(metrics: MetricsSnapshot, health: HealthStatus?) -> String {
        var buffer: [UInt8] = []
        render(metrics: metrics, health: health, into: &buffer)
        return String(decoding: buffer, as: UTF8.self)
    }

    /// Like ``render(metrics:health:)``, appending UTF-8 bytes to `buffer`, so a server can reuse
    /// one buffer across scrapes.
    public func render(metrics: MetricsSnapshot, health: HealthStatus?, into buffer: inout [UInt8]) {
        if !metrics.servers.isEmpty {
            serverGauges.withLock { gauges in
                if gauges == nil { gauges = ServerGauges(registry: registry, hosts: metrics.servers.map(\.host)) }
                gauges?.set(from: metrics.servers, breakerServer: metrics.circuitBreaker.server)
            }
        }
        if let standbyBreaker = metrics.standbyCircuitBreaker {
            standbyBreakerGauges.withLock { gauges in
                if gauges == nil {
                    gauges = BreakerStateGauges(
                        registry: registry,
                        name: BreakerStateGauges.standbyName,
                        help: "1 for the current state of the breaker of reads on standbys, 0 for the others."
                    )
                }
                gauges?.set(standbyBreaker.state)
            }
        }
        if let connections = health?.serverConnections {
            serverConnectionGauges.withLock { gauges in
                if gauges == nil { gauges = ServerConnectionGauges(registry: registry) }
                gauges?.set(from: connections)
            }
        }
        if let shedding = metrics.loadShedding {
            loadSheddingGauges.withLock { gauges in
                if gauges == nil { gauges = LoadSheddingGauges(registry: registry) }
                gauges?.set(from: shedding)
            }
        }
        healthGauges.withLock { healthGauges in
            snapshotGauges.set(from: metrics)
            if let health {
                if healthGauges == nil {
                    healthGauges = HealthGauges(registry: registry)
                }
                healthGauges?.set(from: health)
            } else if let stale = healthGauges {
                stale.unregister(from: registry)
                healthGauges = nil
            }
            registry.emit(into: &buffer)
        }
    }
}
