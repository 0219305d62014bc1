import PostgresNIO
import ReliableDB

/// Standby routing: which reads go to a standby, how far behind it may be, and when a standby
/// known down is tried again (Sources/ReliableDBPostgres/Documentation.docc/Failover.md).
extension PostgresBackend {
    static func standbyReads(for url: PostgresURL) -> StandbyReads {
        guard url.endpoints.count > 1 else { return .unavailable }
        if url.standbyReads { return .always }
        return [.any, .readWrite, .primary].contains(url.targetSessionAttributes) ? .onFallback : .unavailable
    }

    /// The standby reads go to now.
    var standbyServer: PostgresURL.Endpoint? { standbyWalk?.currentServer }

    /// With `standby_reads=true`, or following Patroni while it names no leader or the leader is
    /// known down: the standby is not known down (its last connect failed and no connection is
    /// open) nor known to be further behind than `max_standby_lag` (a lag not measured yet counts
    /// as within it: the read measures it).
    public var readsGoToStandby: Bool {
        guard url.standbyReads || primaryGoneFollowingPatroni else { return false }
        guard let readPool, !Self.knownDown(readPool.reachability) else { return false }
        guard let known = standbyLag.withLock({ $0 }) else { return true }
        return known.lag.map { $0 <= url.maxStandbyLag } ?? false
    }

    /// A connection to a standby is open and its pool's last connect did not fail.
    public var standbyAnswers: Bool {
        guard let reachability = readPool?.reachability else { return false }
        return !reachability.connectFailed && reachability.openConnections > 0
    }

    /// Following Patroni, no primary to read from now: Patroni names no leader, or the leader it
    /// names is known down (a killed node stays named until its leader key expires, `ttl`).
    var primaryGoneFollowingPatroni: Bool {
        patroni != nil && (patroniBetweenLeaders || Self.knownDown(pool.reachability))
    }

    /// The last connect failed and no connection is open.
    private static func knownDown(_ reachability: (connectFailed: Bool, openConnections: Int)) -> Bool {
        reachability.connectFailed && reachability.openConnections == 0
    }

    /// A connection and the pool it goes back to. A read goes to a standby:
    /// - with `standby_reads=true`, when one answers in time and is no further behind than
    ///   `max_standby_lag` (``leaseStandby(from:within:)``), else to the primary;
    /// - on the second try of a ``ReliableDatabase/withFallback(_:_:)`` read, whatever its lag, and
    ///   nowhere else (the primary has just failed it).
    /// Either way the read's ``ReadScope`` learns which standby answered.
    func lease(
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
        if url.standbyReads, let session = ConsistencySession.current {
            // A read of a session whose write's position was lost: only the primary has it.
            if session.readsNeedPrimary { return (try await lease(within: attempt), pool) }
            // A read of a session that wrote: a standby only once it has replayed that write.
            if let position = session.position {
                if let (standby, readPool, lag) = try await leaseForSession(
                    at: position,
                    maxWait: session.maxWait,
                    readPool: readPool,
                    within: attempt
                ) {
                    noteStandbyAnswer(to: scope, lag: lag)
                    return (standby, readPool)
                }
                return (try await lease(within: attempt), pool)
            }
        }
        if url.standbyReads, let (standby, lag) = await leaseStandby(from: readPool, within: attempt) {
            noteStandbyAnswer(to: scope, lag: lag)
            return (standby, readPool)
        }
        if patroni != nil {
            return try await leaseReadFollowingPatroni(readPool, scope: scope, within: attempt)
        }
        return (try await lease(within: attempt), pool)
    }

    /// Following Patroni, a read goes to a replica (within `max_standby_lag`) while there is no
    /// primary (``primaryGoneFollowingPatroni``) or when no server took a primary connection; only
    /// when no replica answers does it wait for a leader as a write does. Such reads are counted by
    /// the standby's breaker (``readsGoToStandby``), so writes failing meanwhile do not stop them.
    private func leaseReadFollowingPatroni(
        _ readPool: PostgresPool,
        scope: ReadScope?,
        within attempt: AttemptContext
    ) async throws -> (PooledPostgresConnection, PostgresPool) {
        if !primaryGoneFollowingPatroni {
            do {
                return (try await lease(from: pool, within: attempt, wait: poolTimeout), pool)
            } catch is PostgresUnavailableError {
                // No primary now: a replica below.
            }
        }
        if let (standby, lag) = await leaseStandby(from: readPool, within: attempt) {
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
    func leaseStandby(
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
        let token = try stopStatement(on: connection, atDeadlineOf: attempt)
        defer { attempt.detachInterrupt(token) }
        let logger = self.logger
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
