import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO
import ReliableDB
import ReliableDBPool
import Synchronization

/// The PostgreSQL backend: PostgresNIO connections in a pool of its own (``PostgresPool``, the I/O
/// shell of the shared lease-and-deadline state machine), with exact statistics, a wait for a
/// connection bounded by the earlier of the pool timeout and the operation's deadline, and a
/// deadline that stops the statement on the server and always releases the caller
/// (docs/DEADLINES.md).
public final class PostgresBackend: DatabaseBackend {
    public let url: PostgresURL
    public let connectionLimit: Int
    public let poolTimeout: Duration
    /// How long after its deadline a statement that a CancelRequest did not stop is cut off by
    /// closing its connection: the latest a caller returns is its deadline plus this.
    public let cancelGrace: Duration
    let connectionConfiguration: PostgresConnection.Configuration
    /// The connect over the URL's servers that the pool uses.
    let hostWalk: HostWalk
    /// The server-side backstop timeout (see `init`).
    let statementTimeout: Duration?
    let pool: PostgresPool
    /// Connections to standbys for reads (with several servers, ``standbyReads``), else nil; none
    /// is opened until a read needs one.
    private let readPool: PostgresPool?
    /// The last replay lag a read connection measured, and when (StandbyReads below).
    private let standbyLag = Mutex<(lag: Duration?, measuredAt: MonotonicTime)?>(nil)
    /// While the standby is known down: when a read may try it again (``standbyWorthTrying()``).
    private let standbyRetryAt = Mutex<MonotonicTime?>(nil)
    /// The walk of ``readPool``: the standby it connects to.
    private let standbyWalk: HostWalk?
    private let clock: any ReliabilityClock
    private let logger: Logger
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
    ///     Behind PgBouncer (`pgbouncer=true`) it is set per transaction instead.
    ///   - cancelGrace: see ``cancelGrace``.
    ///   - maxServerEjection: with several servers in the URL, the longest a server that keeps
    ///     failing is skipped (docs/FAILOVER.md); 1 s after its first failure, doubling.
    public init(
        url: PostgresURL,
        connectionLimit: Int = 10,
        poolTimeout: Duration = .seconds(10),
        maxLifetime: Duration = .seconds(1800),
        idleTimeout: Duration = .seconds(60),
        keepAliveInterval: Duration = .seconds(30),
        statementTimeout: Duration? = .seconds(305),
        cancelGrace: Duration = .milliseconds(50),
        maxServerEjection: Duration = .seconds(30),
        clock: any ReliabilityClock = SystemClock(),
        logger: Logger = Logger(label: "reliabledb.postgres")
    ) throws {
        self.url = url
        self.connectionLimit = connectionLimit
        self.poolTimeout = poolTimeout
        self.cancelGrace = cancelGrace
        self.statementTimeout = statementTimeout
        self.clock = clock
        self.logger = logger
        // One configuration per server of the URL; the walk picks among them (HostWalk.swift).
        var configurations: [PostgresConnection.Configuration] = []
        for endpoint in url.endpoints {
            var configuration = try Self.connectionConfiguration(for: url, endpoint: endpoint)
            if let statementTimeout, !url.pgbouncer {
                configuration.options.additionalStartupParameters.append(
                    ("statement_timeout", "\(Int64(statementTimeout.milliseconds))")
                )
            }
            configurations.append(configuration)
        }
        connectionConfiguration = configurations[0]
        // A pool connect that takes longer than anyone may wait for a connection serves nobody and
        // holds a slot: behind a partition it would hold it for the whole connect_timeout, and
        // recovery would wait for it.
        let servers = zip(url.endpoints, configurations).map { endpoint, configuration in
            var poolConnectConfiguration = configuration
            poolConnectConfiguration.options.connectTimeout = min(
                configuration.options.connectTimeout,
                TimeAmount(max(poolTimeout, .milliseconds(100)))
            )
            let connector = Connector(configuration: poolConnectConfiguration, logger: logger)
            let connect: HostWalk.Connect = { id, eventLoop in connector.connect(id: id, on: eventLoop) }
            return (endpoint, connect)
        }
        let walk = HostWalk(
            servers: servers,
            target: url.targetSessionAttributes,
            loadBalance: url.loadBalanceHosts,
            maxEjection: maxServerEjection,
            clock: clock,
            logger: logger
        )
        hostWalk = walk
        let poolConfiguration = PoolConfiguration(
            maximumConnections: connectionLimit,
            idleTimeout: idleTimeout,
            keepAliveAfter: keepAliveInterval,
            keepAliveTimeout: min(Duration.seconds(10), max(keepAliveInterval, .seconds(1))),
            maxLifetime: maxLifetime,
            lifetimeJitterFraction: 0.05
        )
        pool = PostgresPool(configuration: poolConfiguration, clock: clock, logger: logger) { id, eventLoop in
            walk.connect(id: id, on: eventLoop)
        }
        standbyReads = Self.standbyReads(for: url)
        if standbyReads != .unavailable {
            let standbys = HostWalk(
                servers: servers,
                target: .standby,
                loadBalance: url.loadBalanceHosts,
                maxEjection: maxServerEjection,
                clock: clock,
                logger: logger
            )
            standbyWalk = standbys
            readPool = PostgresPool(configuration: poolConfiguration, clock: clock, logger: logger) { id, eventLoop in
                standbys.connect(id: id, on: eventLoop)
            }
        } else {
            standbyWalk = nil
            readPool = nil
        }
    }

    deinit {
        // The pools' alarms hold their pools (PostgresPool.detachAlarm): without a shutdown, this ends them.
        pool.detachAlarm()
        readPool?.detachAlarm()
    }

    /// Reads go to a standby always with `standby_reads=true`, and on a fallback with several
    /// servers when the primary's walk looks for a primary (`any`, `read-write`, `primary`).
    public let standbyReads: StandbyReads

    static func standbyReads(for url: PostgresURL) -> StandbyReads {
        guard url.endpoints.count > 1 else { return .unavailable }
        if url.standbyReads { return .always }
        return [.any, .readWrite, .primary].contains(url.targetSessionAttributes) ? .onFallback : .unavailable
    }

    /// The standby reads go to now.
    var standbyServer: PostgresURL.Endpoint? { standbyWalk?.currentServer }

    /// With `standby_reads=true`: the standby is not known down (its last connect failed and no
    /// connection is open) nor known to be further behind than `max_standby_lag` (a lag not
    /// measured yet counts as within it: the read measures it).
    public var readsGoToStandby: Bool {
        guard url.standbyReads, let readPool, !Self.knownDown(readPool.reachability) else { return false }
        guard let known = standbyLag.withLock({ $0 }) else { return true }
        return known.lag.map { $0 <= url.maxStandbyLag } ?? false
    }

    /// A connection to a standby is open and its pool's last connect did not fail.
    public var standbyAnswers: Bool {
        guard let reachability = readPool?.reachability else { return false }
        return !reachability.connectFailed && reachability.openConnections > 0
    }

    /// The last connect failed and no connection is open.
    private static func knownDown(_ reachability: (connectFailed: Bool, openConnections: Int)) -> Bool {
        reachability.connectFailed && reachability.openConnections == 0
    }

    static func connectionConfiguration(
        for url: PostgresURL,
        endpoint: PostgresURL.Endpoint? = nil,
        applicationNameSuffix: String = ""
    ) throws -> PostgresConnection.Configuration {
        let endpoint = endpoint ?? url.endpoints[0]
        let tls: PostgresConnection.Configuration.TLS
        if let settings = url.tlsSettings {
            let context = try NIOSSLContext(configuration: settings.configuration)
            tls = settings.required ? .require(context) : .prefer(context)
        } else {
            tls = .disable
        }
        var configuration = PostgresConnection.Configuration(
            host: endpoint.host,
            port: endpoint.port,
            username: url.username,
            password: url.password?.value,
            database: url.database,
            tls: tls
        )
        configuration.options.connectTimeout = .nanoseconds(url.connectTimeout.nanosecondsClamped)
        configuration.options.additionalStartupParameters = [
            ("application_name", url.applicationName + applicationNameSuffix)
        ]
        if url.sslMode != .disable, endpoint.host.isHostName {
            configuration.options.tlsServerName = endpoint.host
        }
        return configuration
    }

    public var backendName: String { "postgresql" }

    public var spanTarget: DatabaseSpanTarget {
        DatabaseSpanTarget(system: "postgresql", namespace: url.database, serverAddress: url.host, serverPort: url.port)
    }

    /// The SQLSTATE, also through a failed transaction's BEGIN, body or COMMIT.
    public func statusCode(of error: any Error) -> String? {
        if let error = error as? PostgresStandbyRefusedError { return statusCode(of: error.underlying) }
        if let error = error as? PostgresTransactionError {
            return (error.closureError ?? error.commitError ?? error.beginError).flatMap(statusCode(of:))
        }
        return sqlState(of: error)
    }

    /// With several servers in the URL: each one's last known role and whether the walk uses it.
    public func servers() -> [ServerHealth] {
        guard url.endpoints.count > 1 else { return [] }
        return hostWalk.serverStates.map { server in
            ServerHealth(
                host: server.endpoint.description,
                role: server.state.role.map(\.name),
                state: server.current ? "current" : server.ejected ? "ejected" : "available",
                lastOutcome: server.state.lastOutcome
            )
        }
    }

    /// One server of the URL as a direct connection found it (``topology()``).
    public struct ServerReport: Sendable, Equatable {
        public var server: PostgresURL.Endpoint
        /// What the server said of itself; nil when it could not be reached.
        package var serverRole: ServerRole?
        /// A standby's replay lag (zero when it has replayed all it received); nil when unknown.
        public var replayLag: Duration?
        /// Why it could not be reached, in words.
        public var error: String?

        /// `primary`, `standby` or `read-only primary`; nil when it could not be reached.
        public var role: String? { serverRole?.name }

        /// Whether this server can serve `target`, as the walk decides it (`prefer-standby`
        /// takes any server when no standby answers).
        public func serves(_ target: PostgresURL.TargetSessionAttributes) -> Bool {
            serverRole.map { target.accepts($0, relaxed: true) } ?? false
        }
    }

    /// Connects to every server of the URL directly (outside the pools) and asks its role and
    /// replay lag: what `reliabledb check` reports as the topology.
    public func topology(connectTimeout: Duration = .seconds(3)) async -> [ServerReport] {
        var reports: [ServerReport] = []
        for endpoint in url.endpoints {
            var report = ServerReport(server: endpoint)
            do {
                var configuration = try Self.connectionConfiguration(
                    for: url,
                    endpoint: endpoint,
                    applicationNameSuffix: "-topology"
                )
                configuration.options.connectTimeout = TimeAmount(connectTimeout)
                let connection = try await PostgresConnection.connect(
                    configuration: configuration,
                    id: -2,
                    logger: logger
                )
                do {
                    for try await (inRecovery, readOnly) in try await connection.query(ServerRole.query, logger: logger)
                        .decode((Bool, Bool).self)
                    {
                        report.serverRole = ServerRole(inRecovery: inRecovery, readOnly: readOnly)
                    }
                    for try await seconds in try await connection.query(Self.replayLagQuery, logger: logger)
                        .decode(Double.self) where report.serverRole?.inRecovery == true
                    {
                        report.replayLag = seconds < 0 ? nil : .milliseconds(Int64(seconds * 1000))
                    }
                } catch {
                    report.serverRole = nil
                    report.error = describePostgresError(error)
                }
                try? await connection.close()
            } catch {
                report.error = describePostgresError(error)
            }
            reports.append(report)
        }
        return reports
    }

    public func poolStatistics() -> ReliableDB.PoolStatistics {
        pool.statistics()
    }

    /// Runs `body` on a pooled connection. When the attempt's deadline passes, the running
    /// statement is cancelled with a protocol CancelRequest, and if it has not ended
    /// ``cancelGrace`` later its connection is closed, which ends it: the caller is released by its
    /// deadline plus ``cancelGrace`` whatever the server or the network does. A connection a cancel
    /// may still reach, one that saw a connection-class error, or one past its lifetime is not
    /// reused. Rows must be consumed inside `body`.
    ///
    /// With `readOnly` and `standby_reads=true`, `body` runs on a standby no further behind than
    /// `max_standby_lag`, and on the primary when no such standby answers (docs/FAILOVER.md).
    public func withConnection<R: Sendable>(
        within attempt: AttemptContext = .unbounded,
        readOnly: Bool = false,
        _ body: @escaping @Sendable (PostgresConnection) async throws -> R
    ) async throws -> R {
        let (connection, pool) = try await lease(within: attempt, readOnly: readOnly)
        let token: DeadlineScheduler.Token?
        do {
            let (grace, logger) = (cancelGrace, self.logger)
            token = try attempt.attachInterrupt {
                connection.deadlineReached(hardStopAfter: grace, logger: logger)
            }
        } catch {
            pool.release(connection, discard: false)
            throw error
        }
        let result: R
        do {
            result = try await connection.run(body)
        } catch {
            attempt.detachInterrupt(token)
            let onStandby = pool !== self.pool
            // A standby refuses what only a primary can do: the read was not one.
            let error = onStandby && statusCode(of: error) == "25006" ? PostgresStandbyRefusedError(error) : error
            let cancelled = connection.statementEnded()
            let discard =
                classify(error).discardConnection || (cancelled && !Self.isOurCancel(error))
            pool.release(connection, discard: discard)
            if !onStandby, isDemotion(error) {
                // The connections that existed with it reach the same server: none may take another write.
                logger.warning(
                    "a write was refused as read-only (25006): the server was demoted; retiring its connections"
                )
                pool.evictAll(refused: connection)
            }
            throw error
        }
        attempt.detachInterrupt(token)
        pool.release(connection, discard: connection.statementEnded())
        return result
    }

    /// Runs `body` in one transaction on `connection`: committed when it returns, rolled back when it
    /// throws or when the attempt's deadline passed before COMMIT could be sent, so a caller told
    /// "timed out" never finds the transaction committed later. `commit` records whether COMMIT
    /// was sent and answered, so a connection lost in between is reported as
    /// ``CommitOutcomeUnknownError``. Behind PgBouncer the server-side backstop is
    /// `SET LOCAL statement_timeout`, which ends with the transaction.
    package func transaction<R: Sendable>(
        on connection: PostgresConnection,
        within attempt: AttemptContext,
        commit: CommitTracker,
        _ body: (PostgresConnection) async throws -> R
    ) async throws -> R {
        let setLocal: PostgresQuery? =
            url.pgbouncer
            ? statementTimeout.map {
                PostgresQuery(unsafeSQL: "SET LOCAL statement_timeout = \(Int64($0.milliseconds))")
            } : nil
        do {
            let result = try await connection.withTransaction(logger: logger) { connection in
                if let setLocal { _ = try await connection.query(setLocal, logger: logger).collect() }
                let result = try await body(connection)
                if attempt.isExpired { throw AttemptDeadlineExceeded() }
                // Ended under us (a terminated session, a reset): COMMIT cannot be sent, and the
                // server rolled the transaction back with the session.
                if connection.isClosed { throw ConnectionClosedBeforeCommitError() }
                // withTransaction sends COMMIT next.
                commit.markSent()
                return result
            }
            commit.markAnswered()
            return result
        } catch let error as PostgresTransactionError {
            // A server error on COMMIT is an answer: the transaction did not commit.
            if let inner = error.commitError as? PSQLError, inner.code == .server { commit.markAnswered() }
            throw error
        }
    }

    /// Whether `error` is the 57014 our own CancelRequest causes ("due to user request"), not the
    /// server's `statement_timeout`: only then has the cancel been used up.
    static func isOurCancel(_ error: any Error) -> Bool {
        guard let error = error as? PSQLError, error.serverInfo?[.sqlState] == "57014" else { return false }
        return error.serverInfo?[.message]?.contains("user request") ?? false
    }

    /// A connection and the pool it goes back to. A read goes to a standby:
    /// - with `standby_reads=true`, when one answers in time and is no further behind than
    ///   `max_standby_lag` (``leaseStandby(from:within:)``), else to the primary;
    /// - on the second try of a ``ReliableDatabase/withFallback(_:_:)`` read, whatever its lag, and
    ///   nowhere else (the primary has just failed it).
    /// Either way the read's ``ReadScope`` learns which standby answered.
    private func lease(
        within attempt: AttemptContext,
        readOnly: Bool
    ) async throws -> (PooledPostgresConnection, PostgresPool) {
        guard readOnly, let readPool else { return (try await lease(within: attempt), pool) }
        let scope = ReadScope.current
        switch scope?.route {
        case .standby?:
            let connection = try await lease(from: readPool, within: attempt, wait: standbyWait(readPool))
            do {
                let lag = try await standbyLag(on: connection, within: attempt)
                noteStandbyAnswer(to: scope, lag: lag)
                return (connection, readPool)
            } catch {
                readPool.release(connection, discard: true)
                throw error
            }
        case .primary?:
            return (try await lease(within: attempt), pool)
        case .usual?, nil:
            break
        }
        if url.standbyReads, let (standby, lag) = await leaseStandby(from: readPool, within: attempt) {
            noteStandbyAnswer(to: scope, lag: lag)
            return (standby, readPool)
        }
        return (try await lease(within: attempt), pool)
    }

    private func noteStandbyAnswer(to scope: ReadScope?, lag: Duration?) {
        guard let scope else { return }
        scope.servedByStandby(
            .init(
                server: standbyServer?.description ?? "a standby",
                lag: lag,
                primaryReachable: pool.lastConnectError == nil
            )
        )
    }

    /// False while the standby is known down (its last connect failed and no connection is
    /// open), except for one call a second, which tries it again: the other reads go straight to
    /// the primary (or, on a fallback, to the kept result) instead of waiting for it.
    public func standbyWorthTrying() -> Bool {
        guard let readPool else { return false }
        guard Self.knownDown(readPool.reachability) else { return true }
        let now = clock.now
        return standbyRetryAt.withLock { retryAt in
            if let at = retryAt, now < at { return false }
            retryAt = now + .seconds(1)
            return true
        }
    }

    /// How long a read waits for a standby: the pool timeout while the standby is up (or not tried
    /// yet), as the primary would; 250 ms once its last connect failed, then the read goes on.
    private func standbyWait(_ readPool: PostgresPool) -> Duration {
        readPool.lastConnectError == nil ? poolTimeout : min(poolTimeout, .milliseconds(250))
    }

    /// A standby connection for a read and its replay lag, or nil (then the read goes to the
    /// primary): no standby answered in time (``standbyWait(_:)``), or its lag is above
    /// `max_standby_lag`.
    private func leaseStandby(
        from readPool: PostgresPool,
        within attempt: AttemptContext
    ) async -> (PooledPostgresConnection, Duration?)? {
        guard standbyWorthTrying() else { return nil }
        guard let connection = try? await lease(from: readPool, within: attempt, wait: standbyWait(readPool)) else {
            return nil
        }
        do {
            let lag = try await standbyLag(on: connection, within: attempt)
            if let lag, lag <= url.maxStandbyLag { return (connection, lag) }
            logger.debug("standby too far behind (max_standby_lag): reading from the primary")
            readPool.release(connection, discard: false)
        } catch {
            readPool.release(connection, discard: true)
        }
        return nil
    }

    /// The standby's replay lag, measured on `connection` at most once a second and stopped at the
    /// attempt's deadline like any statement; nil when unknown (which counts as too far behind).
    /// Throws when the measure failed or was stopped: the connection must then be discarded.
    private func standbyLag(
        on connection: PooledPostgresConnection,
        within attempt: AttemptContext
    ) async throws -> Duration? {
        let now = clock.now
        if let known = standbyLag.withLock({ $0 }), now - known.measuredAt < .seconds(1) { return known.lag }
        let (grace, logger) = (cancelGrace, self.logger)
        let token = try attempt.attachInterrupt {
            connection.deadlineReached(hardStopAfter: grace, logger: logger)
        }
        defer { attempt.detachInterrupt(token) }
        let lag = try await connection.run { connection in
            var seconds = 0.0
            let rows = try await connection.query(Self.replayLagQuery, logger: logger)
            for try await value in rows.decode(Double.self) { seconds = value }
            return seconds < 0 ? nil : Duration.milliseconds(Int64(seconds * 1000))
        }
        // A cancel sent at the deadline may still reach the connection's next statement.
        if connection.statementEnded() { throw AttemptDeadlineExceeded() }
        standbyLag.withLock { $0 = (lag, clock.now) }
        return lag
    }

    /// How far the standby's replay is behind, in seconds: zero when it has replayed all it
    /// received (an idle primary sends nothing, and the last replayed transaction's age would say
    /// nothing about lag), -1 when unknown (no transaction replayed since it started).
    static let replayLagQuery: PostgresQuery = """
        SELECT CASE WHEN NOT pg_is_in_recovery() OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
        ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), -1) END::float8
        """

    /// A connection within the earlier of the pool timeout and the attempt's deadline.
    private func lease(within attempt: AttemptContext) async throws -> PooledPostgresConnection {
        try await lease(from: pool, within: attempt, wait: poolTimeout)
    }

    /// A connection of `pool` within the earlier of `wait` and the attempt's deadline.
    private func lease(
        from pool: PostgresPool,
        within attempt: AttemptContext,
        wait: Duration
    ) async throws -> PooledPostgresConnection {
        let start = clock.now
        var deadline = start + wait
        if let attemptDeadline = attempt.deadline, attemptDeadline < deadline { deadline = attemptDeadline }
        do {
            let connection = try await pool.lease(until: deadline, bypassingBackoff: attempt.isBreakerProbe)
            if hasInstruments.load(ordering: .acquiring) {
                instruments.withLock { $0 }?.poolAcquireDuration.recordNanoseconds(
                    (clock.now - start).nanosecondsClamped
                )
            }
            return connection
        } catch let error as PoolLeaseError {
            let waited = clock.now - start
            switch error {
            case .timedOut where attempt.isExpired:
                pool.noteWaitEndedByDeadline()
                throw AttemptDeadlineExceeded()
            case .timedOut:
                throw DatabasePoolTimeoutError(
                    waited: waited,
                    statistics: pool.statistics(),
                    lastConnectError: pool.lastConnectError.map(describePostgresError)
                )
            case .cancelled:
                throw CancellationError()
            case .connectFailed(let cause):
                throw PostgresUnavailableError(
                    target: url.description,
                    cause: describePostgresError(cause),
                    sqlState: sqlState(of: cause)
                )
            case .shutDown:
                throw PostgresUnavailableError(target: url.description, cause: "the connection pool is shut down")
            }
        }
    }

    /// Probes with `SELECT version()` through the pool. While the pool holds no connection (at
    /// start, during an outage) a direct connection attempt comes first, so a failure names its real
    /// cause (wrong password, unknown database, refused port, TLS refused) at once instead of a
    /// generic pool timeout later.
    public func probe(within attempt: AttemptContext) async throws -> ProbeResult {
        // With several servers the pool's own walk connects (and reports each server's answer).
        if poolStatistics().total == 0, url.endpoints.count == 1, url.targetSessionAttributes == .any {
            try await diagnoseConnect(within: attempt)
        }
        let start = ContinuousClock.now
        do {
            let version = try await withConnection(within: attempt) { [logger] connection in
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

    /// One `SELECT 1` on a connection the walk opens for it, outside the pool, then closed: the
    /// breaker's prober asks this while the breaker is open. Through the walk, so after a failover
    /// it finds the new primary (and the breaker then judges that server). Bounded by the attempt's
    /// deadline; on success the pool's connect backoff is reset.
    public func probeServer(within attempt: AttemptContext) async throws {
        try await probe(through: hostWalk, within: attempt)
        // Stopped while it ran (shutdown): the pool may be gone.
        if !Task.isCancelled { pool.serverReachable() }
    }

    /// As ``probeServer(within:)``, through the walk of the standbys reads go to.
    public func probeStandby(within attempt: AttemptContext) async throws {
        guard let standbyWalk, let readPool else {
            throw PostgresUnavailableError(target: url.description, cause: "no standby")
        }
        try await probe(through: standbyWalk, within: attempt)
        if !Task.isCancelled { readPool.serverReachable() }
    }

    /// `SELECT 1` on a connection `walk` opens for it, then closed; bounded by the attempt's deadline.
    private func probe(through walk: HostWalk, within attempt: AttemptContext) async throws {
        let remaining = attempt.deadline.map { $0 - clock.now }
        if let remaining, remaining <= .zero { throw AttemptDeadlineExceeded() }
        let logger = self.logger
        let eventLoop = PostgresConnection.defaultEventLoopGroup.any()
        let connecting = walk.connect(id: -2, on: eventLoop)
        let probe = connecting.flatMap { connection in
            connection.underlying.query("SELECT 1", logger: logger).map { _ in connection }
                .flatMapErrorThrowing { error in
                    connection.close()
                    throw error
                }
        }
        guard let remaining else {
            try await probe.get().close()
            return
        }
        // The first of the probe's answer and the deadline. At the deadline the connection is
        // closed as soon as it exists, which also ends a SELECT 1 still waiting for its answer.
        let answer = eventLoop.makePromise(of: PooledPostgresConnection.self)
        let decided = FirstAnswer()
        let timeout = eventLoop.scheduleTask(in: TimeAmount(remaining)) {
            guard decided.claim() else { return }
            connecting.whenSuccess { $0.close() }
            answer.fail(AttemptDeadlineExceeded())
        }
        probe.whenComplete { result in
            guard decided.claim() else { return }
            timeout.cancel()
            answer.completeWith(result)
        }
        try await answer.futureResult.get().close()
    }

    /// A walk for a role that found none, but a server answering in another role ("is a
    /// standby"): a failover the prober should watch closely.
    public func awaitsPromotion(_ probeError: any Error) -> Bool {
        guard let error = probeError as? PostgresNoMatchingServerError else { return false }
        return error.outcomes.contains { $0.outcome.hasPrefix("is ") }
    }

    /// Where the walk sends new connections: the only server; with several, the one a walk for a
    /// role last accepted (the next walk starts there), or the one the last walk in order reached.
    /// Nil with `load_balance_hosts=random` and no role: connections go to any server, and the
    /// breaker is about them all.
    public var currentServer: String? {
        if url.endpoints.count == 1 { return url.endpoints[0].description }
        if hostWalk.target.needsRole { return hostWalk.currentServer?.description }
        guard url.loadBalanceHosts != .random else { return nil }
        return hostWalk.lastServer?.description
    }

    /// Opens and closes one connection outside the pool; throws why that fails. The connect is
    /// bounded by the attempt's deadline (PostgresNIO does not stop a connect on task cancellation).
    private func diagnoseConnect(within attempt: AttemptContext) async throws {
        var configuration = connectionConfiguration
        configuration.options.additionalStartupParameters = [("application_name", url.applicationName + "-probe")]
        if let deadline = attempt.deadline {
            let remaining = deadline - clock.now
            guard remaining > .zero else { throw AttemptDeadlineExceeded() }
            configuration.options.connectTimeout = min(configuration.options.connectTimeout, TimeAmount(remaining))
        }
        do {
            let connection = try await PostgresConnection.connect(
                configuration: configuration,
                id: -1,
                logger: logger
            )
            try await connection.close()
            pool.serverReachable()
        } catch {
            if attempt.isExpired { throw AttemptDeadlineExceeded() }
            throw PostgresUnavailableError(
                target: url.description,
                cause: describePostgresError(error),
                sqlState: sqlState(of: error)
            )
        }
    }

    /// As ``classify(_:)-swift.type.method``, except that with `target_session_attrs=read-write` or
    /// `primary`, 25006 (a write refused as read-only) means the server was demoted: a connection
    /// error that applied nothing, so the connection is discarded (its pool's other connections are
    /// retired too), the write retried, and the next connection's walk skips the demoted server
    /// (docs/FAILOVER.md).
    public func classify(_ error: any Error) -> ErrorClassification {
        if error is PostgresStandbyRefusedError { return ErrorClassification(.caller) }
        if isDemotion(error) {
            return ErrorClassification(.connection, mayHaveReachedServer: false, discardConnection: true)
        }
        return Self.classify(error)
    }

    /// A write refused as read-only where the URL asks for a writable server: its server was
    /// demoted, and every connection of the pool is retired with it.
    private func isDemotion(_ error: any Error) -> Bool {
        [.readWrite, .primary].contains(url.targetSessionAttributes) && statusCode(of: error) == "25006"
    }

    /// PostgresNIO's `PSQLError` describes itself as "Generic description to prevent accidental
    /// leakage"; this names the SQLSTATE and message, or the network cause, instead.
    public func describe(_ error: any Error) -> String {
        describePostgresError(error)
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
        await pool.shutdown()
        await readPool?.shutdown()
    }
}

/// Opens pool connections with their cancel key. Behind a pooler that refuses startup parameters
/// (PgBouncer's `08P01 unsupported startup parameter`), it drops `statement_timeout` and says so
/// once: that answer only ever comes from a pooler, so the detection is reliable.
final class Connector: Sendable {
    private let configuration: Mutex<PostgresConnection.Configuration>
    private let logger: Logger

    init(configuration: PostgresConnection.Configuration, logger: Logger) {
        self.configuration = Mutex(configuration)
        self.logger = logger
    }

    func connect(id: Int, on eventLoop: any EventLoop) -> EventLoopFuture<PooledPostgresConnection> {
        let configuration = self.configuration.withLock { $0 }
        let (connection, _) = PostgresConnection.startConnectWithBackendKey(
            on: eventLoop,
            configuration: configuration,
            id: id,
            logger: logger
        )
        return connection.map { connection, key in
            PooledPostgresConnection(id: id, underlying: connection, key: key)
        }.flatMapError { error in
            guard let error = error as? PSQLError, Self.refusesStartupParameter(error) else {
                return eventLoop.makeFailedFuture(error)
            }
            let dropped = self.configuration.withLock { configuration -> Bool in
                let before = configuration.options.additionalStartupParameters.count
                configuration.options.additionalStartupParameters.removeAll { $0.0 == "statement_timeout" }
                return configuration.options.additionalStartupParameters.count < before
            }
            guard dropped else { return eventLoop.makeFailedFuture(error) }
            self.logger.warning(
                "the server refused the statement_timeout startup parameter, as PgBouncer does: connecting without it; set pgbouncer=true in DATABASE_URL"
            )
            return self.connect(id: id, on: eventLoop)
        }
    }

    static func refusesStartupParameter(_ error: PSQLError) -> Bool {
        error.serverInfo?[.sqlState] == "08P01"
            && (error.serverInfo?[.message]?.contains("unsupported startup parameter") ?? false)
    }
}

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

/// A transaction's connection had closed when its COMMIT was due: it was never sent.
struct ConnectionClosedBeforeCommitError: Error, CustomStringConvertible {
    var description: String { "the connection closed before COMMIT could be sent" }
}

/// Decides once between racing answers (a probe and its deadline): the first ``claim()`` wins.
final class FirstAnswer: Sendable {
    private let taken = Atomic<Bool>(false)

    func claim() -> Bool {
        !taken.exchange(true, ordering: .acquiringAndReleasing)
    }
}

/// Whether a transaction's COMMIT was sent, and whether it was answered (committed or refused).
/// Shared between the statement's task and its caller, which may be released before the answer.
package final class CommitTracker: Sendable {
    private let state = Atomic<UInt8>(0)

    package init() {}

    func markSent() { state.store(1, ordering: .releasing) }
    func markAnswered() { state.store(2, ordering: .releasing) }

    /// COMMIT went out and nothing came back: it may have committed.
    package var isInFlight: Bool { state.load(ordering: .acquiring) == 1 }

    /// COMMIT went out (answered or not). Before that, a lost connection rolled the transaction back.
    package var wasSent: Bool { state.load(ordering: .acquiring) != 0 }
}

/// A read (`.read`, `.complexQuery`) ran on a standby a statement only a primary can run (25006:
/// a write, `nextval()`, `SELECT ... FOR UPDATE`): the caller's mistake, not a demotion. Run it as
/// a write (without `readOnly`) instead.
public struct PostgresStandbyRefusedError: Error, CustomStringConvertible, Sendable {
    /// The server's error.
    public var underlying: any Error

    init(_ underlying: any Error) {
        self.underlying = underlying
    }

    public var description: String {
        "A standby refused a statement of a read (\(describePostgresError(underlying))): "
            + "run it as a write, without OperationOptions.readOnly"
    }
}
