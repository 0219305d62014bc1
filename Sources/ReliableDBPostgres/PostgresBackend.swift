import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO
import ReliableDB
import Synchronization

/// The PostgreSQL backend: PostgresNIO connections in a pool of its own, with exact statistics,
/// a bounded wait for a connection, server-side cancellation at the deadline, and broken or old
/// connections retired instead of handed out again.
public final class PostgresBackend: DatabaseBackend {
    public let url: PostgresURL
    public let connectionLimit: Int
    public let poolTimeout: Duration
    /// How long a cancelled statement may take to stop before its connection is closed.
    public let cancelGrace: Duration
    let connectionConfiguration: PostgresConnection.Configuration
    private let pool: PostgresConnectionPool
    private let canceller: QueryCanceller
    private let poolWaits: DeadlineScheduler
    private let clock: any ReliabilityClock
    private let logger: Logger
    private let requestIDs = Atomic<Int>(0)
    private let runner = Mutex<Task<Void, Never>?>(nil)
    private let instruments = Mutex<ReliabilityInstruments?>(nil)
    /// Read on every lease, so a pool without instruments takes no lock for them.
    private let hasInstruments = Atomic<Bool>(false)

    /// Opens a pool (connections are made on demand) for `url`.
    ///
    /// - Parameters:
    ///   - connectionLimit: the most connections (`DB_CONNECTION_LIMIT`).
    ///   - poolTimeout: the longest wait for a connection (`DB_POOL_TIMEOUT`).
    ///   - maxLifetime: connections are retired after this, minus up to 5% jitter so they do not
    ///     all reconnect at once.
    ///   - idleTimeout: idle connections are closed after this.
    ///   - keepAliveInterval: a connection idle this long is checked with `SELECT 1` (and closed
    ///     if that fails) before a caller can get a dead one; it also keeps NAT and firewall state.
    ///   - statementTimeout: the server-side `statement_timeout` set on every connection, a backstop
    ///     for when a cancel request cannot reach the server. Nil leaves the server's setting.
    public init(
        url: PostgresURL,
        connectionLimit: Int = 10,
        poolTimeout: Duration = .seconds(10),
        maxLifetime: Duration = .seconds(1800),
        idleTimeout: Duration = .seconds(60),
        keepAliveInterval: Duration = .seconds(30),
        statementTimeout: Duration? = .seconds(305),
        cancelGrace: Duration = .seconds(2),
        clock: any ReliabilityClock = SystemClock(),
        logger: Logger = Logger(label: "reliabledb.postgres")
    ) throws {
        self.url = url
        self.connectionLimit = connectionLimit
        self.poolTimeout = poolTimeout
        self.cancelGrace = cancelGrace
        self.clock = clock
        self.logger = logger
        var configuration = try Self.connectionConfiguration(for: url)
        if let statementTimeout {
            configuration.options.additionalStartupParameters.append(
                ("statement_timeout", "\(Int64(statementTimeout.milliseconds))")
            )
        }
        connectionConfiguration = configuration
        var cancellerConfiguration = try Self.connectionConfiguration(for: url, applicationNameSuffix: "-cancel")
        cancellerConfiguration.options.connectTimeout = .seconds(2)
        canceller = QueryCanceller(configuration: cancellerConfiguration, logger: logger)
        poolWaits = DeadlineScheduler(clock: clock)

        let factoryConfiguration = configuration
        let factoryLogger = logger
        let factoryClock = clock
        pool = PostgresConnectionPool(
            limit: connectionLimit,
            idleTimeout: idleTimeout,
            keepAliveAfter: keepAliveInterval,
            logger: logger
        ) {
            id,
            eventLoop in
            let connection = try await PostgresConnection.connect(
                on: eventLoop,
                configuration: factoryConfiguration,
                id: id,
                logger: factoryLogger
            )
            do {
                var pid: Int32 = 0
                for try await row in try await connection.query("SELECT pg_backend_pid()", logger: factoryLogger) {
                    pid = try row.decode(Int32.self)
                }
                let jitter = Double.random(in: 0...0.05)
                return PooledPostgresConnection(
                    id: id,
                    underlying: connection,
                    backendPID: pid,
                    retireAt: factoryClock.now + maxLifetime * (1 - jitter)
                )
            } catch {
                try? await connection.close()
                throw error
            }
        }
        let pool = self.pool
        runner.withLock { $0 = Task { await pool.run() } }
    }

    static func connectionConfiguration(
        for url: PostgresURL,
        applicationNameSuffix: String = ""
    ) throws -> PostgresConnection.Configuration {
        let tls: PostgresConnection.Configuration.TLS
        if let settings = url.tlsSettings {
            let context = try NIOSSLContext(configuration: settings.configuration)
            tls = settings.required ? .require(context) : .prefer(context)
        } else {
            tls = .disable
        }
        var configuration = PostgresConnection.Configuration(
            host: url.host,
            port: url.port,
            username: url.username,
            password: url.password?.value,
            database: url.database,
            tls: tls
        )
        configuration.options.connectTimeout = .nanoseconds(url.connectTimeout.nanosecondsClamped)
        configuration.options.additionalStartupParameters = [
            ("application_name", url.applicationName + applicationNameSuffix)
        ]
        if url.sslMode != .disable, url.host.isHostName {
            configuration.options.tlsServerName = url.host
        }
        return configuration
    }

    deinit {
        poolWaits.stop()
    }

    public var backendName: String { "postgresql" }

    public func poolStatistics() -> PoolStatistics {
        pool.statistics()
    }

    /// Runs `body` on a pooled connection. When the attempt's deadline passes, the running
    /// statement is cancelled on the server; the connection goes back to the pool only once the
    /// cancel has been answered, and is discarded when it saw a connection-class error or is past
    /// its lifetime. Rows must be consumed inside `body`.
    public func withConnection<R>(
        within attempt: AttemptContext = .unbounded,
        _ body: (PostgresConnection) async throws -> R
    ) async throws -> R {
        // The common cases run without extra async frames: each one adds executor checks on every
        // resumption, which on 2 cores cost more than the pool's own bookkeeping.
        let connection: PooledPostgresConnection
        if let idle = pool.leaseIdle() {
            if hasInstruments.load(ordering: .acquiring) {
                instruments.withLock { $0 }?.poolAcquireDuration.recordNanoseconds(0)
            }
            connection = idle
        } else {
            connection = try await waitForConnection(within: attempt)
        }
        let canceller = self.canceller
        let grace = cancelGrace
        do {
            let result: R
            do {
                let interrupt = try attempt.attachInterrupt { connection.beginCancel(using: canceller, grace: grace) }
                defer { attempt.detachInterrupt(interrupt) }
                result = try await body(connection.underlying)
            }
            if connection.hasPendingCancel {
                await release(connection, discard: false)
            } else {
                release(connection, discard: false, settled: true)
            }
            return result
        } catch {
            let discard = classify(error).discardConnection || connection.underlying.isClosed
            await release(connection, discard: discard)
            throw error
        }
    }

    /// Queues for a connection when none is idle, bounded by the pool timeout and the attempt's
    /// deadline.
    private func waitForConnection(within attempt: AttemptContext) async throws -> PooledPostgresConnection {
        let requestID = requestIDs.add(1, ordering: .relaxed).newValue
        let pool = self.pool
        let start = ContinuousClock.now
        do {
            let connection = try await poolWaits.bounded(until: clock.now + poolTimeout) { poolWait in
                do {
                    return try await poolWait.withInterrupt({ pool.cancel(requestID) }) {
                        try await attempt.withInterrupt({ pool.cancel(requestID) }) {
                            try await withTaskCancellationHandler {
                                try Task.checkCancellation()
                                return try await withCheckedThrowingContinuation { continuation in
                                    pool.enqueue(requestID, continuation)
                                    // A cancel or deadline that fired before the request was queued
                                    // found nothing to cancel: cancel it now.
                                    if Task.isCancelled || attempt.isExpired || poolWait.isExpired {
                                        pool.cancel(requestID)
                                    }
                                }
                            } onCancel: {
                                pool.cancel(requestID)
                            }
                        }
                    }
                } catch PoolLeaseError.cancelled where poolWait.isExpired {
                    throw PoolWaitTimedOut()
                } catch is AttemptDeadlineExceeded where poolWait.isExpired {
                    throw PoolWaitTimedOut()
                }
            }
            let waited = ContinuousClock.now - start
            pool.recordAcquire(waited: waited)
            instruments.withLock { $0 }?.poolAcquireDuration.recordNanoseconds(waited.nanosecondsClamped)
            return connection
        } catch {
            let waited = ContinuousClock.now - start
            switch error {
            case is PoolWaitTimedOut:
                pool.recordAcquire(waited: waited, timedOut: true)
                throw DatabasePoolTimeoutError(
                    waited: waited,
                    statistics: poolStatistics(),
                    lastConnectError: pool.lastConnectError.map(describePostgresError)
                )
            case PoolLeaseError.cancelled where attempt.isExpired:
                throw AttemptDeadlineExceeded()
            case PoolLeaseError.cancelled:
                throw CancellationError()
            case PoolLeaseError.connectFailed(let cause):
                throw PostgresUnavailableError(
                    target: url.description,
                    cause: describePostgresError(cause),
                    sqlState: sqlState(of: cause)
                )
            case PoolLeaseError.shutDown:
                throw PostgresUnavailableError(target: url.description, cause: "the connection pool is shut down")
            default:
                throw error
            }
        }
    }

    private func release(_ connection: PooledPostgresConnection, discard: Bool) async {
        let settled = await connection.settleCancel(within: cancelGrace)
        release(connection, discard: discard, settled: settled)
    }

    /// Returns the connection once any cancel sent for it is settled (`settled` false: it went
    /// unanswered, so the connection is discarded).
    private func release(_ connection: PooledPostgresConnection, discard: Bool, settled: Bool) {
        if discard || !settled {
            pool.release(connection, closeReason: .broken)
        } else if clock.now >= connection.retireAt {
            pool.release(connection, closeReason: .lifetime)
        } else {
            pool.release(connection)
        }
    }

    /// Probes with `SELECT version()` through the pool. While the pool holds no connection (at
    /// start, during an outage) a direct connection attempt comes first, so a failure names its real
    /// cause (wrong password, unknown database, refused port, TLS refused) at once instead of a
    /// generic pool timeout later.
    public func probe(within attempt: AttemptContext) async throws -> ProbeResult {
        if poolStatistics().total == 0 {
            try await diagnoseConnect(within: attempt)
        }
        let start = ContinuousClock.now
        do {
            let version = try await withConnection(within: attempt) { connection in
                var version = "unknown"
                for try await row in try await connection.query("SELECT version()", logger: logger) {
                    version = try row.decode(String.self)
                }
                return version
            }
            return ProbeResult(serverVersion: version, roundTrip: ContinuousClock.now - start)
        } catch is DatabasePoolTimeoutError where poolStatistics().total == 0 {
            try await diagnoseConnect(within: attempt)
            throw PostgresUnavailableError(target: url.description, cause: "no connection could be made in time")
        }
    }

    /// Opens and closes one connection outside the pool; throws why that fails.
    private func diagnoseConnect(within attempt: AttemptContext) async throws {
        var probeConfiguration = connectionConfiguration
        probeConfiguration.options.additionalStartupParameters = [("application_name", url.applicationName + "-probe")]
        let configuration = probeConfiguration
        do {
            try await attempt.cancellingAtDeadline { [logger] in
                let connection = try await PostgresConnection.connect(
                    configuration: configuration,
                    id: -1,
                    logger: logger
                )
                try await connection.close()
            }
        } catch is CancellationError where attempt.isExpired {
            throw AttemptDeadlineExceeded()
        } catch {
            throw PostgresUnavailableError(
                target: url.description,
                cause: describePostgresError(error),
                sqlState: sqlState(of: error)
            )
        }
    }

    public func classify(_ error: any Error) -> ErrorClassification {
        Self.classify(error)
    }

    /// The classification this backend applies, for errors from a plain PostgresNIO client too
    /// (the load tester's raw mode), so both are counted the same way.
    public static func classify(_ error: any Error) -> ErrorClassification {
        PostgresErrorClassifier.classify(error, sent: true)
    }

    public func attach(_ instruments: ReliabilityInstruments) {
        self.instruments.withLock { $0 = instruments }
        hasInstruments.store(true, ordering: .releasing)
    }

    /// Closes every connection; in-flight statements fail.
    public func shutdown() async throws {
        let task = runner.withLock { $0 }
        task?.cancel()
        await pool.shutdown()
        await task?.value
        poolWaits.stop()
        await canceller.close()
    }
}

struct PoolWaitTimedOut: Error {}

extension PostgresURL {
    /// The TLS settings `sslmode` implies, nil for `disable`: `prefer` and `require` encrypt without
    /// verifying the certificate (libpq's meaning), `verify-full` verifies it against `sslrootcert`
    /// or the system's roots and checks the host name.
    public var tlsSettings: (configuration: TLSConfiguration, required: Bool)? {
        var configuration = TLSConfiguration.makeClientConfiguration()
        switch sslMode {
        case .disable:
            return nil
        case .prefer, .require:
            configuration.certificateVerification = .none
            return (configuration, sslMode == .require)
        case .verifyFull:
            configuration.certificateVerification = .fullVerification
            if let sslRootCertificate {
                configuration.trustRoots = .file(sslRootCertificate)
            }
            return (configuration, true)
        }
    }
}

func sqlState(of error: any Error) -> String? {
    (error as? PSQLError)?.serverInfo?[.sqlState]
}

extension String {
    /// True for a DNS name, false for an IPv4 or IPv6 literal (TLS SNI takes names only).
    var isHostName: Bool {
        !contains(":") && !allSatisfy { $0.isNumber || $0 == "." }
    }
}
