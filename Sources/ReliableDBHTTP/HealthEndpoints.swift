import Foundation
import ReliableDB
import ReliableDBPrometheus
import Synchronization

/// The four health endpoints as framework-neutral producers.
///
/// Every answer is built from cached state (the monitor's last check, in-process counters), so no
/// request ever queries the database: a burst of probes cannot add load to a struggling database,
/// and a database outage cannot make liveness fail (which would restart every pod). The
/// Hummingbird routes in ``HealthEndpoints/routes(context:)`` call these; other frameworks (Vapor)
/// can call them directly and copy status, content type and body into their own response.
public final class HealthEndpoints: Sendable {
    /// A framework-neutral HTTP answer.
    public struct Answer: Sendable, Equatable {
        public var status: Int
        public var contentType: String
        public var body: Data
        public var cacheControl: String = "no-store"
    }

    public let monitor: HealthMonitor
    public let exporter: PrometheusExporter
    public let readiness: Readiness
    private let snapshot: @Sendable () -> MetricsSnapshot
    private let breakerRejectsCalls: @Sendable () -> Bool
    private let standbyServesReads: @Sendable () -> Bool
    /// With `DB_READY_AFTER_WARM_UP`: whether the pool has held its minimum idle connections yet.
    private let warmedUp: @Sendable () -> Bool
    private let authToken: Secret<String>?

    /// - Parameter authToken: when set (`DB_HEALTH_AUTH_TOKEN`), `/api/health` shows its details
    ///   only to `Authorization: Bearer <token>` and the status alone to everyone else. By default
    ///   the token of the environment's configuration the database was built from
    ///   (``ReliableDB/ReliableDatabase/environmentConfiguration``), so a token set there is never
    ///   left off.
    public init<Backend: DatabaseBackend>(
        database: ReliableDatabase<Backend>,
        monitor: HealthMonitor,
        exporter: PrometheusExporter,
        readiness: Readiness = Readiness(),
        authToken: Secret<String>? = nil
    ) {
        self.monitor = monitor
        self.exporter = exporter
        self.readiness = readiness
        self.authToken = authToken ?? database.environmentConfiguration?.healthAuthToken
        snapshot = { database.metrics() }
        breakerRejectsCalls = { database.circuitBreaker.isRejectingCalls }
        standbyServesReads = { database.standbyServesReads }
        warmedUp = Self.warmUp(of: database)
    }

    /// True from the first time the pool holds `DB_MIN_IDLE_CONNECTIONS` open connections, when
    /// `DB_READY_AFTER_WARM_UP` asks readiness to wait for that; always true otherwise. Once warm,
    /// an instance stays ready by this rule: later dips are the breaker's and the probe's business.
    private static func warmUp<Backend: DatabaseBackend>(of database: ReliableDatabase<Backend>) -> @Sendable () -> Bool
    {
        guard let configuration = database.environmentConfiguration, configuration.readyAfterWarmUp,
            configuration.minIdleConnections > 0
        else { return { true } }
        let target = configuration.minIdleConnections
        let warm = Atomic<Bool>(false)
        return {
            if warm.load(ordering: .relaxed) { return true }
            let pool = database.raw.poolStatistics()
            guard pool.idle + pool.active >= target else { return false }
            warm.store(true, ordering: .relaxed)
            return true
        }
    }

    /// `GET /api/health`: 200 for healthy and degraded, 503 for unhealthy.
    public func health(authorization: String? = nil, accept: String? = nil, now: Date = Date()) -> Answer {
        let status = monitor.status
        let code = HealthReport.httpStatus(for: status.state)
        guard isAuthorized(authorization) else {
            let body: [String: String] = ["status": status.state.rawValue, "timestamp": HealthReport.format(now)]
            return Answer(status: code, contentType: "application/json", body: Self.encode(body))
        }
        if let accept, accept.contains("application/health+json") {
            return Answer(status: code, contentType: "application/health+json", body: IETFHealth.json(status, now: now))
        }
        return Answer(status: code, contentType: "application/json", body: HealthReport.json(status, now: now))
    }

    /// `GET /api/health/metrics`: always 200; a down database shows in the values.
    public func metrics() -> Answer {
        let text = exporter.render(metrics: snapshot(), health: monitor.configuration.enabled ? monitor.status : nil)
        return Answer(status: 200, contentType: PrometheusExporter.contentType, body: Data(text.utf8))
    }

    /// `GET /api/health/live`: the process answers, so it is alive. Never touches the database.
    public func live(now: Date = Date()) -> Answer {
        Answer(
            status: 200,
            contentType: "application/json",
            body: Self.encode(LiveBody(alive: true, timestamp: HealthReport.format(now)))
        )
    }

    /// `GET /api/health/ready`: 503 while draining, while the database is unreachable (or not
    /// checked yet), with `DB_READY_AFTER_WARM_UP` until the pool first holds its minimum idle
    /// connections, and while the circuit breaker rejects calls (open, until its timeout has
    /// elapsed: then traffic must come back for a call to close it), unless a standby serves reads
    /// meanwhile (``ReliableDB/ReliableDatabase/standbyServesReads``). A request that gets here
    /// proves the server is up, so a readiness still `starting` is marked serving: an app need not
    /// call ``Readiness/markServing()`` itself.
    public func ready(now: Date = Date()) -> Answer {
        readiness.markServing()
        let ready = isReady
        return Answer(
            status: ready ? 200 : 503,
            contentType: "application/json",
            body: Self.encode(ReadyBody(ready: ready, timestamp: HealthReport.format(now)))
        )
    }

    /// Whether traffic should be sent here now.
    public var isReady: Bool {
        guard readiness.phase == .serving, monitor.hasChecked, warmedUp() else { return false }
        if monitor.status.checks.connectivity, !breakerRejectsCalls() { return true }
        // The primary is gone, but a standby answers reads: the service still serves them.
        return standbyServesReads()
    }

    private func isAuthorized(_ authorization: String?) -> Bool {
        guard let authToken else { return true }
        guard let authorization, authorization.hasPrefix("Bearer ") else { return false }
        return constantTimeEquals(Array(authorization.dropFirst(7).utf8), Array(authToken.value.utf8))
    }

    private struct LiveBody: Encodable {
        var alive: Bool
        var timestamp: String
    }

    private struct ReadyBody: Encodable {
        var ready: Bool
        var timestamp: String
    }

    static func encode(_ value: some Encodable) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(value)) ?? Data("{}".utf8)
    }
}

/// Compares without an early exit, so response timing does not reveal how much of a token matched.
func constantTimeEquals(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
    guard lhs.count == rhs.count else { return false }
    var difference: UInt8 = 0
    for index in lhs.indices { difference |= lhs[index] ^ rhs[index] }
    return difference == 0
}

/// The IETF health-check response format (draft-inadarei-api-health-check), for `Accept:
/// application/health+json`.
enum IETFHealth {
    struct Check: Encodable {
        var status: String
        var observedValue: Double?
        var observedUnit: String?
        var time: String
    }

    struct Body: Encodable {
        var status: String
        var serviceId: String
        var description: String
        var checks: [String: [Check]]
    }

    static func json(_ status: HealthStatus, now: Date) -> Data {
        let time = HealthReport.format(status.checkedAt ?? now)
        func verdict(_ ok: Bool) -> String { ok ? "pass" : "fail" }
        let overall: String =
            switch status.state {
            case .healthy: "pass"
            case .degraded: "warn"
            case .unhealthy: "fail"
            }
        let body = Body(
            status: overall,
            serviceId: "reliabledb",
            description: "database health (score \(Int(status.score)))",
            checks: [
                "database:connectivity": [Check(status: verdict(status.checks.connectivity), time: time)],
                "database:responseTime": [
                    Check(
                        status: verdict(status.checks.queryPerformance),
                        observedValue: status.recentAverageQueryTime.milliseconds,
                        observedUnit: "ms",
                        time: time
                    )
                ],
                "database:poolUtilization": [
                    Check(
                        status: verdict(status.checks.poolHealth),
                        observedValue: status.metrics.pool.utilization,
                        observedUnit: "percent",
                        time: time
                    )
                ],
                "database:circuitBreaker": [Check(status: verdict(status.checks.circuitBreakerState), time: time)],
                // The live settings in force (Sources/ReliableDB/Documentation.docc/SettingsWithoutARestart.md).
                "database:connectionLimit": [
                    Check(
                        status: "pass",
                        observedValue: Double(status.metrics.pool.max),
                        observedUnit: "connections",
                        time: time
                    )
                ],
                "database:circuitBreakerFailureThreshold": [
                    Check(
                        status: "pass",
                        observedValue: Double(status.metrics.circuitBreaker.failureThreshold),
                        observedUnit: "failures",
                        time: time
                    )
                ],
            ]
        )
        return HealthEndpoints.encode(body)
    }
}
