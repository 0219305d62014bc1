import Logging
import PostgresNIO
import ReliableDB
import Tracing

extension ReliableDatabase where Backend == PostgresBackend {
    /// Opens a pool for the PostgreSQL server the configuration names, with the configured
    /// pipeline. No connection is made until the first operation, unless `DB_MIN_IDLE_CONNECTIONS`
    /// asks for a warm pool. `tracer` receives a span per
    /// operation (the bootstrapped tracer when nil). `reliability` replaces the pipeline settings the
    /// environment gives (`configuration.reliability`), for settings no variable names, such as
    /// per-kind timeouts.
    public static func postgres(
        configuration: ReliableDBConfiguration,
        reliability: ReliabilityConfiguration? = nil,
        clock: any ReliabilityClock = SystemClock(),
        instruments: ReliabilityInstruments? = nil,
        tracer: (any Tracer)? = nil,
        logger: Logger = Logger(label: "reliabledb.postgres")
    ) throws -> ReliableDatabase<PostgresBackend> {
        guard case .postgres(let url) = configuration.database else {
            throw UnsupportedPostgresLocationError(location: configuration.database)
        }
        let reliability = reliability ?? configuration.reliability
        let backend = try PostgresBackend(
            url: url,
            connectionLimit: configuration.connectionLimit,
            minimumIdleConnections: configuration.minIdleConnections,
            poolTimeout: configuration.poolTimeout,
            statementTimeout: ServerBackstop.duration(for: reliability.timeouts),
            patroni: configuration.patroniURLs.isEmpty ? nil : PatroniConfiguration(urls: configuration.patroniURLs),
            credentials: configuration.passwordFile.map(PostgresCredentialsProvider.passwordFile),
            leakDetectionThreshold: configuration.leakDetectionThreshold,
            clock: clock,
            logger: logger
        )
        return try ReliableDatabase(
            backend: backend,
            configuration: reliability,
            clock: clock,
            instruments: instruments,
            tracer: tracer,
            environmentConfiguration: configuration
        )
    }

    /// Runs `body` on a pooled connection through the pipeline. Mark reads
    /// `idempotent` (or use `.read(...)`) so they are retried after a lost connection.
    ///
    /// `body` runs in a task of its own, so that its caller can be released at the deadline even
    /// when the driver never answers (Sources/ReliableDB/Documentation.docc/Deadlines.md). `file`
    /// and `line` name the call in leak warnings and pool timeouts (``LeaseHolder``).
    public func query<T: Sendable>(
        _ options: OperationOptions,
        file: StaticString = #fileID,
        line: UInt = #line,
        _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        let holder = LeaseHolder(operation: options.name, file: file, line: line)
        return try await execute(options) { attempt in
            try await raw.withConnection(within: attempt, readOnly: options.readOnly, holder: holder, body)
        }
    }

    /// As ``query(_:file:line:_:)``, and `body` also gets the attempt it runs in: for a caller that opens
    /// transactions on the connection itself and must give them their server-side backstop
    /// (``PostgresBackend/transactionBackstop(within:)``).
    package func session<T: Sendable>(
        _ options: OperationOptions,
        file: StaticString = #fileID,
        line: UInt = #line,
        _ body: @escaping @Sendable (PostgresConnection, AttemptContext) async throws -> T
    ) async throws -> T {
        let holder = LeaseHolder(operation: options.name, file: file, line: line)
        return try await execute(options) { attempt in
            try await raw.withConnection(within: attempt, readOnly: options.readOnly, holder: holder) {
                try await body($0, attempt)
            }
        }
    }

    /// Runs `body` in one transaction through the pipeline: committed when it returns, rolled back
    /// when it throws or the deadline cancels it, and retried as a whole after a serialization
    /// failure or deadlock (40001, 40P01). `file` and `line` name the call in leak warnings and
    /// pool timeouts (``LeaseHolder``).
    public func transaction<T: Sendable>(
        _ options: OperationOptions,
        file: StaticString = #fileID,
        line: UInt = #line,
        _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        let holder = LeaseHolder(operation: options.name, file: file, line: line)
        var options = options
        if options.kind == .query { options.kind = .transaction }
        // A transaction runs on the primary, and is counted by its breaker.
        options.readOnly = false
        let backend = raw
        return try await execute(options) { attempt in
            let commit = CommitTracker()
            do {
                return try await backend.withConnection(within: attempt, holder: holder) { connection in
                    try await backend.transaction(on: connection, within: attempt, commit: commit, body)
                }
            } catch  where commit.isInFlight {
                throw CommitOutcomeUnknownError(underlying: error, underlyingDescription: backend.describe(error))
            } catch  where !commit.wasSent && backend.classify(error).connectionScoped {
                throw TransactionNotCommittedError(underlying: error, underlyingDescription: backend.describe(error))
            }
        }
    }
}

/// The configuration does not name a PostgreSQL server.
public struct UnsupportedPostgresLocationError: Error, CustomStringConvertible {
    public var location: DatabaseLocation

    public var description: String {
        "The PostgreSQL backend cannot open \(location); set DATABASE_URL to postgres://user:password@host:port/database"
    }
}
