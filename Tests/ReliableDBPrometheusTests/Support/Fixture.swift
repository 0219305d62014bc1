import Foundation
import Prometheus
import ReliableDB
import ReliableDBPrometheus
import ReliableDBTesting

/// One exporter on its own registry, instruments bound to it, and a database on a test backend
/// and a manual clock, so every duration the pipeline measures is the one the test chose.
struct Fixture {
    static let operationName = "get-users"

    let registry = PrometheusCollectorRegistry()
    let exporter: PrometheusExporter
    let instruments: ReliabilityInstruments
    let backend: ScriptedBackend
    let clock = ManualClock()
    let db: ReliableDatabase<ScriptedBackend>

    init(
        pool: PoolStatistics = PoolStatistics(max: 1),
        breaker: CircuitBreakerConfiguration = .init(),
        loadShedding: LoadSheddingConfiguration = .disabled,
        standbyReads: StandbyReads = .unavailable
    ) {
        exporter = PrometheusExporter(registry: registry)
        instruments = ReliabilityInstruments(factory: exporter.metricsFactory, operationLabels: [Self.operationName])
        backend = ScriptedBackend(pool: pool)
        backend.standbyReads = standbyReads
        db = try! ReliableDatabase(
            backend: backend,
            configuration: ReliabilityConfiguration(
                circuitBreaker: breaker,
                timeouts: .init(enabled: false),
                loadShedding: loadShedding
            ),
            clock: clock,
            instruments: instruments,
            jitterSeed: 42
        )
    }

    /// Runs one successful operation that takes `duration` on the manual clock.
    func succeed(_ name: String = Self.operationName, taking duration: Duration = .milliseconds(3)) async throws {
        let clock = clock
        _ = try await db.execute(OperationOptions(name)) { _ in
            clock.advance(by: duration)
            return 1
        }
    }

    /// Runs one operation that fails with `error` after `duration`, and returns what the caller saw.
    @discardableResult
    func fail(
        _ name: String = Self.operationName,
        with error: ClassifiedError,
        taking duration: Duration = .milliseconds(20)
    ) async -> (any Error)? {
        let clock = clock
        do {
            _ = try await db.execute(OperationOptions(name)) { _ -> Int in
                clock.advance(by: duration)
                throw error
            }
            return nil
        } catch {
            return error
        }
    }

    /// A health status as the monitor would report it for the current snapshot.
    func health(state: HealthState, score: Double, connected: Bool) -> HealthStatus {
        HealthStatus(
            state: state,
            score: score,
            checks: HealthChecks(
                connectivity: connected,
                queryPerformance: true,
                poolHealth: true,
                circuitBreakerState: state != .unhealthy
            ),
            checkedAt: Date(),
            uptime: .seconds(30),
            metrics: db.metrics()
        )
    }

    /// Renders and parses with the strict checker; a format error fails the calling test.
    func scrape(health: HealthStatus? = nil) throws -> Exposition {
        try Exposition(parsing: exporter.render(metrics: db.metrics(), health: health))
    }
}

/// A caller error: never retried, never counted against the breaker.
let callerError = ClassifiedError(errorClass: .caller)
/// A connection error after the request may have reached the server: counts against the breaker
/// and, the operation not being idempotent, is not retried.
let connectionError = ClassifiedError(errorClass: .connection, mayHaveReachedServer: true)
