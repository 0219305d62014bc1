import Foundation
import Logging
import PostgresNIO
import ReliableDB
import ReliableDBPostgres
import Tracing
import Vapor
import VaporERP
import VaporTesting

/// A database of its own on the server `scripts/test` starts, created for one test and dropped
/// after it, so tests migrate and write in parallel without seeing each other. A missing server
/// fails the test: these tests are never skipped.
struct ScratchDatabase {
    struct Missing: Error, CustomStringConvertible {
        var description: String {
            "RELIABLEDB_TEST_POSTGRES_URL is not set: run the tests with scripts/test, which starts PostgreSQL"
        }
    }

    let name: String
    /// `DATABASE_URL` for the scratch database, with the server's password.
    let url: String
    let applicationName: String
    let server: URLComponents

    static func serverURL(_ variable: String = "RELIABLEDB_TEST_POSTGRES_URL") throws -> URLComponents {
        guard let value = ProcessInfo.processInfo.environment[variable], !value.isEmpty,
            let components = URLComponents(string: value)
        else { throw Missing() }
        return components
    }

    static func create(variable: String = "RELIABLEDB_TEST_POSTGRES_URL") async throws -> ScratchDatabase {
        let server = try serverURL(variable)
        let name = "erp_\(UUID().uuidString.prefix(8).lowercased())"
        let applicationName = "rdb-\(name)"
        try await Observer.with(server) { try await $0.execute("CREATE DATABASE \(name)") }
        var components = server
        components.path = "/\(name)"
        components.queryItems = [
            URLQueryItem(name: "sslmode", value: "disable"),
            URLQueryItem(name: "application_name", value: applicationName),
        ]
        return ScratchDatabase(name: name, url: components.string!, applicationName: applicationName, server: server)
    }

    func drop() async throws {
        try await Observer.with(server) { try await $0.execute("DROP DATABASE IF EXISTS \(name) WITH (FORCE)") }
    }

    func configuration(_ extra: [String: String] = [:]) throws -> ReliableDBConfiguration {
        var environment = ["DATABASE_URL": url, "DB_CONNECTION_LIMIT": "4", "DB_POOL_TIMEOUT": "5"]
        environment.merge(extra) { _, new in new }
        return try ReliableDBConfiguration.fromEnvironment(environment, dotEnvPath: nil)
    }
}

/// A plain PostgresNIO connection beside the app, for looking at the server.
struct Observer {
    let connection: PostgresConnection
    static let logger = Logger(label: "test.erp.observer")

    static func with<T>(_ server: URLComponents, _ body: (Observer) async throws -> T) async throws -> T {
        let connection = try await PostgresConnection.connect(
            configuration: .init(
                host: server.host ?? "127.0.0.1",
                port: server.port ?? 5432,
                username: server.user ?? "postgres",
                password: server.password,
                database: String(server.path.dropFirst()),
                tls: .disable
            ),
            id: 1,
            logger: logger
        )
        do {
            let result = try await body(Observer(connection: connection))
            try await connection.close()
            return result
        } catch {
            try? await connection.close()
            throw error
        }
    }

    func execute(_ sql: String) async throws {
        _ = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: Self.logger).collect()
    }

    func int(_ sql: String) async throws -> Int {
        var value = -1
        for try await count in try await connection.query(PostgresQuery(unsafeSQL: sql), logger: Self.logger)
            .decode(Int.self)
        {
            value = count
        }
        return value
    }
}

/// Runs `body` with the example app on a scratch database, migrated, and shuts both down after.
func withERPApp(
    server: String = "RELIABLEDB_TEST_POSTGRES_URL",
    tracer: (any Tracer)? = nil,
    environment extra: [String: String] = [:],
    monitor: HealthMonitor.Configuration = .init(interval: .seconds(60)),
    adjust: (inout ReliabilityConfiguration) -> Void = { _ in },
    _ body: (Application, ReliableDatabase<PostgresBackend>, ScratchDatabase) async throws -> Void
) async throws {
    let scratch = try await ScratchDatabase.create(variable: server)
    do {
        let configuration = try scratch.configuration(extra)
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
