import Foundation
import Logging
import PostgresNIO
import ReliableDB
import ReliableDBPostgres
import ReliableDBTestSupport
import Tracing
import Vapor
import VaporERP
import VaporTesting

extension ScratchDatabase {
    /// The app's configuration on this scratch database, as `DATABASE_URL` and `DB_*` give it.
    func configuration(_ extra: [String: String] = [:]) async throws -> ReliableDBConfiguration {
        var environment = ["DATABASE_URL": url, "DB_CONNECTION_LIMIT": "4", "DB_POOL_TIMEOUT": "5"]
        environment.merge(extra) { _, new in new }
        return try await ReliableDBConfiguration.fromEnvironment(environment, dotEnvPath: nil)
    }
}

/// Runs `body` with the example app on a scratch database, migrated, and shuts both down after.
func withERPApp(
    server: String = "RELIABLEDB_TEST_POSTGRES_URL",
    tracer: (any Tracer)? = nil,
    environment extra: [String: String] = [:],
    monitor: HealthMonitor.Configuration? = .init(interval: .seconds(60)),
    adjust: (inout ReliabilityConfiguration) -> Void = { _ in },
    _ body: (Application, ReliableDatabase<PostgresBackend>, ScratchDatabase) async throws -> Void
) async throws {
    let scratch = try await ScratchDatabase.create(variable: server, prefix: "erp")
    do {
        let configuration = try await scratch.configuration(extra)
        var reliability = configuration.reliability
        adjust(&reliability)
        let (database, exporter) = try makeDatabase(
            configuration: configuration,
            reliability: reliability,
            tracer: tracer
        )
        let app = try await Application.make(.testing)
        do {
            try configure(app, database: database, exporter: exporter, monitor: monitor)
            try await app.autoMigrate()
            try await body(app, database, scratch)
        } catch {
            try? await app.asyncShutdown()
            throw error
        }
        try await app.asyncShutdown()
    } catch {
        try? await scratch.drop()
        throw error
    }
    try await scratch.drop()
}

/// Polls `condition` for up to five seconds.
func eventually(_ condition: () async throws -> Bool) async rethrows -> Bool {
    for _ in 0..<100 {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return false
}
