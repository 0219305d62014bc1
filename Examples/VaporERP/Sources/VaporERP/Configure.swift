import Fluent
import Prometheus
import ReliableDB
import ReliableDBFluent
import ReliableDBPostgres
import ReliableDBPrometheus
import ReliableDBVapor
import Tracing
import Vapor

/// The operations the example labels in Prometheus: its models' reads and writes.
public let exampleOperationLabels: Set<String> = [
    "User.read", "User.create", "User.update", "Profile.read", "Profile.create",
    "Order.read", "Order.create", "Order.aggregate", "transaction",
]

/// Wires the example app: ReliableDB for Fluent and for the health routes, on one database.
///
/// Switching an existing Fluent app is the `app.databases.use(.reliable(...))` line; the
/// `app.reliableDB` lines add the health endpoints and tie readiness to the app's lifecycle. The
/// monitor takes the database's own settings (`DB_HEALTH_CHECK_INTERVAL`, `DB_ALERT_*`) unless
/// `monitor` says otherwise.
public func configure(
    _ app: Application,
    database: ReliableDatabase<PostgresBackend>,
    exporter: PrometheusExporter,
    monitor: HealthMonitor.Configuration? = nil
) throws {
    app.databases.use(.reliable(database, models: [User.self, Profile.self, Order.self]), as: .reliable)
    app.reliableDB.use(database, monitor: monitor, exporter: exporter)
    app.reliableDB.mountHealthRoutes(at: "api", "health")
    // Read-your-writes per request: with standby reads, a client's reads wait for its own writes.
    app.middleware.use(ReliableDBConsistencyMiddleware())
    app.migrations.add(CreateUser(), CreateProfile(), CreateOrder())
    try routes(app)
}

/// The database and metrics the example runs on, from `DATABASE_URL` and the `DB_*` variables.
public func makeDatabase(
    configuration: ReliableDBConfiguration,
    reliability: ReliabilityConfiguration? = nil,
    tracer: (any Tracer)? = nil
) throws -> (ReliableDatabase<PostgresBackend>, PrometheusExporter) {
    let exporter = PrometheusExporter(registry: PrometheusCollectorRegistry())
    let instruments = ReliabilityInstruments(factory: exporter.metricsFactory, operationLabels: exampleOperationLabels)
    let database = try ReliableDatabase.postgres(
        configuration: configuration,
        reliability: reliability,
        instruments: instruments,
        tracer: tracer
    )
    return (database, exporter)
}
