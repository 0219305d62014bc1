import Foundation
import Logging
import PostgresNIO

/// A database of its own on a server `scripts/test` starts, created for one test and dropped after
/// it, so tests migrate and write in parallel without seeing each other. A missing server fails
/// the test: these tests are never skipped.
public struct ScratchDatabase: Sendable {
    public struct Missing: Error, CustomStringConvertible {
        public var variable: String
        public init(variable: String) { self.variable = variable }
        public var description: String {
            "\(variable) is not set: run the tests with scripts/test, which starts PostgreSQL"
        }
    }

    public let name: String
    /// `DATABASE_URL` for the scratch database, with the server's password.
    public let url: String
    /// The `application_name` in ``url``, to find the test's backends in `pg_stat_activity`.
    public let applicationName: String
    /// The server's own URL (its default database).
    public let server: URLComponents

    public static func serverURL(_ variable: String = "RELIABLEDB_TEST_POSTGRES_URL") throws -> URLComponents {
        guard let value = ProcessInfo.processInfo.environment[variable], !value.isEmpty,
            let components = URLComponents(string: value)
        else { throw Missing(variable: variable) }
        return components
    }

    public static func create(
        variable: String = "RELIABLEDB_TEST_POSTGRES_URL",
        prefix: String = "scratch"
    ) async throws -> ScratchDatabase {
        let server = try serverURL(variable)
        let name = "\(prefix)_\(UUID().uuidString.prefix(8).lowercased())"
        let applicationName = "rdb-\(name)"
        try await SideConnection.with(server) { try await $0.execute("CREATE DATABASE \(name)") }
        var components = server
        components.path = "/\(name)"
        components.queryItems = [
            URLQueryItem(name: "sslmode", value: "disable"),
            URLQueryItem(name: "application_name", value: applicationName),
        ]
        return ScratchDatabase(name: name, url: components.string!, applicationName: applicationName, server: server)
    }

    public func drop() async throws {
        try await SideConnection.with(server) { try await $0.execute("DROP DATABASE IF EXISTS \(name) WITH (FORCE)") }
    }

    /// Backends of this scratch database running `pattern` (a `LIKE` pattern) right now.
    public func running(_ pattern: String) async throws -> Int {
        try await SideConnection.with(server) {
            try await $0.int(
                """
                SELECT count(*)::int FROM pg_stat_activity
                WHERE datname = '\(name)' AND state = 'active' AND query LIKE '\(pattern)'
                  AND pid <> pg_backend_pid()
                """
            )
        }
    }
}

/// A plain PostgresNIO connection beside the code under test, for looking at the server.
public struct SideConnection: Sendable {
    public let connection: PostgresConnection
    static let logger = Logger(label: "test.side-connection")

    public static func with<T>(_ server: URLComponents, _ body: (SideConnection) async throws -> T) async throws -> T {
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
            let result = try await body(SideConnection(connection: connection))
            try await connection.close()
            return result
        } catch {
            try? await connection.close()
            throw error
        }
    }

    public func execute(_ sql: String) async throws {
        _ = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: Self.logger).collect()
    }

    public func int(_ sql: String) async throws -> Int {
        var value = -1
        for try await count in try await connection.query(PostgresQuery(unsafeSQL: sql), logger: Self.logger)
            .decode(Int.self)
        {
            value = count
        }
        return value
    }
}

/// The fault server's control script (`start`, `stop fast`), written by scripts/test. Only the
/// suites scripts/test runs one at a time (the fault suite and `ExampleFaultTests`) stop it.
public enum FaultServer {
    public static let urlVariable = "RELIABLEDB_TEST_FAULT_POSTGRES_URL"

    public struct Failed: Error {
        public var arguments: [String]
        public var status: Int32
    }

    public static func control(_ arguments: String...) async throws {
        try await control(script: "RELIABLEDB_TEST_FAULT_POSTGRES_CTL", arguments)
    }

    /// Runs the control script named by the environment variable `variable` (each test server
    /// scripts/test starts has one: `..._CTL`).
    public static func control(script variable: String, _ arguments: [String]) async throws {
        guard let script = ProcessInfo.processInfo.environment[variable] else {
            throw ScratchDatabase.Missing(variable: variable)
        }
        let status = await spawnAndWait(script, arguments)
        guard status == 0 else { throw Failed(arguments: arguments, status: status) }
    }
}
