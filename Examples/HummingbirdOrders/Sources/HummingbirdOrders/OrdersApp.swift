import Foundation
import Hummingbird
import Logging
import PostgresNIO
import Prometheus
import ReliableDB
import ReliableDBHTTP
import ReliableDBHummingbird
import ReliableDBPostgres
import ReliableDBPrometheus
import ServiceLifecycle

/// A small orders service on Hummingbird 2 and PostgresNIO, with every query through ReliableDB
/// and the four health endpoints under `/api/health`.
public struct OrdersApp: Sendable {
    public let database: ReliableDatabase<PostgresBackend>
    public let endpoints: HealthEndpoints
    let logger: Logger

    /// The database, its monitor and the health endpoints, from `configuration`.
    public init(
        configuration: ReliableDBConfiguration,
        reliability: ReliabilityConfiguration? = nil,
        monitor: HealthMonitor.Configuration? = nil,
        logger: Logger = Logger(label: "orders")
    ) throws {
        let exporter = PrometheusExporter(registry: PrometheusCollectorRegistry())
        database = try ReliableDatabase.postgres(
            configuration: configuration,
            reliability: reliability,
            instruments: ReliabilityInstruments(factory: exporter.metricsFactory, operationLabels: ["place-order"])
        )
        let healthMonitor = HealthMonitor(
            database: database,
            configuration: monitor ?? .init(configuration, service: "orders"),
            logger: logger
        )
        endpoints = HealthEndpoints(database: database, monitor: healthMonitor, exporter: exporter)
        self.logger = logger
    }

    /// Creates the table if it is missing.
    public func migrate() async throws {
        let logger = self.logger
        try await database.query(OperationOptions("migrate", kind: .migration)) { connection in
            _ = try await connection.query(
                """
                CREATE TABLE IF NOT EXISTS orders (number TEXT PRIMARY KEY, total_cents INT NOT NULL,
                  created_at TIMESTAMPTZ NOT NULL DEFAULT now())
                """,
                logger: logger
            ).collect()
        }
    }

    public func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.addRoutes(endpoints.routes(), atPath: "/api/health")
        let database = self.database
        let logger = self.logger
        router.get("/api/orders/count") { _, _ -> String in
            let count = try await database.query(.read("count-orders", table: "orders")) { connection in
                var count = 0
                for try await value in try await connection.query("SELECT count(*)::int FROM orders", logger: logger)
                    .decode(Int.self)
                {
                    count = value
                }
                return count
            }
            return "\(count)"
        }
        // A new order; its number is the primary key, so placing it twice cannot write it twice.
        router.post("/api/orders/:number") { request, context -> HTTPResponse.Status in
            let number = try context.parameters.require("number")
            let cents = Int(request.uri.queryParameters["cents"].map(String.init) ?? "") ?? 0
            try await database.query(OperationOptions("place-order", table: "orders", idempotent: true)) {
                connection in
                _ = try await connection.query(
                    "INSERT INTO orders (number, total_cents) VALUES (\(number), \(cents)) ON CONFLICT DO NOTHING",
                    logger: logger
                ).collect()
            }
            return .created
        }
        return router
    }

    /// The Hummingbird application. In production run it in one `ServiceGroup` with
    /// `endpoints.services(database:around:)`, which orders the shutdown; `services` are added to
    /// the application's own group (tests pass the database and monitor here).
    public func application(port: Int = 8080, services: [any Service] = []) -> some ApplicationProtocol {
        Application(
            router: router(),
            configuration: .init(address: .hostname("127.0.0.1", port: port), serverName: "orders"),
            services: services,
            logger: logger
        )
    }
}
