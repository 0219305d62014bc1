import Logging
import PostgresNIO
import ReliableDB
import Synchronization

/// Read-your-writes by WAL position: a write in a ``ConsistencySession`` learns its position on
/// the primary, and a read of the session goes to a standby only once that standby has replayed
/// it (Sources/ReliableDB/Documentation.docc/ReadYourWrites.md).
extension PostgresBackend {
    /// Where the reads of a session went, and why.
    public struct ConsistencyStatistics: Sendable, Equatable {
        /// Reads of a session with a position that a standby served, having replayed it.
        public var servedByStandby = 0
        /// Reads sent to the primary because no standby had replayed the position in time.
        public var sentToPrimary = 0
        /// Reads sent to the primary because the position belongs to another history (another
        /// cluster or timeline: a failover happened since the write).
        public var otherHistory = 0
        /// Reads that waited for a standby's replay, and how long they waited in total.
        public var waits = 0
        public var waited = Duration.zero
        /// Writes whose position was learnt for a session.
        public var positionsLearnt = 0

        public init() {}
    }

    /// What the sessions' reads and writes did so far.
    public var consistencyStatistics: ConsistencyStatistics { consistency.withLock { $0 } }

    /// The WAL position just after a write, in one round trip: at or past its COMMIT.
    static let positionQuery: PostgresQuery = """
        SELECT pg_current_wal_insert_lsn()::text, (SELECT system_identifier FROM pg_control_system())::text, \
        (SELECT timeline_id FROM pg_control_checkpoint())
        """

    /// What a standby has replayed, on which history, in one round trip.
    static let replayQuery: PostgresQuery = """
        SELECT pg_last_wal_replay_lsn()::text, (SELECT received_tli FROM pg_stat_wal_receiver), \
        (SELECT system_identifier FROM pg_control_system())::text
        """

    /// Reads the primary's position on `connection` right after a write and moves `session` to it.
    func learnPosition(on connection: PostgresConnection, for session: ConsistencySession) async throws {
        let rows = try await connection.query(Self.positionQuery, logger: logger)
        for try await (lsn, system, timeline) in rows.decode((String, String, Int).self) {
            guard let lsn = WALPosition.lsn(parsing: lsn) else { continue }
            session.advance(to: WALPosition(systemIdentifier: system, timeline: timeline, lsn: lsn))
            consistency.withLock { $0.positionsLearnt += 1 }
        }
    }

    /// A connection for a read of a session at `position`: a standby once it has replayed the
    /// position (waiting up to the session's `maxWait`), else the primary.
    func leaseForSession(
        at position: WALPosition,
        maxWait: Duration,
        readPool: PostgresPool,
        within attempt: AttemptContext
    ) async throws -> (PooledPostgresConnection, PostgresPool, Duration?)? {
        let start = clock.now
        guard let (standby, lag) = await leaseStandby(from: readPool, within: attempt) else {
            consistency.withLock { $0.sentToPrimary += 1 }
            instrumentsIfAny?.consistencyReads["primary"]?.increment()
            ConsistencyRouteNote.current?.note("primary")
            return nil
        }
        let outcome: ReplayOutcome
        do {
            outcome = try await awaitReplay(of: position, on: standby, until: start + maxWait, within: attempt)
        } catch {
            readPool.release(standby, discard: true)
            throw error
        }
        consistency.withLock { counts in
            switch outcome {
            case .replayed(let waited):
                counts.servedByStandby += 1
                if waited > .zero {
                    counts.waits += 1
                    counts.waited += waited
                }
            case .notInTime(let waited):
                counts.sentToPrimary += 1
                counts.waits += 1
                counts.waited += waited
            case .otherHistory:
                counts.otherHistory += 1
            }
        }
        switch outcome {
        case .replayed: ConsistencyRouteNote.current?.note("standby")
        case .notInTime: ConsistencyRouteNote.current?.note("primary")
        case .otherHistory: ConsistencyRouteNote.current?.note("other_history")
        }
        if let instruments = instrumentsIfAny {
            switch outcome {
            case .replayed(let waited):
                instruments.consistencyReads["standby"]?.increment()
                instruments.consistencyWait.recordNanoseconds(waited.nanosecondsClamped)
            case .notInTime(let waited):
                instruments.consistencyReads["primary"]?.increment()
                instruments.consistencyWait.recordNanoseconds(waited.nanosecondsClamped)
            case .otherHistory:
                instruments.consistencyReads["other_history"]?.increment()
            }
        }
        guard case .replayed = outcome else {
            readPool.release(standby, discard: false)
            if case .otherHistory = outcome {
                logger.debug(
                    "a consistency token of another history (a failover since the write): reading from the primary"
                )
            }
            return nil
        }
        return (standby, readPool, lag)
    }

    enum ReplayOutcome {
        case replayed(waited: Duration)
        case notInTime(waited: Duration)
        case otherHistory
    }

    /// Polls the standby's replay every 10 ms until it reaches `position` or `limit` passes. Each
    /// check is stopped at the attempt's deadline like any statement.
    private func awaitReplay(
        of position: WALPosition,
        on connection: PooledPostgresConnection,
        until limit: MonotonicTime,
        within attempt: AttemptContext
    ) async throws -> ReplayOutcome {
        let start = clock.now
        let logger = self.logger
        while true {
            let token = try stopStatement(on: connection, atDeadlineOf: attempt)
            defer { attempt.detachInterrupt(token) }
            let replayed = try await connection.run { connection -> WALPosition? in
                var found: WALPosition?
                let rows = try await connection.query(Self.replayQuery, logger: logger)
                for try await (lsn, timeline, system) in rows.decode((String?, Int?, String).self) {
                    guard let lsn = lsn.flatMap(WALPosition.lsn(parsing:)), let timeline else { continue }
                    found = WALPosition(systemIdentifier: system, timeline: timeline, lsn: lsn)
                }
                return found
            }
            if connection.statementEnded() { throw AttemptDeadlineExceeded() }
            guard let replayed, replayed.systemIdentifier == position.systemIdentifier,
                replayed.timeline == position.timeline
            else { return .otherHistory }
            let now = clock.now
            if replayed.lsn >= position.lsn { return .replayed(waited: now - start) }
            if now >= limit { return .notInTime(waited: now - start) }
            try await clock.sleep(until: min(limit, now + .milliseconds(10)))
        }
    }
}
