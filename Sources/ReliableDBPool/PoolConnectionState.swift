import ReliableDBClock

/// The one state a pooled connection is in.
///
/// Every connection the machine knows is in exactly one of these, from the `connect` action that
/// creates it to the `closed` event that removes it. Statistics, the connection limit and the timers
/// are all read off this enum, which is what keeps them consistent with each other.
package enum PoolConnectionState: Sendable, Hashable {
    /// A `connect` action was issued; waiting for `connected` or `connectFailed`.
    case connecting
    /// Free to lease. `since` is when it was last released (idle timeout and most-recently-used
    /// order run from it); `lastChecked` is when it last proved alive (keep-alives run from it).
    case idle(since: PoolInstant, lastChecked: PoolInstant)
    /// Held by `request` since `since`.
    case leased(request: PoolStateMachine.RequestID, since: PoolInstant)
    /// A keep-alive probe started at `started` is in flight; `idleSince` carries the idle clock
    /// across the probe, so probing does not postpone the idle timeout.
    case keepAlive(started: PoolInstant, idleSince: PoolInstant)
    /// A `close` action was issued for `reason`; waiting for `closed`. Still counted against the
    /// limit: the server holds the slot until the socket is gone.
    case closing(PoolCloseReason)
}

/// What a connection's timers ask for at a given instant.
enum PoolConnectionTimer: Equatable {
    case close(PoolCloseReason)
    case keepAlive
}

/// A connection as the machine tracks it.
struct PoolConnection: Sendable {
    let id: PoolStateMachine.ConnectionID
    /// The event loop it lives on, for loop-preferring leases.
    var loopKey: Int?
    var state: PoolConnectionState
    /// When it retires; set on `connected` from the jittered lifetime, `nil` when unlimited.
    var expiresAt: PoolInstant?
    /// Retired by `evictAll(refused:now:)`: closed as soon as it is back from its holder or its
    /// keep-alive.
    var evicted = false
    /// Beyond a lowered maximum (`resize(maximumConnections:now:)`): closed when it is back from its
    /// holder, its keep-alive or its connect.
    var beyondMaximum = false

    func isExpired(at now: PoolInstant) -> Bool {
        evicted || beyondMaximum || (expiresAt.map { $0 <= now } ?? false)
    }

    /// Why an expired connection closes.
    var retirement: PoolCloseReason { evicted ? .evicted : beyondMaximum ? .resized : .lifetime }

    /// The timer that is due at `now`, if any. When several are, retiring beats idling out, which
    /// beats probing: there is no point probing a connection that is about to be closed. Without
    /// `idleOut` (the pool holds no more idle connections than its minimum) it never idles out.
    func dueTimer(at now: PoolInstant, _ timing: PoolTiming, idleOut: Bool = true) -> PoolConnectionTimer? {
        switch state {
        case .idle(let since, let lastChecked):
            if isExpired(at: now) { return .close(retirement) }
            if idleOut, let idleTimeout = timing.idleTimeout, since.advanced(byNanoseconds: idleTimeout) <= now {
                return .close(.idle)
            }
            if let keepAliveAfter = timing.keepAliveAfter, lastChecked.advanced(byNanoseconds: keepAliveAfter) <= now {
                return .keepAlive
            }
            return nil
        case .keepAlive(let started, _):
            return started.advanced(byNanoseconds: timing.keepAliveTimeout) <= now ? .close(.keepAliveFailed) : nil
        case .connecting, .leased, .closing:
            return nil
        }
    }

    /// The earliest instant one of its timers is due. Leased connections have none: their lifetime
    /// is checked on release. Connecting ones have none: the shell bounds its own connect attempt.
    func nextDue(_ timing: PoolTiming, idleOut: Bool = true) -> PoolInstant? {
        switch state {
        case .idle(let since, let lastChecked):
            var next = expiresAt
            if idleOut, let idleTimeout = timing.idleTimeout {
                next = earliest(next, since.advanced(byNanoseconds: idleTimeout))
            }
            if let keepAliveAfter = timing.keepAliveAfter {
                next = earliest(next, lastChecked.advanced(byNanoseconds: keepAliveAfter))
            }
            return next
        case .keepAlive(let started, _):
            return started.advanced(byNanoseconds: timing.keepAliveTimeout)
        case .connecting, .leased, .closing:
            return nil
        }
    }
}

/// The connection timers' durations in nanoseconds, converted once at init: `Duration` arithmetic
/// goes through 128-bit multiplication, too slow to repeat for every connection on every event.
struct PoolTiming: Sendable {
    var idleTimeout: Int64?
    var keepAliveAfter: Int64?
    var keepAliveTimeout: Int64

    init(_ configuration: PoolConfiguration) {
        idleTimeout = configuration.idleTimeout?.nanosecondsClamped
        keepAliveAfter = configuration.keepAliveAfter?.nanosecondsClamped
        keepAliveTimeout = configuration.keepAliveTimeout.nanosecondsClamped
    }
}
