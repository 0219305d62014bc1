import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import Prometheus
import ReliableDB
import ReliableDBHTTP
import ReliableDBHummingbird
import ReliableDBPrometheus
import ReliableDBSQLite
import Testing

/// The `/api/health` shape clients rely on: a response must have exactly these fields, nested the
/// same way, with the same JSON types.
let documentedHealthExample = """
    {
      "status": "healthy",
      "timestamp": "2024-01-01T00:00:00.000Z",
      "uptime": 3600000,
      "database": {
        "connected": true,
        "connectionPool": { "total": 10, "active": 3, "idle": 7, "utilization": 30 },
        "performance": {
          "averageQueryTime": 45, "slowQueries": 2, "successfulQueries": 1250, "failedQueries": 5, "errorRate": 0.4
        },
        "reliability": {
          "circuitBreaker": { "state": "CLOSED", "failures": 0, "successes": 1250, "requests": 1255 },
          "activeOperations": 2,
          "timeouts": 0
        }
      },
      "checks": { "connectivity": true, "queryPerformance": true, "poolHealth": true, "circuitBreakerState": true },
      "alerts": []
    }
    """

/// A SQLite-backed stack: database, monitor, exporter and endpoints, as `serve` wires them.
struct Stack {
    let directory: URL
    let db: ReliableDatabase<SQLiteBackend>
    let monitor: HealthMonitor
    let endpoints: HealthEndpoints

    init(authToken: String? = nil) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("rdb-http-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let exporter = PrometheusExporter(registry: PrometheusCollectorRegistry())
        db = try ReliableDatabase(
            backend: try SQLiteBackend(path: directory.appendingPathComponent("db.sqlite").path),
            instruments: ReliabilityInstruments(factory: exporter.metricsFactory)
        )
        // Generous query-time threshold: a loaded test machine must not turn the status degraded.
        monitor = HealthMonitor(
            database: db,
            configuration: .init(interval: .seconds(30), thresholds: .init(queryTime: .seconds(60)))
        )
        endpoints = HealthEndpoints(
            database: db,
            monitor: monitor,
            exporter: exporter,
            authToken: authToken.map { Secret($0) }
        )
    }

    func test(_ body: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        let router = Router()
        router.addRoutes(endpoints.routes(), atPath: "/api/health")
        try await Application(router: router).test(.router, body)
    }

    func cleanUp() async throws {
        try? await db.shutdown()
        try? FileManager.default.removeItem(at: directory)
    }
}

func jsonObject(_ buffer: ByteBuffer) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(buffer: buffer)) as? [String: Any])
}

/// A JSON value that keeps booleans and numbers apart.
enum JSONValue: Decodable, Equatable {
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])
    case null

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    static func parse(_ data: Data) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: data)
    }
}

/// Compares two JSON documents' shapes: the same keys at every level and the same kinds of values.
func expectSameShape(_ actual: JSONValue, _ expected: JSONValue, path: String = "$") {
    switch (actual, expected) {
    case (.object(let actual), .object(let expected)):
        #expect(Set(actual.keys) == Set(expected.keys), "keys at \(path)")
        for (key, value) in expected {
            if let other = actual[key] { expectSameShape(other, value, path: "\(path).\(key)") }
        }
    case (.array, .array), (.bool, .bool), (.number, .number), (.string, .string), (.null, .null):
        break
    default:
        Issue.record("different JSON types at \(path): \(actual) vs \(expected)")
    }
}

func readyStatus(_ client: any TestClientProtocol) async throws -> HTTPResponse.Status {
    try await client.execute(uri: "/api/health/ready", method: .get) { $0.status }
}

@Suite("Health endpoints (router)")
struct HealthRoutesTests {
    @Test func healthMatchesTheDocumentedShapeFieldByField() async throws {
        let stack = try Stack()
        _ = try await stack.db.query(.read("warm-up")) { try Int.fetchOne($0, sql: "SELECT 1") }
        await stack.monitor.checkNow()
        try await stack.test { client in
            try await client.execute(uri: "/api/health", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "application/json")
                #expect(response.headers[.cacheControl] == "no-store")
                expectSameShape(
                    try JSONValue.parse(Data(buffer: response.body)),
                    try JSONValue.parse(Data(documentedHealthExample.utf8))
                )
                let report = try JSONDecoder().decode(HealthReport.self, from: Data(buffer: response.body))
                #expect(report.status == "healthy")
                #expect(report.database.connected)
                #expect(report.database.performance.successfulQueries == 1)
                #expect(report.database.reliability.circuitBreaker.state == "CLOSED")
                #expect(report.database.connectionPool.total >= 1)
                #expect(
                    report.checks
                        == HealthChecks(
                            connectivity: true,
                            queryPerformance: true,
                            poolHealth: true,
                            circuitBreakerState: true
                        )
                )
                #expect(report.timestamp.hasSuffix("Z") && report.timestamp.count == 24, "\(report.timestamp)")
                #expect(report.uptime >= 0)
            }
        }
        try await stack.cleanUp()
    }

    @Test func healthIs503WhenUnhealthyAndLiveStays200() async throws {
        let stack = try Stack()
        stack.endpoints.readiness.markServing()
        try await stack.db.shutdown()
        let status = await stack.monitor.checkNow()
        #expect(status.state == .unhealthy)
        try await stack.test { client in
            try await client.execute(uri: "/api/health", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                let body = try jsonObject(response.body)
                #expect(body["status"] as? String == "unhealthy")
            }
            try await client.execute(uri: "/api/health/live", method: .get) { response in
                #expect(response.status == .ok)
                let body = try jsonObject(response.body)
                #expect(body["alive"] as? Bool == true)
                #expect(Set(body.keys) == ["alive", "timestamp"])
            }
            try await client.execute(uri: "/api/health/ready", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                let body = try jsonObject(response.body)
                #expect(body["ready"] as? Bool == false)
            }
            try await client.execute(uri: "/api/health/metrics", method: .get) { response in
                #expect(response.status == .ok, "a down database shows in the values, not the status")
                #expect(String(buffer: response.body).contains("db_up 0"))
            }
        }
        try await stack.cleanUp()
    }

    @Test func readinessFollowsStartupTheBreakerAndDraining() async throws {
        let stack = try Stack()
        try await stack.test { client in
            do {

                let status = try await readyStatus(client)

                #expect(status == .serviceUnavailable, "starting: no check yet, not serving")

            }
            await stack.monitor.checkNow()
            do {
                let status = try await readyStatus(client)
                #expect(status == .ok, "a request that reaches /ready proves the server serves")
                #expect(stack.endpoints.readiness.phase == .serving)
            }
            stack.db.circuitBreaker.forceState(.open)
            do {

                let status = try await readyStatus(client)

                #expect(status == .serviceUnavailable, "breaker open")

            }
            stack.db.circuitBreaker.reset()
            do {

                let status = try await readyStatus(client)

                #expect(status == .ok)

            }
            stack.endpoints.readiness.beginDraining()
            do {

                let status = try await readyStatus(client)

                #expect(status == .serviceUnavailable, "draining on shutdown")

            }
        }
        try await stack.cleanUp()
    }

    @Test func metricsAreAlways200InPrometheusTextFormat() async throws {
        let stack = try Stack()
        await stack.monitor.checkNow()
        try await stack.test { client in
            try await client.execute(uri: "/api/health/metrics", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "text/plain; version=0.0.4; charset=utf-8")
                let text = String(buffer: response.body)
                for name in [
                    "db_connections_total", "db_connections_active", "db_connections_idle",
                    "db_pool_utilization_percent",
                    "db_query_duration_avg_ms", "db_health_score", "db_circuit_breaker_state{value=\"CLOSED\"} 1",
                    "db_circuit_breaker_failures", "db_operations_active",
                ] {
                    #expect(text.contains(name), "missing \(name)")
                }
            }
        }
        try await stack.cleanUp()
    }

    @Test func aTokenHidesDetailsButNotTheOtherEndpoints() async throws {
        let stack = try Stack(authToken: "s3cret-token")
        await stack.monitor.checkNow()
        stack.endpoints.readiness.markServing()
        try await stack.test { client in
            for header in [nil, "Bearer wrong-token", "s3cret-token", "Basic czNjcmV0LXRva2Vu"] {
                var headers = HTTPFields()
                if let header { headers[.authorization] = header }
                try await client.execute(uri: "/api/health", method: .get, headers: headers) { response in
                    #expect(response.status == .ok)
                    let keys = Set(try jsonObject(response.body).keys)
                    #expect(keys == ["status", "timestamp"], "\(header ?? "none")")
                }
            }
            try await client.execute(uri: "/api/health", method: .get, headers: [.authorization: "Bearer s3cret-token"])
            {
                let keys = Set(try jsonObject($0.body).keys)
                #expect(keys == ["status", "timestamp", "uptime", "database", "checks", "alerts"])
            }
            for path in ["/api/health/live", "/api/health/ready", "/api/health/metrics"] {
                try await client.execute(uri: path, method: .get) { #expect($0.status == .ok, "\(path)") }
            }
        }
        try await stack.cleanUp()
    }

    /// A token in the environment the database was built from applies without being passed again.
    @Test func theEnvironmentsTokenAppliesByDefault() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rdb-http-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let environment = try await ReliableDBConfiguration.fromEnvironment(
            [
                "DATABASE_URL": "file:" + directory.appendingPathComponent("db.sqlite").path,
                "DB_HEALTH_AUTH_TOKEN": "env-token",
            ],
            dotEnvPath: nil
        )
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let db = try ReliableDatabase.sqlite(configuration: environment)
        let monitor = HealthMonitor(database: db)
        await monitor.checkNow()
        let endpoints = HealthEndpoints(
            database: db,
            monitor: monitor,
            exporter: PrometheusExporter(registry: PrometheusCollectorRegistry())
        )
        let anonymous = try jsonObject(ByteBuffer(data: endpoints.health().body))
        #expect(Set(anonymous.keys) == ["status", "timestamp"], "no details without the token")
        let authorized = try jsonObject(ByteBuffer(data: endpoints.health(authorization: "Bearer env-token").body))
        #expect(authorized["database"] != nil)
        try await db.shutdown()
    }

    @Test func unknownPathsAre404AndWrongMethods405() async throws {
        let stack = try Stack()
        try await stack.test { client in
            try await client.execute(uri: "/api/health/nope", method: .get) { #expect($0.status == .notFound) }
            for path in ["/api/health", "/api/health/live", "/api/health/ready", "/api/health/metrics"] {
                try await client.execute(uri: path, method: .post) { response in
                    #expect(response.status == .methodNotAllowed, "\(path)")
                    #expect(response.headers[.allow] == "GET")
                }
            }
        }
        try await stack.cleanUp()
    }

    @Test func healthJSONInTheIETFFormatOnRequest() async throws {
        let stack = try Stack()
        await stack.monitor.checkNow()
        try await stack.test { client in
            try await client.execute(uri: "/api/health", method: .get, headers: [.accept: "application/health+json"]) {
                response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "application/health+json")
                let body = try jsonObject(response.body)
                #expect(body["status"] as? String == "pass")
                let checks = try #require(body["checks"] as? [String: Any])
                #expect(checks.keys.contains("database:connectivity"))
            }
        }
        try await stack.cleanUp()
    }

    @Test func theProducersWorkWithoutHummingbird() async throws {
        let stack = try Stack()
        await stack.monitor.checkNow()
        let answer = stack.endpoints.health()
        #expect(answer.status == 200)
        #expect(answer.contentType == "application/json")
        let report = try JSONDecoder().decode(HealthReport.self, from: answer.body)
        #expect(report.status == "healthy")
        #expect(stack.endpoints.metrics().contentType == PrometheusExporter.contentType)
        try await stack.cleanUp()
    }
}
