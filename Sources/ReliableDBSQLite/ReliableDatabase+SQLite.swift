import GRDB
import ReliableDB

extension ReliableDatabase where Backend == SQLiteBackend {
    /// Opens the embedded SQLite database the configuration names (`DATABASE_URL` unset,
    /// `file:PATH` or `sqlite:PATH`) with the configured pipeline.
    /// - Parameter instruments: where event metrics go (`ReliabilityInstruments(factory:
    ///   exporter.metricsFactory)` for Prometheus); nil for none.
    public static func sqlite(
        configuration: ReliableDBConfiguration,
        busyTimeout: Duration = .seconds(1),
        clock: any ReliabilityClock = SystemClock(),
        instruments: ReliabilityInstruments? = nil
    ) throws -> ReliableDatabase<SQLiteBackend> {
        guard case .sqlite(let path) = configuration.database else {
            throw UnsupportedDatabaseError(location: configuration.database)
        }
        let backend = try SQLiteBackend(
            path: path,
            connectionLimit: configuration.connectionLimit,
            poolTimeout: configuration.poolTimeout,
            busyTimeout: busyTimeout,
            clock: clock
        )
        return try ReliableDatabase(
            backend: backend,
            configuration: configuration.reliability,
            clock: clock,
            instruments: instruments,
            environmentConfiguration: configuration
        )
    }

    /// A read through the pipeline, on a reader connection.
    public func query<T: Sendable>(
        _ options: OperationOptions,
        _ body: @escaping @Sendable (Database) throws -> T
    ) async throws -> T {
        let backend = raw
        return try await execute(options) { try await backend.read(within: $0, body) }
    }

    /// A write through the pipeline, in one transaction on the writer connection.
    public func write<T: Sendable>(
        _ options: OperationOptions,
        _ body: @escaping @Sendable (Database) throws -> T
    ) async throws -> T {
        let backend = raw
        return try await execute(options) { try await backend.write(within: $0, body) }
    }

    /// A transaction through the pipeline: retried as a whole on BUSY/LOCKED, rolled back when
    /// `body` throws or the deadline passes.
    public func transaction<T: Sendable>(
        _ options: OperationOptions,
        _ body: @escaping @Sendable (Database) throws -> T
    ) async throws -> T {
        var options = options
        if options.kind == .query { options.kind = .transaction }
        return try await write(options, body)
    }
}

/// The configuration names a database this backend cannot open.
public struct UnsupportedDatabaseError: Error, CustomStringConvertible {
    public var location: DatabaseLocation

    public var description: String {
        "The SQLite backend cannot open \(location); use the PostgreSQL backend for postgres:// URLs"
    }
}
