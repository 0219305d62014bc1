import Foundation

/// The `/api/health` JSON document: milliseconds for times, percent for utilization and error
/// rate.
///
/// Built from a cached ``HealthStatus``, so producing it never queries the database. Frameworks
/// other than Hummingbird (Vapor, plain SwiftNIO) serve ``HealthReport/json(_:now:)`` as is.
public struct HealthReport: Codable, Sendable, Equatable {
    public struct ConnectionPool: Codable, Sendable, Equatable {
        public var total: Int
        public var active: Int
        public var idle: Int
        public var utilization: Double
    }

    public struct Performance: Codable, Sendable, Equatable {
        /// Milliseconds.
        public var averageQueryTime: Double
        public var slowQueries: Int
        public var successfulQueries: Int
        public var failedQueries: Int
        /// Percent.
        public var errorRate: Double
    }

    public struct CircuitBreakerReport: Codable, Sendable, Equatable {
        public var state: String
        public var failures: Int
        public var successes: Int
        public var requests: Int
        /// The server (`host:port`) the state is about; absent for an embedded database.
        public var server: String?

        init(_ breaker: CircuitBreakerMetrics) {
            state = breaker.state.rawValue
            failures = breaker.failures
            successes = breaker.successes
            requests = breaker.requests
            server = breaker.server
        }
    }

    public struct Reliability: Codable, Sendable, Equatable {
        public var circuitBreaker: CircuitBreakerReport
        /// The breaker of reads on standbys; absent with one server.
        public var standbyCircuitBreaker: CircuitBreakerReport?
        public var activeOperations: Int
        public var timeouts: Int
        /// The load-shedding limit, what is in flight and waiting, and how many were shed; absent
        /// when load shedding is off.
        public var loadShedding: LoadSheddingSnapshot?
    }

    public struct Database: Codable, Sendable, Equatable {
        public var connected: Bool
        public var connectionPool: ConnectionPool
        public var performance: Performance
        public var reliability: Reliability
        /// With several servers: each one's role and state; absent with one server.
        public var hosts: [ServerHealth]?
        /// The server's connections in use by every client against its limit, at the last
        /// successful probe; absent for an embedded database.
        public var serverConnections: ServerConnectionsReport?
    }

    public struct ServerConnectionsReport: Codable, Sendable, Equatable {
        public var inUse: Int
        public var max: Int
        public var reserved: Int
        /// Percent of the slots ordinary clients get (`max - reserved`).
        public var utilization: Double
    }

    public struct Alert: Codable, Sendable, Equatable {
        public var type: String
        public var severity: String
        public var message: String
        public var value: Double
        public var threshold: Double
        public var since: String
    }

    public var status: String
    public var timestamp: String
    /// Milliseconds since the monitor started.
    public var uptime: Int64
    public var database: Database
    public var checks: HealthChecks
    public var alerts: [Alert]

    public init(_ status: HealthStatus, now: Date = Date()) {
        let metrics = status.metrics
        let pool = metrics.pool
        let breaker = metrics.circuitBreaker
        self.status = status.state.rawValue
        timestamp = Self.format(now)
        uptime = Int64(status.uptime.milliseconds.rounded())
        database = Database(
            connected: status.checks.connectivity,
            connectionPool: ConnectionPool(
                total: pool.total,
                active: pool.active,
                idle: pool.idle,
                utilization: Self.round(pool.utilization)
            ),
            performance: Performance(
                averageQueryTime: Self.round(metrics.averageQueryTime.milliseconds),
                slowQueries: metrics.slowQueries,
                successfulQueries: metrics.successfulQueries,
                failedQueries: metrics.failedQueries,
                errorRate: Self.round(metrics.errorRate)
            ),
            reliability: Reliability(
                circuitBreaker: CircuitBreakerReport(breaker),
                standbyCircuitBreaker: metrics.standbyCircuitBreaker.map(CircuitBreakerReport.init),
                activeOperations: metrics.activeOperations,
                timeouts: metrics.timeouts,
                loadShedding: metrics.loadShedding
            ),
            hosts: metrics.servers.isEmpty ? nil : metrics.servers,
            serverConnections: status.serverConnections.map {
                ServerConnectionsReport(
                    inUse: $0.inUse,
                    max: $0.max,
                    reserved: $0.reserved,
                    utilization: Self.round($0.utilization)
                )
            }
        )
        checks = status.checks
        alerts = status.activeAlerts.map {
            Alert(
                type: $0.kind.rawValue,
                severity: $0.severity.rawValue,
                message: $0.summary,
                value: Self.round($0.value),
                threshold: $0.threshold,
                since: Self.format($0.startsAt)
            )
        }
    }

    /// The document as JSON bytes, keys in a stable order.
    public static func json(_ status: HealthStatus, now: Date = Date()) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(HealthReport(status, now: now))) ?? Data("{}".utf8)
    }

    /// 200 for healthy and degraded (still serving), 503 for unhealthy (take it out of rotation).
    public static func httpStatus(for state: HealthState) -> Int {
        state == .unhealthy ? 503 : 200
    }

    /// ISO 8601 in UTC with milliseconds: `2024-01-01T00:00:00.000Z`.
    public static func format(_ date: Date) -> String {
        date.formatted(
            .iso8601.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: true)
                .timeSeparator(.colon).timeZone(separator: .omitted)
        )
    }

    private static func round(_ value: Double) -> Double {
        (value * 100).rounded() / 100
    }
}
