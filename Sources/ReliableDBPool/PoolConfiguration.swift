import ReliableDBClock

/// The pool's settings, as plain values the state machine reads on every event.
///
/// Every setting is clamped into a range the machine can act on (see ``normalized``) instead of
/// trapping: the values come from environment variables and configuration files, and a pool that
/// refuses to start over `DB_CONNECTION_LIMIT=0` helps nobody. Randomness (lifetime jitter) is not
/// drawn here: the shell passes the random value into ``PoolStateMachine/connected(connection:loop:now:lifetimeJitter:)``
/// so the machine stays deterministic.
package struct PoolConfiguration: Sendable, Equatable {
    /// The most connections in any state at once, connecting and closing included. At least 1.
    package var maximumConnections: Int
    /// Idle connections the pool keeps open while the server is reachable (HikariCP's
    /// `minimumIdle`), opened ``warmUpConcurrency`` at a time: 0...``maximumConnections``.
    package var minimumIdle: Int
    /// How long a connection may sit idle before it is closed; `nil` keeps idle connections forever.
    package var idleTimeout: Duration?
    /// How long an idle connection goes unchecked before a keep-alive probe; `nil` (or zero) turns
    /// keep-alives off.
    package var keepAliveAfter: Duration?
    /// How long a keep-alive probe may take before the connection is considered dead and closed.
    package var keepAliveTimeout: Duration
    /// The age after which a connection is retired (on release, or while idle); `nil` is unlimited.
    package var maxLifetime: Duration?
    /// The largest fraction of ``maxLifetime`` taken off at random per connection (0...1), so that
    /// connections opened together do not all retire together.
    package var lifetimeJitterFraction: Double
    /// The wait before the first retry after a failed connect; it doubles per consecutive failure.
    package var connectBackoffInitial: Duration
    /// The cap on the doubling connect backoff.
    package var connectBackoffMaximum: Duration

    /// The most connects warming the pool at once: a new instance's warm-up is not a burst.
    package static let warmUpConcurrency = 2

    package init(
        maximumConnections: Int = 10,
        minimumIdle: Int = 0,
        idleTimeout: Duration? = nil,
        keepAliveAfter: Duration? = nil,
        keepAliveTimeout: Duration = .seconds(10),
        maxLifetime: Duration? = nil,
        lifetimeJitterFraction: Double = 0.1,
        connectBackoffInitial: Duration = .milliseconds(100),
        connectBackoffMaximum: Duration = .seconds(2)
    ) {
        self.maximumConnections = maximumConnections
        self.minimumIdle = minimumIdle
        self.idleTimeout = idleTimeout
        self.keepAliveAfter = keepAliveAfter
        self.keepAliveTimeout = keepAliveTimeout
        self.maxLifetime = maxLifetime
        self.lifetimeJitterFraction = lifetimeJitterFraction
        self.connectBackoffInitial = connectBackoffInitial
        self.connectBackoffMaximum = connectBackoffMaximum
    }

    /// The settings clamped into working ranges: at least one connection, a minimum idle count
    /// within 0...maximum, no negative durations, a
    /// keep-alive timeout of at least one nanosecond (so a probe is never already overdue when it
    /// starts), keep-alives off when `keepAliveAfter` is zero or less (probing continuously would
    /// spin), a jitter fraction in 0...1 and a backoff cap no smaller than the initial backoff.
    package var normalized: PoolConfiguration {
        var result = self
        result.maximumConnections = Swift.max(1, maximumConnections)
        result.minimumIdle = Swift.min(Swift.max(0, minimumIdle), result.maximumConnections)
        result.idleTimeout = idleTimeout.map { Swift.max(.zero, $0) }
        result.keepAliveAfter = keepAliveAfter.flatMap { $0 > .zero ? $0 : nil }
        result.keepAliveTimeout = Swift.max(.nanoseconds(1), keepAliveTimeout)
        result.maxLifetime = maxLifetime.map { Swift.max(.zero, $0) }
        result.lifetimeJitterFraction = Self.unitInterval(lifetimeJitterFraction)
        result.connectBackoffInitial = Swift.max(.zero, connectBackoffInitial)
        result.connectBackoffMaximum = Swift.max(result.connectBackoffInitial, connectBackoffMaximum)
        return result
    }

    /// The wait after `failures` consecutive failed connects: initial, doubled per further failure,
    /// capped at the maximum.
    func connectBackoff(afterFailures failures: Int) -> Duration {
        let cap = connectBackoffMaximum.nanosecondsClamped
        var delay = Swift.min(connectBackoffInitial.nanosecondsClamped, cap)
        for _ in 1..<Swift.max(1, Swift.min(failures, 64)) where delay < cap {
            let (doubled, overflow) = delay.multipliedReportingOverflow(by: 2)
            delay = overflow ? cap : Swift.min(doubled, cap)
        }
        return .nanoseconds(delay)
    }

    /// This connection's lifetime: ``maxLifetime`` shortened by `jitter` (0...1) times the jitter
    /// fraction. `nil` when lifetimes are unlimited.
    func lifetime(jitter: Double) -> Duration? {
        guard let maxLifetime else { return nil }
        let factor = 1 - lifetimeJitterFraction * Self.unitInterval(jitter)
        let scaled = Double(maxLifetime.nanosecondsClamped) * factor
        guard scaled < Double(Int64.max) else { return .nanoseconds(Int64.max) }
        return .nanoseconds(Int64(Swift.max(0, scaled)))
    }

    private static func unitInterval(_ value: Double) -> Double {
        value.isNaN ? 0 : Swift.min(1, Swift.max(0, value))
    }
}
