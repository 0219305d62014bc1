import ReliableDBClock

/// Who holds which connection, who waits for one, and until when: the pool's decisions as a pure value.
///
/// Events come in as method calls that carry the current time (`lease`, `release`, `connected`,
/// `tick`, ...), and each returns ``PoolActions`` for the I/O shell to execute: grant a connection,
/// fail a request, open or close or probe a connection, and wake me at this instant. The machine
/// reads no clock, takes no lock, does no I/O and starts no task, so the shell wraps it in one
/// `Mutex` and tests drive it with random event sequences on a simulated clock
/// (Tests/ReliableDBPoolTests).
///
/// Each connection is in exactly one ``PoolConnectionState``, and ``statistics`` is a recount of
/// those states, so the numbers the health endpoints report are exact by construction. The shape
/// follows postgres-nio's `PoolStateMachine` (a request queue, a connection group, per-connection
/// state), with deadlines, fail-fast and loop preference added and multiplexing left out.
///
/// Guarantees the tests check after every event:
/// - never more than ``PoolConfiguration/maximumConnections`` connections in any state, but after
///   a lowered maximum, when the ones beyond it are leaving (and none is opened meanwhile);
/// - every request is answered exactly once (granted, or failed with a ``PoolFailureReason``), and
///   never granted at or after the end of its wait (its pool timeout or its operation's deadline,
///   whichever is earlier); events that take `now` fail the overdue ones first, and each failure is
///   counted once, under its reason;
/// - an idle connection and a waiting request never coexist;
/// - after ``shutdown()`` nothing is granted or opened, and once every connection has reported
///   closed the machine is ``isShutDownComplete``.
package struct PoolStateMachine: Sendable {
    package typealias ConnectionID = Int
    package typealias RequestID = Int

    enum Lifecycle: Sendable {
        case running
        case shuttingDown
        case shutDown
    }

    /// The consecutive-failure state of connecting: the "backoff slot" for the pending reconnect.
    struct ConnectBackoff: Sendable {
        /// Consecutive failed connects since the last success; 0 means connecting is healthy.
        var failures = 0
        /// No connect is started before this instant while `failures > 0`.
        var retryAt = PoolInstant.zero
    }

    /// Counts that only grow; the gauges in ``PoolCounters`` are recounted instead.
    struct Counters: Sendable {
        var requests = 0
        var granted = 0
        var acquireTimeouts = 0
        var deadlinesReached = 0
        var cancelled = 0
        var failedByConnect = 0
        var failedByShutdown = 0
        var connectsStarted = 0
        var opened = 0
        var connectFailures = 0
        var closed = 0
        var closes = PoolCloseCounts()
        /// Summed and largest queue waits of the granted requests, in nanoseconds.
        var acquireWaitNanoseconds: Int64 = 0
        var maxAcquireWaitNanoseconds: Int64 = 0
    }

    /// The settings in force, already ``PoolConfiguration/normalized``; only the maximum changes
    /// (``resize(maximumConnections:now:)``).
    package internal(set) var configuration: PoolConfiguration
    /// The minimum idle asked for, which a lowered maximum caps but never forgets.
    let configuredMinimumIdle: Int
    let timing: PoolTiming
    var connections = ConnectionGroup()
    var waiters = RequestQueue()
    var backoff = ConnectBackoff()
    var counters = Counters()
    var lifecycle = Lifecycle.running
    var nextConnectionID: ConnectionID = 0
    /// Every connection below this id existed at the last `evictAll` (0: none yet).
    var evictedBelow: ConnectionID = 0

    package init(configuration: PoolConfiguration) {
        self.configuration = configuration.normalized
        configuredMinimumIdle = Swift.max(0, configuration.minimumIdle)
        timing = PoolTiming(self.configuration)
    }

    /// True once ``shutdown()`` has been called.
    package var isShuttingDown: Bool { lifecycle != .running }

    /// True when the pool has shut down and no connection is left in any state.
    package var isShutDownComplete: Bool { lifecycle == .shutDown }

    /// Consecutive failed connects since the last successful one.
    package var consecutiveConnectFailures: Int { backoff.failures }

    /// The state of one connection, or `nil` if the machine does not know it (never created, or closed).
    package func state(of connection: ConnectionID) -> PoolConnectionState? {
        connections.index(of: connection).map { connections[$0].state }
    }

    /// Every connection's state. Allocates; for tests, diagnostics and health pages.
    package var connectionStates: [ConnectionID: PoolConnectionState] {
        Dictionary(uniqueKeysWithValues: connections.all.map { ($0.id, $0.state) })
    }

    /// The waiting requests, first served first. Allocates; for tests and diagnostics.
    package var waitingRequests: [RequestID] { waiters.requestIDs }

    /// Gauges recounted from the connection states and the queue, plus the cumulative counts.
    /// Connections in service: idle, leased or being probed.
    package var openConnectionCount: Int { connections.openCount() }

    package var statistics: PoolCounters {
        var statistics = PoolCounters()
        for connection in connections.all {
            switch connection.state {
            case .connecting: statistics.connecting += 1
            case .idle: statistics.idle += 1
            case .leased: statistics.active += 1
            case .keepAlive: statistics.keepAlive += 1
            case .closing: statistics.closing += 1
            }
        }
        statistics.waiting = waiters.count
        statistics.requests = counters.requests
        statistics.granted = counters.granted
        statistics.acquireTimeouts = counters.acquireTimeouts
        statistics.deadlinesReached = counters.deadlinesReached
        statistics.cancelled = counters.cancelled
        statistics.failedByConnect = counters.failedByConnect
        statistics.failedByShutdown = counters.failedByShutdown
        statistics.connectsStarted = counters.connectsStarted
        statistics.opened = counters.opened
        statistics.connectFailures = counters.connectFailures
        statistics.closed = counters.closed
        statistics.closes = counters.closes
        statistics.acquireWaitNanoseconds = counters.acquireWaitNanoseconds
        statistics.maxAcquireWaitNanoseconds = counters.maxAcquireWaitNanoseconds
        return statistics
    }
}
