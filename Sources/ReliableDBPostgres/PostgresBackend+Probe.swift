import NIOCore
import PostgresNIO
import ReliableDB
import Synchronization

/// Probe and diagnosis: the health check's probe, the breaker prober's `SELECT 1` on a fresh
/// connection, and a direct connect that names why the server cannot be reached.
extension PostgresBackend {
    /// One round trip: the version, and the server's client connections against its limit, which
    /// every instance of a fleet shares (``ServerConnections``).
    static let probeQuery: PostgresQuery = """
        SELECT version(),
               (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int,
               current_setting('max_connections')::int,
               current_setting('superuser_reserved_connections')::int
        """

    /// Probes through the pool with one round trip: the server's version and its connections in use
    /// against its limit (`ServerConnections`). While the pool holds no connection (at
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
            let (version, connections) = try await withConnection(within: attempt) { [logger] connection in
                var answer = ("unknown", ServerConnections?.none)
                for try await row in try await connection.query(Self.probeQuery, logger: logger) {
                    let (version, inUse, max, reserved) = try row.decode((String, Int, Int, Int).self)
                    answer = (version, ServerConnections(inUse: inUse, max: max, reserved: reserved))
                }
                return answer
            }
            serverConnections.withLock { $0 = connections }
            return ProbeResult(
                serverVersion: version,
                roundTrip: ContinuousClock.now - start,
                serverConnections: connections
            )
        } catch is DatabasePoolTimeoutError where poolStatistics().total == 0 {
            if url.endpoints.count == 1, url.targetSessionAttributes == .any {
                try await diagnoseConnect(within: attempt)
            } else {
                // The walk says what each server answered (the first server alone would not).
                do {
                    try await probe(through: hostWalk, within: attempt)
                } catch let error as PostgresNoMatchingServerError {
                    throw unavailable(error)
                }
            }
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
                configuration: try await authenticating(configuration),
                id: -1,
                logger: logger
            )
            try await connection.close()
            pool.serverReachable()
        } catch {
            if attempt.isExpired { throw AttemptDeadlineExceeded() }
            throw unavailable(error)
        }
    }
}

/// Decides once between racing answers (a probe and its deadline): the first ``claim()`` wins.
final class FirstAnswer: Sendable {
    private let taken = Atomic<Bool>(false)

    func claim() -> Bool {
        !taken.exchange(true, ordering: .acquiringAndReleasing)
    }
}
