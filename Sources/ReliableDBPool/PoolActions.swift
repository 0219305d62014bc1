import ReliableDBClock

/// What the I/O shell must do after an event, returned by every ``PoolStateMachine`` event.
///
/// The machine decides; the shell only executes. Executing the actions in any order is correct,
/// because the machine has already moved every connection into its new state: a granted connection
/// is leased, a closed one is `closing`, a connect has its `connecting` slot. The shell keeps exactly
/// one timer, set to ``wakeAt``, and calls ``PoolStateMachine/tick(now:)`` when it fires.
package struct PoolActions: Sendable, Equatable {
    /// The waiting (or just arrived) request that now holds a connection. At most one per event,
    /// because every event frees at most one connection.
    package var grant: PoolGrant?
    /// Requests answered with an error. Each request appears here, or in ``grant``, exactly once.
    package var failures = PoolActionList<PoolFailure>()
    /// Connections to open. Their ids are already counted against the connection limit.
    package var connects = PoolActionList<PoolConnect>()
    /// Connections to close. Report each back with ``PoolStateMachine/closed(connection:now:)``.
    package var closes = PoolActionList<PoolClose>()
    /// Idle connections to probe. Report each back with
    /// ``PoolStateMachine/keepAliveDone(connection:alive:now:)``.
    package var keepAlives = PoolActionList<PoolStateMachine.ConnectionID>()
    /// The earliest instant anything is due (a waiter's deadline, an idle timeout, a keep-alive or
    /// its timeout, a lifetime, a connect retry); `nil` when nothing is. Events that take `now`
    /// always return an instant after `now`.
    package var wakeAt: PoolInstant?
    /// True on the one event that finished a shutdown: no connection is left in any state.
    package var shutDownCompleted = false

    package init() {}

    /// Whether the lists are all empty, as on the lease and release fast path. Computed here, where
    /// the lists' element types are concrete: iterating them from another module goes through
    /// generic metadata, which cost the PostgreSQL pool about a tenth of its CPU on every event.
    package var listsAreEmpty: Bool {
        failures.isEmpty && connects.isEmpty && closes.isEmpty && keepAlives.isEmpty
    }
}

/// A connection handed to a request.
package struct PoolGrant: Sendable, Equatable {
    package var request: PoolStateMachine.RequestID
    package var connection: PoolStateMachine.ConnectionID
    /// How long the request waited in the queue (`.zero` on the fast path), for acquire-time metrics.
    package var waited: Duration

    package init(request: PoolStateMachine.RequestID, connection: PoolStateMachine.ConnectionID, waited: Duration) {
        self.request = request
        self.connection = connection
        self.waited = waited
    }
}

/// A request answered with an error instead of a connection.
package struct PoolFailure: Sendable, Equatable {
    package var request: PoolStateMachine.RequestID
    package var reason: PoolFailureReason

    package init(request: PoolStateMachine.RequestID, reason: PoolFailureReason) {
        self.request = request
        self.reason = reason
    }
}

/// Why a request got no connection.
package enum PoolFailureReason: Sendable, Hashable, CaseIterable {
    /// The pool's own wait limit passed (or had passed on arrival) before a connection was free:
    /// an acquire timeout.
    case timedOut
    /// The operation's deadline passed (or had passed on arrival) before a connection was free,
    /// ahead of the pool's limit: the caller ran out of time, which is not an acquire timeout.
    case deadlineReached
    /// The pool is shutting down.
    case shutdown
    /// A connect failed while no connection was open (fail-fast). Only
    /// ``PoolStateMachine/connectFailed(connection:now:)`` (or ``PoolStateMachine/closed(connection:now:)``
    /// on a connecting connection) returns it, so the shell attaches the error it just reported.
    case connectFailed
    /// The caller cancelled it.
    case cancelled
}

/// A connection to open.
package struct PoolConnect: Sendable, Equatable {
    package var connection: PoolStateMachine.ConnectionID
    /// The event loop the waiting request prefers, or `nil` for any.
    package var loopKey: Int?

    package init(connection: PoolStateMachine.ConnectionID, loopKey: Int?) {
        self.connection = connection
        self.loopKey = loopKey
    }
}

/// A connection to close, and why.
package struct PoolClose: Sendable, Equatable {
    package var connection: PoolStateMachine.ConnectionID
    package var reason: PoolCloseReason

    package init(connection: PoolStateMachine.ConnectionID, reason: PoolCloseReason) {
        self.connection = connection
        self.reason = reason
    }
}

/// Why a connection left service.
package enum PoolCloseReason: Sendable, Hashable, CaseIterable {
    /// Idle for longer than the idle timeout.
    case idle
    /// Older than its (jittered) maximum lifetime.
    case lifetime
    /// Released with `discard: true`, or its socket closed while it was in use or idle.
    case broken
    /// A keep-alive probe failed or timed out.
    case keepAliveFailed
    /// The pool is shutting down.
    case shutdown
    /// Retired by ``PoolStateMachine/evictAll(refused:now:)``: the server it reaches is no longer
    /// the one it was opened for (a demoted primary).
    case evicted
    /// Beyond a maximum lowered by ``PoolStateMachine/resize(maximumConnections:now:)``: idle ones at
    /// once, the others when they come back.
    case resized
}
