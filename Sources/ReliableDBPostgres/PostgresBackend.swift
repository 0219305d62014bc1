import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO
import ReliableDB
import ReliableDBPool
import Synchronization

/// The PostgreSQL backend: PostgresNIO connections in a pool of its own (`PostgresPool`, the I/O
/// shell of the shared lease-and-deadline state machine), with exact statistics, a wait for a
/// connection bounded by the earlier of the pool timeout and the operation's deadline, and a
/// deadline that stops the statement on the server and always releases the caller
/// (Sources/ReliableDB/Documentation.docc/Deadlines.md).
public final class PostgresBackend: DatabaseBackend, StandbyRouting {
    public let url: PostgresURL
    /// The most connections of each pool now (`DB_CONNECTION_LIMIT`, live: ``resizePool(maximumConnections:)``).
    public var connectionLimit: Int { pool.limit }
    public let poolTimeout: Duration
    /// How long after its deadline a statement that a CancelRequest did not stop is cut off by
    /// closing its connection: the latest a caller returns is its deadline plus this.
    public let cancelGrace: Duration
    let connectionConfiguration: PostgresConnection.Configuration
    /// Where new connections get their password when a provider was given (Wire/Credentials.swift).
    let credentials: CredentialCache?
    /// Who holds each leased connection, and the leak detection on it (Leases.swift).
    let leases: LeaseRegistry
    /// The connect over the URL's servers that the pool uses.
    let hostWalk: HostWalk
    /// The server-side `statement_timeout` and when a statement or transaction needs its own.
    let backstop: ServerBackstop
    /// Whether connections go through a transaction-pooling PgBouncer, which hands each
    /// transaction to any of its server connections: `pgbouncer=true` in the URL, or found when the
    /// pooler refused a startup parameter. Behind one, prepare nothing by name
    /// (`PostgresPreparedStatement`, `prepare(query:)`): the statement would be missing (26000)
    /// on the server connection the next transaction gets. Statements ReliableDB sends itself are
    /// never prepared by name.
    public var behindPooler: Bool { backstop.pooler.isDetected }
    let pool: PostgresPool
    /// Connections to standbys for reads (with several servers, ``standbyReads``), else nil; none
    /// is opened until a read needs one.
    let readPool: PostgresPool?
    /// The last replay lag a read connection measured, and when (StandbyReads below).
    let standbyLag = Mutex<(lag: Duration?, measuredAt: MonotonicTime)?>(nil)
    /// While the standby is known down: when a read may try it again (``standbyWorthTrying()``).
    let standbyRetryAt = Mutex<MonotonicTime?>(nil)
    /// The walk of ``readPool``: the standby it connects to.
    let standbyWalk: HostWalk?
    /// Patroni's view of the cluster, when `patroni` was given (Failover/PostgresBackend+Patroni.swift).
    let patroni: PatroniTopology?
    /// Where the reads of consistency sessions went (Standby/PostgresBackend+Consistency.swift).
    let consistency = Mutex(ConsistencyStatistics())
    /// Patroni members the URL does not list, warned about once each.
    let unlistedMembers = Mutex<Set<String>>([])
    let clock: any ReliabilityClock
    let logger: Logger
    /// The server's connection slots at the last successful probe, which names the limit when the
    /// server refuses a connection for want of one (53300).
    let serverConnections = Mutex<ServerConnections?>(nil)
    let instruments = Mutex<ReliabilityInstruments?>(nil)
    /// Read on every lease, so a pool without instruments takes no lock for them.
    let hasInstruments = Atomic<Bool>(false)

    /// Opens a pool (connections are made on demand) for `url`.
    ///
    /// - Parameters:
    ///   - url: the server or servers to connect to, and how (TLS, `target_session_attrs`, PgBouncer).
    ///   - connectionLimit: the most connections (`DB_CONNECTION_LIMIT`).
    ///   - minimumIdleConnections: connections opened from the start, two at a time, and kept
    ///     idle while the server is reachable (`DB_MIN_IDLE_CONNECTIONS`), so a new instance's first
    ///     requests do not pay for connect, TLS and authentication; idle ones within it never idle out.
    ///   - poolTimeout: the longest wait for a connection (`DB_POOL_TIMEOUT`).
    ///   - maxLifetime: connections are retired after this, minus up to 5% jitter so they do not
    ///     all reconnect at once.
    ///   - idleTimeout: idle connections are closed after this.
    ///   - keepAliveInterval: a connection idle this long is checked with `SELECT 1` (and closed
    ///     if that fails) before a caller can get a dead one; it also keeps NAT and firewall state.
    ///   - statementTimeout: the server-side `statement_timeout` set on every connection, a backstop
    ///     for when a cancel request cannot reach the server; an operation whose deadline is later
    ///     raises it for its own statements. Nil leaves the server's setting. Behind PgBouncer
    ///     (`pgbouncer=true`) it is set per transaction instead. The default is what the default
    ///     timeouts need (``defaultStatementTimeout``).
    ///   - cancelGrace: see ``cancelGrace``.
    ///   - maxServerEjection: with several servers in the URL, the longest a server that keeps
    ///     failing is tried after the others (Sources/ReliableDBPostgres/Documentation.docc/Failover.md);
    ///     1 s after its first failure, doubling.
    ///   - patroni: a Patroni cluster's REST APIs (`DB_PATRONI_URLS`), read for the leader and the
    ///     replicas of the URL's servers; nil to learn them from connections alone.
    ///   - credentials: where every new connection gets its password (`DB_PASSWORD_FILE`, a
    ///     token signer), instead of the URL's; asked again once when the server refuses it.
    ///   - leakDetectionThreshold: a lease held this long logs one warning naming its operation
    ///     and call site, and counts in `db_connection_leaks_total` (`DB_LEAK_DETECTION_THRESHOLD`);
    ///   nil turns it off. Pool timeouts name the holders either way.
    ///   - clock: the clock deadlines, pool timers and the ejection backoff are measured on.
    ///   - logger: where connection and server changes are logged.
    public init(
        url: PostgresURL,
        connectionLimit: Int = 10,
        minimumIdleConnections: Int = 0,
        poolTimeout: Duration = .seconds(10),
        maxLifetime: Duration = .seconds(1800),
        idleTimeout: Duration = .seconds(60),
        keepAliveInterval: Duration = .seconds(30),
        statementTimeout: Duration? = PostgresBackend.defaultStatementTimeout,
        cancelGrace: Duration = .milliseconds(50),
        maxServerEjection: Duration = .seconds(30),
        patroni: PatroniConfiguration? = nil,
        credentials: PostgresCredentialsProvider? = nil,
        leakDetectionThreshold: Duration? = nil,
        clock: any ReliabilityClock = SystemClock(),
        logger: Logger = Logger(label: "reliabledb.postgres")
    ) throws {
        self.url = url
        self.poolTimeout = poolTimeout
        self.cancelGrace = cancelGrace
        let pooler = PoolerDetection(declared: url.pgbouncer, logger: logger)
        let backstop = ServerBackstop(connectionDefault: statementTimeout, pooler: pooler)
        self.backstop = backstop
        self.clock = clock
        self.logger = logger
        let credentialCache = credentials.map { CredentialCache(provider: $0, clock: clock) }
        self.credentials = credentialCache
        leases = LeaseRegistry(threshold: leakDetectionThreshold, clock: clock, logger: logger)
        // One configuration per server of the URL; the walk picks among them (HostWalk.swift).
        var configurations: [PostgresConnection.Configuration] = []
        for endpoint in url.endpoints {
            var configuration = try Self.connectionConfiguration(for: url, endpoint: endpoint)
            configuration.options.additionalStartupParameters += backstop.startupParameters
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
            let connector = Connector(
                configuration: poolConnectConfiguration,
                pooler: pooler,
                credentials: credentialCache,
                logger: logger
            )
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
        // Only the primary pool is kept warm: standby connections open when reads need them.
        var primaryConfiguration = poolConfiguration
        primaryConfiguration.minimumIdle = minimumIdleConnections
        pool = PostgresPool(configuration: primaryConfiguration, clock: clock, logger: logger) { id, eventLoop in
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
        if let patroni {
            try Self.validate(patroni, for: url)
            let topology = PatroniTopology(configuration: patroni, clock: clock, logger: logger)
            self.patroni = topology
            topology.start { [weak self] previous, current in self?.follow(current, after: previous) }
        } else {
            self.patroni = nil
        }
    }

    /// The server-side backstop the default timeouts need: the longest default timeout plus 5 s.
    public static var defaultStatementTimeout: Duration? {
        ServerBackstop.duration(for: TimeoutConfiguration())
    }

    deinit {
        // The pools' alarms hold their pools (PostgresPool.detachAlarm): without a shutdown, this ends them.
        pool.detachAlarm()
        readPool?.detachAlarm()
        leases.stop()
    }

    /// Reads go to a standby always with `standby_reads=true`, and on a fallback with several
    /// servers when the primary's walk looks for a primary (`any`, `read-write`, `primary`).
    public let standbyReads: StandbyReads

    // MARK: - Connection settings

    /// PostgresNIO's settings for one server of the URL: TLS as `sslmode` says (with the host name
    /// for SNI), the URL's connect timeout and `application_name`.
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

    /// `configuration` with the provider's credentials, for a connection outside the pools (a
    /// probe's diagnosis, the topology report).
    func authenticating(
        _ configuration: PostgresConnection.Configuration
    ) async throws
        -> PostgresConnection.Configuration
    {
        guard let credentials else { return configuration }
        let answer = try await credentials.current(refresh: false)
        var configuration = configuration
        configuration.username = answer.username ?? configuration.username
        configuration.password = answer.password.value
        return configuration
    }

    // MARK: - DatabaseBackend

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

    public func poolStatistics() -> PoolStatistics {
        pool.statistics()
    }

    /// As ``classify(_:)-swift.type.method``, except that with `target_session_attrs=read-write` or
    /// `primary`, 25006 (a write refused as read-only) means the server was demoted: a connection
    /// error that applied nothing, so the connection is discarded (its pool's other connections are
    /// retired too), the write retried, and the next connection's walk skips the demoted server
    /// (Sources/ReliableDBPostgres/Documentation.docc/Failover.md).
    public func classify(_ error: any Error) -> ErrorClassification {
        if error is PostgresStandbyRefusedError { return ErrorClassification(.caller) }
        if isDemotion(error) {
            return ErrorClassification(.connection, mayHaveReachedServer: false, discardConnection: true)
        }
        return Self.classify(error)
    }

    /// A write refused as read-only where the URL asks for a writable server: its server was
    /// demoted, and every connection of the pool is retired with it.
    func isDemotion(_ error: any Error) -> Bool {
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
        leases.instruments.withLock { $0 = instruments }
        hasInstruments.store(true, ordering: .releasing)
    }

    /// Both pools take the new maximum: idle connections beyond it close now, leased ones when
    /// they come back.
    public func resizePool(maximumConnections: Int) -> Bool {
        pool.shell.resize(maximumConnections: maximumConnections)
        readPool?.shell.resize(maximumConnections: maximumConnections)
        return true
    }

    /// Connects of the primary pool in flight now: a warm-up opens at most two at a time.
    package var connecting: Int { pool.connecting }

    /// Closes every connection; in-flight statements fail.
    public func shutdown() async throws {
        patroni?.stop()
        leases.stop()
        await pool.shutdown()
        await readPool?.shutdown()
    }
}
