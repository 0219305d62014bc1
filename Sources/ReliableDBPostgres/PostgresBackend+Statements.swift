import Logging
import PostgresNIO
import ReliableDB

/// Statements: a leased connection, the deadline that stops its statement, and what the
/// connection is worth afterwards (Sources/ReliableDB/Documentation.docc/Deadlines.md).
extension PostgresBackend {
    /// Runs `body` on a pooled connection. When the attempt's deadline passes, the running
    /// statement is cancelled with a protocol CancelRequest, and if it has not ended
    /// ``cancelGrace`` later its connection is closed, which ends it: the caller is released by its
    /// deadline plus ``cancelGrace`` whatever the server or the network does. A connection a cancel
    /// may still reach, one that saw a connection-class error, or one past its lifetime is not
    /// reused. Rows must be consumed inside `body`.
    ///
    /// With `readOnly` and `standby_reads=true`, `body` runs on a standby no further behind than
    /// `max_standby_lag`, and on the primary when no such standby answers (Sources/ReliableDBPostgres/Documentation.docc/Failover.md).
    ///
    /// `holder` names the lease in leak warnings and pool timeouts (``LeaseHolder``).
    public func withConnection<R: Sendable>(
        within attempt: AttemptContext = .unbounded,
        readOnly: Bool = false,
        holder: LeaseHolder? = nil,
        _ body: @escaping @Sendable (PostgresConnection) async throws -> R
    ) async throws -> R {
        let (connection, pool) = try await lease(within: attempt, readOnly: readOnly)
        let leaseNumber = holder.map { leases.leased(by: $0, at: clock.now) }
        defer { if let leaseNumber { leases.returned(leaseNumber) } }
        // A write of a read-your-writes session learns its position on the same connection.
        let session = pool === self.pool && !readOnly ? ConsistencySession.current : nil
        let body: @Sendable (PostgresConnection) async throws -> R =
            if let session {
                { [self] connection in
                    let result = try await body(connection)
                    do {
                        try await learnPosition(on: connection, for: session)
                    } catch {
                        // The write is done: its caller must hear so. The session's reads go to
                        // the primary instead, which has it.
                        session.positionUnknown()
                    }
                    return result
                }
            } else {
                body
            }
        let token: DeadlineScheduler.Token?
        do {
            token = try stopStatement(on: connection, atDeadlineOf: attempt)
        } catch {
            pool.release(connection, discard: false)
            throw error
        }
        // An attempt whose deadline is later than the connection's backstop raises it for this lease.
        let raise = attempt.deadline == nil ? nil : backstop.setForSession(within: attempt, now: clock.now)
        let result: R
        do {
            if let raise {
                let logger = self.logger
                result = try await connection.run { connection in
                    _ = try await connection.query(raise, logger: logger).collect()
                    let result = try await body(connection)
                    _ = try await connection.query(ServerBackstop.reset, logger: logger).collect()
                    return result
                }
            } else {
                result = try await connection.run(body)
            }
        } catch {
            attempt.detachInterrupt(token)
            let onStandby = pool !== self.pool
            // A standby refuses what only a primary can do: the read was not one.
            let error = onStandby && statusCode(of: error) == "25006" ? PostgresStandbyRefusedError(error) : error
            let cancelled = connection.statementEnded()
            // A raised backstop may still be set: the connection would carry it to its next caller.
            let discard =
                classify(error).discardConnection || (cancelled && !Self.isOurCancel(error)) || raise != nil
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

    /// Whether `error` is the 57014 our own CancelRequest causes ("due to user request"), not the
    /// server's `statement_timeout`: only then has the cancel been used up.
    static func isOurCancel(_ error: any Error) -> Bool {
        guard let error = error as? PSQLError, error.serverInfo?[.sqlState] == "57014" else { return false }
        return error.serverInfo?[.message]?.contains("user request") ?? false
    }

    /// Arms the attempt's deadline to stop the statement running on `connection`: a CancelRequest at
    /// the deadline, and the connection closed ``cancelGrace`` later if the statement has not ended.
    /// Every statement a backend runs for a caller goes through this, so none outlives its deadline.
    func stopStatement(
        on connection: PooledPostgresConnection,
        atDeadlineOf attempt: AttemptContext
    ) throws -> DeadlineScheduler.Token? {
        let (grace, logger) = (cancelGrace, self.logger)
        return try attempt.attachInterrupt {
            connection.deadlineReached(hardStopAfter: grace, logger: logger)
        }
    }

    /// What a transaction opened on a leased connection of `attempt` sends right after BEGIN: its
    /// server-side backstop behind PgBouncer (`SET LOCAL` of `statement_timeout` and
    /// `idle_in_transaction_session_timeout`), nil elsewhere, where
    /// the lease's setting covers it. For callers that send BEGIN themselves (Fluent's nested
    /// transactions).
    package func transactionBackstop(within attempt: AttemptContext) -> PostgresQuery? {
        backstop.setLocal(within: attempt, now: clock.now)
    }
}
