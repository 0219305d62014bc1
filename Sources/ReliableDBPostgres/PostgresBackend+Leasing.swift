import ReliableDB
import ReliableDBPool

/// Leasing: a connection of a pool within its wait and the attempt's deadline, and what each way a
/// lease fails means to the caller.
extension PostgresBackend {
    /// A connection within the earlier of the pool timeout and the attempt's deadline. Following
    /// Patroni, a lease that finds no leader waits for Patroni to name one
    /// (``leaseFollowingPatroni(_:within:)``); a breaker probe does not wait.
    func lease(within attempt: AttemptContext) async throws -> PooledPostgresConnection {
        if let patroni, !attempt.isBreakerProbe { return try await leaseFollowingPatroni(patroni, within: attempt) }
        return try await lease(from: pool, within: attempt, wait: poolTimeout)
    }

    /// A connection of `pool` within the earlier of `wait` and the attempt's deadline.
    func lease(
        from pool: PostgresPool,
        within attempt: AttemptContext,
        wait: Duration
    ) async throws -> PooledPostgresConnection {
        let start = clock.now
        do {
            let connection = try await pool.lease(
                timeout: wait,
                deadline: attempt.deadline,
                bypassingBackoff: attempt.isBreakerProbe
            )
            instrumentsIfAny?.poolAcquireDuration.recordNanoseconds((clock.now - start).nanosecondsClamped)
            return connection
        } catch let error as PoolLeaseError {
            let waited = clock.now - start
            switch error {
            case .deadlineReached:
                throw AttemptDeadlineExceeded()
            case .timedOut:
                throw DatabasePoolTimeoutError(
                    waited: waited,
                    statistics: pool.statistics(),
                    lastConnectError: pool.lastConnectError.map(describeConnectError),
                    holders: leases.holders(at: clock.now)
                )
            case .cancelled:
                throw CancellationError()
            case .connectFailed(let cause):
                throw unavailable(cause)
            case .shutDown:
                throw PostgresUnavailableError(target: url.description, cause: "the connection pool is shut down")
            }
        }
    }
}

extension PostgresBackend {
    /// The instruments, read without taking their lock when there are none (every lease asks).
    var instrumentsIfAny: ReliabilityInstruments? {
        hasInstruments.load(ordering: .acquiring) ? instruments.withLock { $0 } : nil
    }

    /// The server could not be reached because of `cause`; a refusal for want of a slot (53300)
    /// names the limit with the last probe's figures.
    func unavailable(_ cause: any Error) -> PostgresUnavailableError {
        PostgresUnavailableError(url: url, cause: cause, serverConnections: serverConnections.withLock { $0 })
    }

    /// Why a connect failed, in words, by the same rule as ``unavailable(_:)``.
    func describeConnectError(_ error: any Error) -> String {
        let described = describePostgresError(error)
        guard sqlState(of: error) == "53300" else { return described }
        return PostgresUnavailableError.noSlotLeft(described, serverConnections: serverConnections.withLock { $0 })
    }
}
