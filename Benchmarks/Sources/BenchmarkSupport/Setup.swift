// What the benchmarks share to set up: a backend with nothing behind it, the server to measure
// against, and connections made outside any pool.
import Foundation
import Logging
import NIOCore
import PostgresNIO
import ReliableDB

/// A backend with nothing behind it, so a benchmark measures the pipeline alone.
public final class NoopBackend: DatabaseBackend {
    public init() {}
    public var backendName: String { "noop" }
    public func classify(_ error: any Error) -> ErrorClassification { ErrorClassification(.caller) }
    public func poolStatistics() -> PoolStatistics { PoolStatistics() }
    public func probe(within attempt: AttemptContext) async throws -> ProbeResult {
        ProbeResult(serverVersion: "noop", roundTrip: .zero)
    }
    public func shutdown() async throws {}
}

/// The server `scripts/test` started (or `DATABASE_URL`), without TLS; exits with a usage line
/// when neither is set.
public func benchmarkServerURL() -> PostgresURL {
    let environment = ProcessInfo.processInfo.environment
    guard let raw = environment["RELIABLEDB_TEST_POSTGRES_URL"] ?? environment["DATABASE_URL"],
        case .success(var url) = PostgresURL.parse(raw)
    else {
        print("set RELIABLEDB_TEST_POSTGRES_URL or DATABASE_URL to a postgres:// URL")
        exit(2)
    }
    url.sslMode = .disable
    return url
}

/// One connection to `url` on `eventLoop`, outside any pool.
public func connectDirectly(
    to url: PostgresURL,
    on eventLoop: any EventLoop,
    id: Int,
    applicationName: String,
    logger: Logger
) async throws -> PostgresConnection {
    var configuration = PostgresConnection.Configuration(
        host: url.host,
        port: url.port,
        username: url.username,
        password: url.password?.value,
        database: url.database,
        tls: .disable
    )
    configuration.options.additionalStartupParameters = [("application_name", applicationName)]
    return try await PostgresConnection.connect(on: eventLoop, configuration: configuration, id: id, logger: logger)
}
