import Logging
import NIOCore
import PostgresNIO
import ReliableDB
import ReliableDBPool
import Synchronization

/// A pooled PostgreSQL connection with what the pool alone does not know: its cancel key, the
/// caller its current statement answers, and whether a deadline is stopping that statement.
///
/// How a deadline stops a statement, and why this way, is docs/DEADLINES.md: a protocol
/// CancelRequest (which only ever reaches this connection's own statement, also through PgBouncer),
/// and, if the statement has not ended `hardStopAfter` later, closing the connection. PostgresNIO
/// 1.33.2 drops a statement written after its connection was torn down without ever answering it,
/// so closing alone does not release the caller: once the connection is closed the caller is
/// answered with ``PostgresConnectionLostError`` (``abandonGrace`` after the close, time for an
/// answer already on its way to arrive), whether or not the driver ever answers.
final class PooledPostgresConnection: Sendable {
    /// How long after the connection closed a statement that has not answered is abandoned.
    static let abandonGrace = TimeAmount.milliseconds(10)
    let id: Int
    let underlying: PostgresConnection
    /// The loop the connection does its I/O on, read once (the pool compares it on every lease).
    let eventLoop: any EventLoop
    /// The key a CancelRequest names; nil when the server sent none.
    let key: BackendKey?
    /// Runs statement bodies on the connection's own event loop, where its replies arrive.
    let executor: EventLoopExecutor
    private let state = Mutex(State())

    private struct State {
        var closeReason: PoolCloseReason?
        /// Answers the caller of the running statement with an error, once.
        var abandon: (@Sendable (any Error) -> Void)?
        var isClosed = false
        /// Set by the deadline: a cancel was sent for the running statement.
        var cancelSent = false
        var hardStop: Scheduled<Void>?
    }

    init(id: Int, underlying: PostgresConnection, key: BackendKey?) {
        self.id = id
        self.underlying = underlying
        eventLoop = underlying.eventLoop
        executor = EventLoopExecutor(underlying.eventLoop)
        self.key = key
        underlying.closeFuture.whenComplete { [self] _ in
            eventLoop.scheduleTask(in: Self.abandonGrace) { [self] in
                let abandon = state.withLock { state in
                    state.isClosed = true
                    defer { state.abandon = nil }
                    return state.abandon
                }
                abandon?(PostgresConnectionLostError())
            }
        }
    }

    /// Runs `body` on the connection in a task of its own and returns its result, or throws
    /// ``PostgresConnectionLostError`` when the connection closes and `body` has not answered
    /// (see the type's documentation). Cancelling the caller cancels `body`.
    func run<R: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection) async throws -> R
    ) async throws -> R {
        let underlying = self.underlying
        let task = Mutex<Task<Void, Never>?>(nil)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<R, any Error>) in
                let answer = AnswerOnce(continuation)
                let closed = state.withLock { state in
                    if !state.isClosed { state.abandon = { answer.resume(throwing: $0) } }
                    return state.isClosed
                }
                if closed {
                    answer.resume(throwing: PostgresConnectionLostError())
                    return
                }
                let started = Task(executorPreference: executor) {
                    let outcome: Result<R, any Error>
                    do {
                        outcome = .success(try await body(underlying))
                    } catch {
                        outcome = .failure(error)
                    }
                    answer.resume(with: outcome)
                }
                task.withLock { $0 = started }
            }
        } onCancel: {
            task.withLock { $0 }?.cancel()
        }
    }

    /// Why the pool closed it; nil when the server or the network did.
    var closeReason: PoolCloseReason? {
        state.withLock { $0.closeReason }
    }

    func markClosing(_ reason: PoolCloseReason) {
        state.withLock { if $0.closeReason == nil { $0.closeReason = reason } }
    }

    func close() {
        underlying.close().whenComplete { _ in }
    }

    /// The deadline passed while a statement runs. Called by the deadline scheduler under its lock,
    /// so it only starts work: the CancelRequest, and the hard stop `hardStopAfter` from now.
    func deadlineReached(cancelTimeout: Duration, hardStopAfter: Duration, logger: Logger) {
        let hardStop = eventLoop.scheduleTask(in: TimeAmount(hardStopAfter)) { [self] in
            markClosing(.broken)
            close()
        }
        state.withLock {
            $0.cancelSent = true
            $0.hardStop = hardStop
        }
        guard let key else {
            logger.debug("no cancel key: the statement is stopped by closing the connection")
            return
        }
        let eventLoop = self.eventLoop
        Task {
            do {
                if let address = key.serverAddress {
                    try await sendCancelRequest(to: address, key: key, timeout: cancelTimeout, on: eventLoop)
                }
            } catch {
                logger.debug("cancel request not delivered", metadata: ["error": "\(error)"])
            }
        }
    }

    /// The statement ended (returned or threw). Returns whether a deadline sent a cancel for it; the
    /// cancel may still be on its way, so unless the statement failed with our own cancel's 57014,
    /// the connection must not run another statement.
    func statementEnded() -> Bool {
        let (sent, hardStop) = state.withLock { state in
            defer {
                state.cancelSent = false
                state.hardStop = nil
                state.abandon = nil
            }
            return (state.cancelSent, state.hardStop)
        }
        hardStop?.cancel()
        return sent
    }
}

/// Resumes a continuation once; later answers (a body that returns after its caller was released)
/// are dropped.
final class AnswerOnce<R: Sendable>: Sendable {
    private let continuation: Mutex<CheckedContinuation<R, any Error>?>

    init(_ continuation: CheckedContinuation<R, any Error>) {
        self.continuation = Mutex(continuation)
    }

    func resume(with result: Result<R, any Error>) {
        let continuation = self.continuation.withLock { slot in
            defer { slot = nil }
            return slot
        }
        continuation?.resume(with: result)
    }

    func resume(throwing error: any Error) {
        resume(with: .failure(error))
    }
}

/// The connection closed while a statement ran and the statement never answered. Whether it took
/// effect on the server is unknown.
public struct PostgresConnectionLostError: Error, CustomStringConvertible {
    public var description: String {
        "the connection closed before the statement answered; whether it took effect is unknown"
    }
}
