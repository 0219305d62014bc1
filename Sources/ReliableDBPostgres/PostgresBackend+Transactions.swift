import Logging
import PostgresNIO
import ReliableDB
import Synchronization

/// Transactions: COMMIT only while the deadline allows it, and what is known of a COMMIT whose
/// answer was lost.
extension PostgresBackend {
    /// Runs `body` in one transaction on `connection`: committed when it returns, rolled back when it
    /// throws or when the attempt's deadline passed before COMMIT could be sent, so a caller told
    /// "timed out" never finds the transaction committed later. `commit` records whether COMMIT
    /// was sent and answered, so a connection lost in between is reported as
    /// ``CommitOutcomeUnknownError``. When the connection's server-side backstop does not cover the
    /// attempt (behind PgBouncer, or a deadline later than it), the transaction sets its own with
    /// `SET LOCAL` of the backstop's settings, which ends with it.
    package func transaction<R: Sendable>(
        on connection: PostgresConnection,
        within attempt: AttemptContext,
        commit: CommitTracker,
        _ body: (PostgresConnection) async throws -> R
    ) async throws -> R {
        let setLocal = backstop.setLocal(within: attempt, now: clock.now)
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
}

/// A transaction's connection had closed when its COMMIT was due: it was never sent.
struct ConnectionClosedBeforeCommitError: Error, CustomStringConvertible {
    var description: String { "the connection closed before COMMIT could be sent" }
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
