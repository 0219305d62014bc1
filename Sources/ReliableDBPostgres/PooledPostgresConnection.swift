import Logging
import NIOCore
import PostgresNIO
import ReliableDB
import ReliableDBPool
import Synchronization

/// A pooled PostgreSQL connection with what the pool alone does not know: its cancel key, the
/// caller its current statement answers, and whether a deadline is stopping that statement.
///
/// How a deadline stops a statement, and why this way, is Sources/ReliableDB/Documentation.docc/Deadlines.md: a protocol
/// CancelRequest (which only ever reaches this connection's own statement, also through PgBouncer),
/// and, if the statement has not ended `hardStopAfter` later, closing the connection. PostgresNIO
/// 1.33.2 drops a statement written after its connection was torn down without ever answering it,
/// so closing alone does not release the caller: once the connection is closed the caller is
/// answered with ``PostgresConnectionLostError`` (``abandonGrace`` after the close, time for an
/// answer already on its way to arrive), whether or not the driver ever answers.
final class PooledPostgresConnection: Sendable {
    /// How long after the connection closed a statement that has not answered is abandoned.
    static let abandonGrace = TimeAmount.milliseconds(10)
    /// How long a CancelRequest may take to be delivered (a socket, TLS when the URL asks for it,
    /// 16 bytes). Longer than ``PostgresBackend/cancelGrace``: the caller does not wait for it, and a cancel that
    /// arrives after the hard stop still ends a statement the server would otherwise run to its end
    /// (it does not notice the closed connection until it writes). Measured under the parallel test
    /// load: a TLS cancel took 238 ms to send.
    static let cancelDeliveryTimeout = Duration.seconds(5)
    let id: Int
    let underlying: PostgresConnection
    /// The loop the connection does its I/O on, read once (the pool compares it on every lease).
    let eventLoop: any EventLoop
    /// The key a CancelRequest names; nil when the server sent none.
    let key: BackendKey?
    /// Runs statement bodies on the connection's event loop when the caller is there already.
    let executor: EventLoopExecutor
    private let state = Mutex(State())

    private struct State {
        /// The caller of the running statement, answered with an error if the connection closes.
        var abandon: (any AbandonableStatement)?
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
                abandon?.abandon(PostgresConnectionLostError())
            }
        }
    }

    /// Runs `body` on the connection in a task of its own and returns its result, or throws
    /// ``PostgresConnectionLostError`` when the connection closes and `body` has not answered
    /// (see the type's documentation). Cancelling the caller cancels `body`. A caller running on
    /// the connection's event loop (the pool prefers that) runs `body` there too, without a
    /// thread hop.
    func run<R: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection) async throws -> R
    ) async throws -> R {
        let run = StatementRun<R>()
        let executor = MultiThreadedEventLoopGroup.currentEventLoop === eventLoop ? self.executor : nil
        let underlying = self.underlying
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<R, any Error>) in
                run.waiting(continuation)
                let closed = state.withLock { state in
                    if !state.isClosed { state.abandon = run }
                    return state.isClosed
                }
                if closed {
                    run.answer(.failure(PostgresConnectionLostError()))
                    return
                }
                let statement: @Sendable () async -> Void = {
                    do {
                        run.answer(.success(try await body(underlying)))
                    } catch {
                        run.answer(.failure(error))
                    }
                }
                // Started on this thread up to the statement's first wait (the write of its query),
                // which saves the executor a round trip per statement.
                if #available(macOS 26.0, *) {
                    run.started(Task.immediate(executorPreference: executor, operation: statement))
                } else {
                    run.started(Task(executorPreference: executor, operation: statement))
                }
            }
        } onCancel: {
            run.cancel()
        }
    }

    func close() {
        underlying.close().whenComplete { _ in }
    }

    /// The deadline passed while a statement runs. Called by the deadline scheduler under its lock,
    /// so it only starts work: the CancelRequest, and the hard stop `hardStopAfter` from now.
    func deadlineReached(hardStopAfter: Duration, logger: Logger) {
        // The pool counts the close as `broken`: the socket closed while the connection was leased.
        let hardStop = eventLoop.scheduleTask(in: TimeAmount(hardStopAfter)) { [self] in close() }
        state.withLock {
            $0.cancelSent = true
            $0.hardStop = hardStop
        }
        guard let key else {
            logger.debug("no cancel key: the statement is stopped by closing the connection")
            return
        }
        guard let address = key.serverAddress else { return }
        let sent = startCancelRequest(to: address, key: key, timeout: Self.cancelDeliveryTimeout, on: eventLoop)
        sent.whenFailure { error in
            logger.debug("cancel request not delivered", metadata: ["error": "\(describePostgresError(error))"])
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

/// What a closing connection answers when its statement never does.
protocol AbandonableStatement: AnyObject, Sendable {
    func abandon(_ error: any Error)
}

/// The caller of one statement: answered once, by the statement's task or by the connection
/// closing under it; later answers (a body that returns after its caller was released) are
/// dropped. One object per statement, so the hot path allocates little.
final class StatementRun<R: Sendable>: AbandonableStatement {
    private struct State {
        var continuation: UnsafeContinuation<R, any Error>?
        var task: Task<Void, Never>?
        var cancelled = false
    }

    private let state = Mutex(State())

    func waiting(_ continuation: UnsafeContinuation<R, any Error>) {
        state.withLock { $0.continuation = continuation }
    }

    func started(_ task: Task<Void, Never>) {
        let cancelled = state.withLock { state in
            state.task = task
            return state.cancelled
        }
        if cancelled { task.cancel() }
    }

    func answer(_ result: Result<R, any Error>) {
        let continuation = state.withLock { state in
            defer { state.continuation = nil }
            return state.continuation
        }
        continuation?.resume(with: result)
    }

    func abandon(_ error: any Error) {
        answer(.failure(error))
    }

    func cancel() {
        let task = state.withLock { state in
            state.cancelled = true
            return state.task
        }
        task?.cancel()
    }
}

/// The connection closed while a statement ran and the statement never answered. Whether it took
/// effect on the server is unknown.
public struct PostgresConnectionLostError: Error, CustomStringConvertible {
    public var description: String {
        "the connection closed before the statement answered; whether it took effect is unknown"
    }
}
