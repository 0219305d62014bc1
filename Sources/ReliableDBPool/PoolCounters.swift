import ReliableDBClock

/// A snapshot of the pool, computed from the machine's state rather than kept alongside it.
///
/// The gauges (``total``, ``active``, ``idle``...) are a recount of the connection states and the
/// waiter queue, so they cannot drift from the truth the way compensating `+= 1`/`-= 1` counters do
/// when one path forgets its decrement. The cumulative counts only ever grow; each is bumped at the
/// single place the machine makes that decision.
package struct PoolCounters: Sendable, Equatable {
    // MARK: Gauges, derived from connection states

    /// Connections being opened.
    package var connecting = 0
    /// Connections free to lease.
    package var idle = 0
    /// Connections leased to a request.
    package var active = 0
    /// Idle connections with a keep-alive probe in flight.
    package var keepAlive = 0
    /// Connections told to close whose socket has not reported closed yet.
    package var closing = 0
    /// Requests waiting for a connection.
    package var waiting = 0

    /// Every connection in any state; never more than the configured maximum.
    package var total: Int { connecting + idle + active + keepAlive + closing }
    /// Established connections in service (idle, leased, or being probed).
    package var open: Int { idle + active + keepAlive }

    // MARK: Cumulative counts

    /// Lease requests received.
    package var requests = 0
    /// Requests that got a connection.
    package var granted = 0
    /// Requests failed because the pool's wait limit passed: the pool's acquire timeouts.
    package var acquireTimeouts = 0
    /// Requests failed because their operation's deadline passed first. Not acquire timeouts: the
    /// caller ran out of time, whatever the pool's size.
    package var deadlinesReached = 0
    /// Requests the caller cancelled while they waited.
    package var cancelled = 0
    /// Requests failed fast because a connect failed with no connection open.
    package var failedByConnect = 0
    /// Requests failed because the pool shut down.
    package var failedByShutdown = 0
    /// Connect actions issued.
    package var connectsStarted = 0
    /// Connects that succeeded.
    package var opened = 0
    /// Connects that failed.
    package var connectFailures = 0
    /// Opened connections whose socket has closed and which left the pool.
    package var closed = 0
    /// Connections taken out of service, by reason (counted when the decision is made).
    package var closes = PoolCloseCounts()
    /// The queue waits of all granted requests added up (an idle connection's grant adds zero),
    /// in nanoseconds: with ``granted``, the average acquire time.
    package var acquireWaitNanoseconds: Int64 = 0
    /// The longest queue wait of a granted request, in nanoseconds.
    package var maxAcquireWaitNanoseconds: Int64 = 0

    /// Requests failed, whatever the reason; each failed request is counted under one reason.
    package var failed: Int { acquireTimeouts + deadlinesReached + cancelled + failedByConnect + failedByShutdown }

    /// The mean queue wait of the granted requests (zero before the first).
    package var averageAcquireWait: Duration {
        .nanoseconds(acquireWaitNanoseconds / Int64(Swift.max(1, granted)))
    }

    package var maxAcquireWait: Duration { .nanoseconds(maxAcquireWaitNanoseconds) }

    package init() {}
}

/// Connections taken out of service, one count per ``PoolCloseReason``.
package struct PoolCloseCounts: Sendable, Equatable {
    package var idle = 0
    package var lifetime = 0
    package var broken = 0
    package var keepAliveFailed = 0
    package var shutdown = 0
    package var evicted = 0
    package var resized = 0

    package init() {}

    package var total: Int { idle + lifetime + broken + keepAliveFailed + shutdown + evicted + resized }

    package subscript(reason: PoolCloseReason) -> Int {
        get {
            switch reason {
            case .idle: idle
            case .lifetime: lifetime
            case .broken: broken
            case .keepAliveFailed: keepAliveFailed
            case .shutdown: shutdown
            case .evicted: evicted
            case .resized: resized
            }
        }
        set {
            switch reason {
            case .idle: idle = newValue
            case .lifetime: lifetime = newValue
            case .broken: broken = newValue
            case .keepAliveFailed: keepAliveFailed = newValue
            case .shutdown: shutdown = newValue
            case .evicted: evicted = newValue
            case .resized: resized = newValue
            }
        }
    }
}
