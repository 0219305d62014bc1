import Foundation
import Synchronization

/// A thread-safe circuit breaker: the `CircuitBreakerStateMachine` behind a lock, with events.
///
/// Taking a permit is synchronous (no actor hop, no allocation): a caller either gets the permit
/// or is rejected before any `await`, so a herd of callers cannot slip through a half-open breaker
/// between a check and a suspension point.
public final class CircuitBreaker: Sendable {
    /// The settings in force (``reconfigure(_:)`` changes them).
    public var configuration: CircuitBreakerConfiguration { machine.withLock { $0.configuration } }
    private let machine: Mutex<CircuitBreakerStateMachine>
    private let clock: any ReliabilityClock
    private let wallClockAnchor: (wall: Date, monotonic: MonotonicTime)
    /// State changes, for alerting, metrics and logs.
    public let transitions = EventBroadcaster<CircuitTransition>()
    private let instruments: ReliabilityInstruments?
    /// Where calls go now (`host:port`): read when a call fails and while calls are rejected, so
    /// the state follows the server it is about (`CircuitBreakerStateMachine.serve(_:at:)`).
    private let currentServer: (@Sendable () -> String?)?
    /// Called after each transition (the pipeline's prober starts on OPEN but not on an operator's
    /// `forceState(.open)`, and resets its backoff on CLOSED).
    private let observer: Mutex<(@Sendable (CircuitTransition) -> Void)?>

    /// - Parameters:
    ///   - configuration: when the breaker opens, how long it stays open and how it closes.
    ///   - clock: the clock its windows and its timeout are measured on.
    ///   - instruments: where its transitions and call outcomes are counted; nil for none.
    ///   - currentServer: says where calls go now (`host:port`), or nil when unknown; a
    ///     breaker with it judges one server at a time and starts CLOSED for a new one.
    public init(
        configuration: CircuitBreakerConfiguration = .init(),
        clock: any ReliabilityClock = SystemClock(),
        instruments: ReliabilityInstruments? = nil,
        currentServer: (@Sendable () -> String?)? = nil
    ) {
        self.clock = clock
        self.instruments = instruments
        self.currentServer = currentServer
        observer = Mutex(nil)
        machine = Mutex(CircuitBreakerStateMachine(configuration: configuration))
        wallClockAnchor = (Date(), clock.now)
    }

    /// Puts new thresholds, windows and open timeout in force without losing the state
    /// (`CircuitBreakerStateMachine.reconfigure(_:)`): live settings.
    public func reconfigure(_ configuration: CircuitBreakerConfiguration) {
        machine.withLock { $0.reconfigure(configuration) }
    }

    /// Sets what runs after each transition.
    package func onTransition(_ action: @escaping @Sendable (CircuitTransition) -> Void) {
        observer.withLock { $0 = action }
    }

    /// Takes a permit for one call, or says why not.
    @inlinable
    public func acquire() -> CircuitBreakerDecision {
        acquire(at: currentTime)
    }

    @usableFromInline
    var currentTime: MonotonicTime { clock.now }

    @usableFromInline
    func acquire(at now: MonotonicTime) -> CircuitBreakerDecision {
        let (decision, transition) = machine.withLock { $0.acquire(at: now) }
        if let transition { publish(transition) }
        guard case .rejected = decision, currentServer != nil else { return decision }
        return rejected(decision, at: now)
    }

    /// A rejection stands unless calls now go to a server this state is not about (a failover):
    /// then the breaker starts over CLOSED for it and the call is admitted.
    @inline(never)
    private func rejected(
        _ decision: CircuitBreakerDecision,
        at now: MonotonicTime
    ) -> CircuitBreakerDecision {
        guard let server = currentServer?() else { return decision }
        var changed: CircuitTransition?
        var admitted: CircuitTransition?
        let retried = machine.withLock { machine -> CircuitBreakerDecision in
            changed = machine.serve(server, at: now)
            guard changed != nil else { return decision }
            machine.forgetRejection()
            let (retried, transition) = machine.acquire(at: now)
            admitted = transition
            return retried
        }
        if let changed { publish(changed) }
        if let admitted { publish(admitted) }
        return retried
    }

    private func publish(_ transition: CircuitTransition) {
        instruments?.recordTransition(transition)
        transitions.emit(transition)
        observer.withLock { $0 }?(transition)
    }

    /// Evidence that the server answers: a probe completed a round trip on a fresh connection (the
    /// health monitor's, or the breaker's own while it is open). An open breaker turns HALF_OPEN at
    /// once; when `server` is another server than the one the state is about, the breaker starts
    /// over CLOSED for it.
    public func serverAnswered(by server: String? = nil) {
        let now = clock.now
        let transition = machine.withLock { $0.serverAnswered(server ?? currentServer?(), at: now) }
        if let transition { publish(transition) }
    }

    /// Whether the breaker is OPEN by a trip, so that a probe's answer would end it (an operator's
    /// `forceState(.open)` is not).
    package var awaitsEvidence: Bool {
        machine.withLock { $0.awaitsEvidence }
    }

    /// The server (`host:port`) the breaker's state is about; nil until known (one fixed server
    /// that did not fail yet, or a backend that does not say).
    public var server: String? {
        machine.withLock { $0.server }
    }

    /// Reports how a permitted call ended.
    public func record(_ permit: CircuitBreakerPermit, outcome: CircuitCallOutcome, duration: Duration) {
        record(permit, outcome: outcome, duration: duration, at: clock.now)
    }

    /// Reports how a permitted call ended, at a time the caller has just read from the breaker's
    /// clock (the pipeline reads it once for its own metrics and the breaker).
    func record(
        _ permit: CircuitBreakerPermit,
        outcome: CircuitCallOutcome,
        duration: Duration,
        at now: MonotonicTime
    ) {
        guard permit.isCounted else { return }
        instruments?.recordBreakerCall(outcome)
        if outcome == .failure, currentServer != nil {
            recordFailure(permit, duration: duration, at: now)
            return
        }
        let transition = machine.withLock { $0.record(permit, outcome: outcome, duration: duration, at: now) }
        if let transition { publish(transition) }
    }

    /// A failure, which may open the breaker, says which server the state is about first.
    @inline(never)
    private func recordFailure(_ permit: CircuitBreakerPermit, duration: Duration, at now: MonotonicTime) {
        let server = currentServer?()
        var changed: CircuitTransition?
        let transition = machine.withLock { machine -> CircuitTransition? in
            if let server { changed = machine.serve(server, at: now) }
            return machine.record(permit, outcome: .failure, duration: duration, at: now)
        }
        if let changed { publish(changed) }
        if let transition { publish(transition) }
    }

    /// The current state. An open breaker whose timeout has elapsed still reads `OPEN` until the
    /// next call turns it half-open.
    public var state: CircuitState {
        machine.withLock { $0.state }
    }

    /// Whether a call made now would be rejected without reaching the database: forced open, or
    /// open and its timeout not yet elapsed. Readiness follows this, not ``state``: an open breaker
    /// turns half-open only when a call arrives, and a pod taken out of traffic while it reads
    /// `OPEN` would never get that call.
    public var isRejectingCalls: Bool {
        let now = clock.now
        return machine.withLock { machine in
            switch machine.state {
            case .forcedOpen: true
            case .open: machine.openUntil.map { now < $0 } ?? true
            case .closed, .halfOpen, .disabled: false
            }
        }
    }

    /// Puts the breaker into `state` on an operator's (or a test's) request.
    public func forceState(_ state: CircuitState) {
        let now = clock.now
        let transition = machine.withLock { $0.force(state, at: now) }
        if let transition { publish(transition) }
    }

    /// Closes the breaker and forgets the failures counted so far.
    public func reset() {
        let now = clock.now
        let transition = machine.withLock { $0.reset(at: now) }
        if let transition { publish(transition) }
    }

    /// A consistent snapshot of the breaker's state and counters.
    public var metrics: CircuitBreakerMetrics {
        let now = clock.now
        return machine.withLock { machine in
            let counters = machine.counters
            return CircuitBreakerMetrics(
                state: machine.state,
                failures: machine.windowFailures(at: now),
                successes: counters.successes,
                requests: counters.requests,
                rejected: counters.rejected,
                totalFailures: counters.failures,
                ignored: counters.ignored,
                stale: counters.stale,
                slowCalls: counters.slowCalls,
                transitions: counters.transitions,
                probesInFlight: machine.probesInFlight,
                server: machine.server,
                lastStateChange: machine.lastTransitionAt.map(wallTime(for:)),
                nextAttempt: machine.openUntil.map(wallTime(for:)),
                nextAttemptIn: machine.openUntil.map { max(.zero, $0 - now) },
                failureThreshold: machine.configuration.failureThreshold,
                openTimeout: machine.configuration.timeout
            )
        }
    }

    /// Converts a monotonic instant into wall-clock time for display.
    func wallTime(for instant: MonotonicTime) -> Date {
        wallClockAnchor.wall.addingTimeInterval((instant - wallClockAnchor.monotonic).seconds)
    }
}

/// A snapshot of a breaker: its state, the failures counting towards opening, and the counters
/// operators need.
public struct CircuitBreakerMetrics: Sendable, Equatable {
    public var state: CircuitState
    /// Failures counted towards opening in the current window (zero unless closed).
    public var failures: Int
    /// Successful calls since start.
    public var successes: Int
    /// Calls permitted since start.
    public var requests: Int
    /// Calls rejected without reaching the database.
    public var rejected: Int
    /// Failed calls since start.
    public var totalFailures: Int
    /// Calls whose outcome said nothing about the database (caller errors, cancellations).
    public var ignored: Int
    /// Outcomes dropped because the call began before the last state change.
    public var stale: Int
    public var slowCalls: Int
    public var transitions: Int
    public var probesInFlight: Int
    /// The server (`host:port`) the state is about; nil until known.
    public var server: String? = nil
    public var lastStateChange: Date?
    /// When an open breaker will admit probes.
    public var nextAttempt: Date?
    public var nextAttemptIn: Duration?
    /// The failures in the window that open it (`DB_CB_FAILURE_THRESHOLD`), in force now.
    public var failureThreshold: Int = 0
    /// The longest it stays open without evidence (`DB_CB_TIMEOUT`), in force now.
    public var openTimeout: Duration = .zero
}
