import Foundation
import NIOCore
import PostgresNIO
import ReliableDB
import Synchronization

/// A pooled PostgreSQL connection with what the pool alone does not know: the server process id
/// (for `pg_cancel_backend`), when it should be retired, and why it closed.
public final class PooledPostgresConnection: Sendable {
    public let id: Int
    public let underlying: PostgresConnection
    /// The loop the connection does its I/O on, read once (the pool compares it on every lease).
    let eventLoop: any EventLoop
    /// The server process serving this connection (`pg_backend_pid()`).
    public let backendPID: Int32
    /// After this instant the connection is closed when released (maximum lifetime, jittered).
    let retireAt: MonotonicTime
    private let state = Mutex(State())

    private struct State {
        var closeReason: PoolCloseReason?
        var cancel: Task<Void, Never>?
        var watchdog: Task<Void, Never>?
    }

    init(id: Int, underlying: PostgresConnection, backendPID: Int32, retireAt: MonotonicTime) {
        self.id = id
        self.underlying = underlying
        eventLoop = underlying.eventLoop
        self.backendPID = backendPID
        self.retireAt = retireAt
    }

    /// Why it was closed, once the pool or a deadline closed it; nil when the server or the
    /// network did.
    var closeReason: PoolCloseReason? {
        state.withLock { $0.closeReason }
    }

    func close() {
        state.withLock { if $0.closeReason == nil { $0.closeReason = .pool } }
        _ = underlying.close() as EventLoopFuture<Void>
    }

    /// Records why the connection is about to be closed, for the close-reason counters.
    func markClosing(_ reason: PoolCloseReason) {
        state.withLock { if $0.closeReason == nil { $0.closeReason = reason } }
    }

    /// Starts cancelling the running statement on the server; called by the deadline scheduler,
    /// so it only spawns work. If the statement has not returned within `grace` (the server or
    /// network is unresponsive), the connection is closed so the caller is not held past it.
    func beginCancel(using canceller: QueryCanceller, grace: Duration) {
        let pid = backendPID
        let cancel = Task { await canceller.cancel(backendPID: pid) }
        let watchdog = Task { [weak self] in
            try? await Task.sleep(for: grace)
            guard !Task.isCancelled, let self else { return }
            self.markClosing(.broken)
            _ = self.underlying.close() as EventLoopFuture<Void>
        }
        state.withLock {
            $0.cancel = cancel
            $0.watchdog = watchdog
        }
    }

    /// Whether a cancel was sent for the statement this connection ran, so it must be settled
    /// before the connection is reused.
    var hasPendingCancel: Bool {
        state.withLock { $0.cancel != nil || $0.watchdog != nil }
    }

    /// Waits until a cancel request sent for this connection has been answered, so it cannot hit
    /// the next caller's statement, but no longer than `grace`. Returns false when the cancel went
    /// unanswered (server or network unresponsive): the connection must then be discarded. Costs
    /// nothing when no cancel was sent.
    func settleCancel(within grace: Duration) async -> Bool {
        let (cancel, watchdog) = state.withLock { state in
            defer {
                state.cancel = nil
                state.watchdog = nil
            }
            return (state.cancel, state.watchdog)
        }
        watchdog?.cancel()
        guard let cancel else { return true }
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await cancel.value
                return true
            }
            group.addTask {
                try? await Task.sleep(for: grace)
                return false
            }
            let answered = await group.next() ?? false
            group.cancelAll()
            return answered
        }
    }
}

/// Why the pool closed a connection.
public enum PoolCloseReason: String, Sendable, CaseIterable {
    /// Closed by the pool: idle timeout, keep-alive failure or shutdown.
    case pool
    /// Reached its maximum lifetime.
    case lifetime
    /// Saw a connection-class error and was discarded.
    case broken
    /// Closed by the server or the network.
    case server
}
