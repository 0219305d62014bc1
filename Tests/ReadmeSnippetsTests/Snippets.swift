// swift-format-ignore-file
// (the README's layout, aligned comments included, is kept verbatim)
// The README's Swift snippets, verbatim (ReadmeSnippetsTests checks they match), so CI compiles
// every one of them. They are compiled, not run: they read the environment and open servers.

import GRDB
import Hummingbird
import Logging
import PostgresNIO
import Prometheus
import ReliableDB
import ReliableDBHTTP
import ReliableDBHummingbird
import ReliableDBPostgres
import ReliableDBPrometheus
import ReliableDBSQLite
import ReliableDBWebhook
import ServiceLifecycle

/// The Quick Start (SQLite).
func quickStart() async throws {
    // DATABASE_URL unset (or file:PATH / sqlite:PATH) selects the embedded SQLite backend.
    let db = try await ReliableDatabase.sqlite(configuration: .fromEnvironment())
    try await db.write(.init("create-schema")) { conn in
        try conn.execute(sql: "CREATE TABLE IF NOT EXISTS user (id INTEGER PRIMARY KEY, email TEXT UNIQUE)")
        try conn.execute(sql: "CREATE TABLE IF NOT EXISTS profile (userId INTEGER, name TEXT)")
    }

    // A read through the pipeline. Results cross tasks: Sendable.
    let emails = try await db.query(.read("get-users", table: "user", timeout: .seconds(5))) { conn in
        try String.fetchAll(conn, sql: "SELECT email FROM user ORDER BY id")
    }

    // A transaction, retried as a whole on SQLITE_BUSY, rolled back on error or timeout.
    let userID = try await db.transaction(.init("create-user-with-profile", timeout: .seconds(10))) { tx in
        try tx.execute(sql: "INSERT INTO user (email) VALUES (?)", arguments: ["ana@carmen.example"])
        let id = tx.lastInsertedRowID
        try tx.execute(sql: "INSERT INTO profile (userId, name) VALUES (?, ?)", arguments: [id, "Ana"])
        return id
    }
    print("users before: \(emails), new user: \(userID)")

    print(db.circuitBreaker.metrics)   // state, failures, successes, requests, rejected, last change, next attempt
    db.circuitBreaker.forceState(.open)
    db.circuitBreaker.reset()
    print(db.metrics())                // successful/failed/slow queries, avg/p50/p95/p99, timeouts, active, pool
    print(await db.healthCheck())      // true when a probe succeeds within the health-check timeout
    print(db.raw.pool)                 // the GRDB DatabasePool, outside the pipeline
}

/// The timeout helpers.
func timeoutHelpers() async throws {
    let db = try await ReliableDatabase.sqlite(configuration: .fromEnvironment())
    let report = try await db.query(.complexQuery("user-analytics", table: "user")) { conn in   // 45 s
        try Int.fetchOne(conn, sql: "SELECT count(*) FROM user") ?? 0
    }
    try await db.write(.batchOperation(.batchInsert, count: 1000, table: "profile")) { conn in  // 60 s + 10 ms × 1000
        for index in 0..<1000 {
            try conn.execute(sql: "INSERT INTO profile (userId, name) VALUES (?, ?)", arguments: [index, "bulk"])
        }
    }
    print("\(report) users")
}

/// PostgreSQL.
func postgres() async throws {
    let logger = Logger(label: "app")
    let db = try await ReliableDatabase.postgres(configuration: .fromEnvironment())   // DATABASE_URL=postgres://…
    let names = try await db.query(.read("get-users", table: "users")) { connection in
        try await connection.query("SELECT name FROM users", logger: logger).collect().map { try $0.decode(String.self) }
    }
    try await db.transaction(.init("transfer")) { connection in
        _ = try await connection.query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", logger: logger).collect()
        // ... retried as a whole on 40001 / 40P01
    }
    print(names)
}

/// A complete Hummingbird service with health, alerts and metrics.
func healthService() async throws {
    let logger = Logger(label: "app")
    let config = try await ReliableDBConfiguration.fromEnvironment()
    let exporter = PrometheusExporter(registry: PrometheusCollectorRegistry())   // your registry, no global
    let db = try ReliableDatabase.sqlite(
        configuration: config,
        instruments: ReliabilityInstruments(factory: exporter.metricsFactory)
    )
    var sinks: [any AlertSink] = []
    var services: [any Service] = [db]   // first: services stop in reverse order, the database last
    if let webhook = try await WebhookConfiguration.fromEnvironment() {   // DB_ALERT_WEBHOOK_URL, _FORMAT
        let sink = WebhookAlertSink(url: webhook.url, format: webhook.format, logger: logger)
        sinks.append(sink)
        services.append(WebhookSinkService(sink))
    }
    let monitor = HealthMonitor(database: db, configuration: .init(config), sinks: sinks)
    let endpoints = HealthEndpoints(database: db, monitor: monitor, exporter: exporter, authToken: config.healthAuthToken)
    let router = Router()
    router.addRoutes(endpoints.routes(), atPath: "/api/health")                   // any Hummingbird 2 router
    let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 8080)))
    services += [monitor, app, ReadinessDrainService(readiness: endpoints.readiness)]   // the drain last
    try await ServiceGroup(services: services, gracefulShutdownSignals: [.sigterm], logger: logger).run()
}

/// The plain-value health API for other frameworks.
func otherFrameworks() async throws {
    let db = try await ReliableDatabase.sqlite(configuration: .fromEnvironment())
    let endpoints = HealthEndpoints(
        database: db,
        monitor: HealthMonitor(database: db),
        exporter: PrometheusExporter(registry: PrometheusCollectorRegistry())
    )
    let authorizationHeader: String? = nil
    let answer = endpoints.health(authorization: authorizationHeader)
    print(answer.status, answer.contentType, answer.cacheControl, answer.body.count)   // into your Response
}
