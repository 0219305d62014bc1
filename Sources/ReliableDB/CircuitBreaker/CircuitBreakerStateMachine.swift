/// The right to make one call through a ``CircuitBreaker``, handed back to
/// ``CircuitBreaker/record(_:outcome:duration:)`` when the call ends.
public struct CircuitBreakerPermit: Sendable, Equatable {
    public let generation: UInt64
    public let isProbe: Bool
    /// Permits in the disabled state are not recorded at all.
    public let isCounted: Bool
}

/// What ``CircuitBreaker/acquire()`` answers: a permit for the call, or why not.
public enum CircuitBreakerDecision: Sendable, Equatable {
    case permitted(CircuitBreakerPermit)
    /// Rejected; `retryAfter` says when the breaker will admit probes, if it will on its own.
    case rejected(state: CircuitState, retryAfter: Duration?)
}

/// The circuit breaker's decisions as a pure value: time comes in as an argument, decisions and
/// transitions come out. The ``CircuitBreaker`` shell adds locking and event delivery.
///
/// Every transition bumps a generation counter. A permit remembers the generation it was taken in,
/// and an outcome reported with a permit from an older generation is ignored: a slow call that
/// started before the breaker opened must not count towards closing it again, or vice versa.
package struct CircuitBreakerStateMachine: Sendable {
    package typealias Permit = CircuitBreakerPermit
    package typealias Decision = CircuitBreakerDecision

    public private(set) var configuration: CircuitBreakerConfiguration
    public private(set) var state: CircuitState = .closed
    public private(set) var generation: UInt64 = 0
    public private(set) var openUntil: MonotonicTime?
    public private(set) var lastTransitionAt: MonotonicTime?
    /// Why the breaker is in its state.
    public private(set) var lastReason: CircuitTransitionReason?
    public private(set) var probesInFlight = 0
    /// The server (`host:port`) this state is about; nil until one is known. A breaker judges one
    /// server: when connections move to another (a failover), that one starts CLOSED.
    public private(set) var server: String?
    private var halfOpenSuccesses = 0
    /// Whether a success can open the breaker: it can raise a rate (by completing the minimum
    /// number of calls) but never a count, so count mode skips the window on successes.
    private var evaluatesEveryCall: Bool
    private var window: SlidingWindow
    private(set) var counters = Counters()

    struct Counters: Sendable, Equatable {
        var requests = 0
        var successes = 0
        var failures = 0
        var slowCalls = 0
        var ignored = 0
        var stale = 0
        var rejected = 0
        var transitions = 0
    }

    public init(configuration: CircuitBreakerConfiguration = .init()) {
        self.configuration = configuration
        window = SlidingWindow(configuration.slidingWindow ?? .time(configuration.monitorWindow))
        evaluatesEveryCall = configuration.failureRateThreshold != nil || configuration.slowCallDurationThreshold != nil
    }

    /// Puts `new` in force for what comes next: the state, its counts and an open breaker's
    /// deadline stay; the window keeps its calls when its kind and size are the same, and starts
    /// empty otherwise. The next evaluation (a failure, a half-open trial, an open timeout taken
    /// from now on) uses the new thresholds.
    public mutating func reconfigure(_ new: CircuitBreakerConfiguration) {
        let oldWindow = configuration.slidingWindow ?? .time(configuration.monitorWindow)
        let newWindow = new.slidingWindow ?? .time(new.monitorWindow)
        if oldWindow != newWindow { window = SlidingWindow(newWindow) }
        configuration = new
        evaluatesEveryCall = new.failureRateThreshold != nil || new.slowCallDurationThreshold != nil
    }

    /// Asks to make a call. In the closed state this is a couple of comparisons.
    public mutating func acquire(at now: MonotonicTime) -> (Decision, CircuitTransition?) {
        switch state {
        case .closed, .disabled:
            counters.requests += 1
            return (.permitted(Permit(generation: generation, isProbe: false, isCounted: state == .closed)), nil)
        case .open:
            guard let openUntil, now >= openUntil else {
                counters.rejected += 1
                return (.rejected(state: .open, retryAfter: (openUntil ?? now) - now), nil)
            }
            let transition = transition(to: .halfOpen, reason: .openTimeoutElapsed, at: now)
            return (admitProbe(at: now), transition)
        case .halfOpen:
            return (admitProbe(at: now), nil)
        case .forcedOpen:
            counters.rejected += 1
            return (.rejected(state: .forcedOpen, retryAfter: nil), nil)
        }
    }

    private mutating func admitProbe(at now: MonotonicTime) -> Decision {
        guard probesInFlight < configuration.maxConcurrentProbes else {
            counters.rejected += 1
            return .rejected(state: .halfOpen, retryAfter: nil)
        }
        probesInFlight += 1
        counters.requests += 1
        return .permitted(Permit(generation: generation, isProbe: true, isCounted: true))
    }

    /// Reports how a permitted call ended. Returns the transition it caused, if any.
    public mutating func record(
        _ permit: Permit,
        outcome: CircuitCallOutcome,
        duration: Duration,
        at now: MonotonicTime
    ) -> CircuitTransition? {
        guard permit.isCounted else { return nil }
        guard permit.generation == generation else {
            counters.stale += 1
            return nil
        }
        let slow = outcome == .success && configuration.slowCallDurationThreshold.map { duration > $0 } ?? false
        switch outcome {
        case .success: counters.successes += 1
        case .failure: counters.failures += 1
        case .ignored: counters.ignored += 1
        }
        if slow { counters.slowCalls += 1 }

        switch state {
        case .closed:
            guard outcome != .ignored else { return nil }
            window.record(failure: outcome == .failure, slow: slow, at: now)
            // Rates are evaluated on every call, as Resilience4j does: failure, failure, failure,
            // success, success opens a 50% breaker with a minimum of 5 calls at the fifth.
            guard outcome == .failure || slow || evaluatesEveryCall, let reason = tripReason(at: now) else {
                return nil
            }
            return transition(to: .open, reason: reason, at: now)
        case .halfOpen:
            if permit.isProbe { probesInFlight -= 1 }
            switch outcome {
            case .ignored:
                return nil
            case .failure:
                return transition(to: .open, reason: .probeFailed, at: now)
            case .success:
                halfOpenSuccesses += 1
                guard halfOpenSuccesses >= configuration.successThreshold else { return nil }
                return transition(to: .closed, reason: .probesSucceeded, at: now)
            }
        case .open, .forcedOpen, .disabled:
            return nil
        }
    }

    private func tripReason(at now: MonotonicTime) -> CircuitTransitionReason? {
        let totals = window.totals(at: now)
        if let rate = configuration.failureRateThreshold {
            if totals.calls >= configuration.minimumNumberOfCalls,
                Double(totals.failures) * 100 >= rate * Double(totals.calls)
            {
                return .failureRate
            }
        } else if totals.failures >= configuration.failureThreshold {
            return .failureThreshold
        }
        if configuration.slowCallDurationThreshold != nil, totals.calls >= configuration.minimumNumberOfCalls,
            Double(totals.slowCalls) * 100 >= configuration.slowCallRateThreshold * Double(totals.calls)
        {
            return .slowCallRate
        }
        return nil
    }

    /// A probe completed a round trip with the server: it answers again. An open breaker turns
    /// half-open at once instead of waiting out the rest of ``CircuitBreakerConfiguration/timeout``,
    /// which is only the longest wait without such evidence. With `server` naming a server other
    /// than the one this state is about (connections moved, a failover), the breaker starts over
    /// CLOSED for it instead (``serve(_:at:)``). Forced and disabled states are the operator's and
    /// stay as they are.
    public mutating func serverAnswered(_ server: String? = nil, at now: MonotonicTime) -> CircuitTransition? {
        if let server, server != self.server, self.server != nil {
            return serve(server, at: now)
        }
        if let server, self.server == nil { self.server = server }
        guard awaitsEvidence else { return nil }
        return transition(to: .halfOpen, reason: .serverAnswered, at: now)
    }

    /// OPEN by a trip: a probe that finds the server answering ends it. An operator's
    /// `force(.open)` waits out its timeout instead.
    public var awaitsEvidence: Bool {
        state == .open && lastReason != .forced
    }

    /// Says which server (`host:port`) calls go to now. The first one is recorded; a different one
    /// is a server this breaker has not judged: it starts CLOSED with an empty window, and outcomes
    /// of calls made to the previous server are ignored (a new generation). An operator's forced
    /// or disabled state is kept.
    public mutating func serve(_ server: String, at now: MonotonicTime) -> CircuitTransition? {
        guard server != self.server else { return nil }
        let previous = self.server
        self.server = server
        guard previous != nil, state != .forcedOpen, state != .disabled else { return nil }
        return transition(to: .closed, reason: .serverChanged, at: now)
    }

    /// Takes back the last rejection: the call is admitted after all (its server changed).
    mutating func forgetRejection() {
        counters.rejected -= 1
    }

    /// Failures currently counted towards opening.
    public func windowFailures(at now: MonotonicTime) -> Int {
        state == .closed ? window.totals(at: now).failures : 0
    }

    /// Puts the breaker in `target` on an operator's request. `.open` behaves like a trip that
    /// waits out the timeout (no probe shortens an operator's open); `.forcedOpen` holds until
    /// changed again.
    public mutating func force(_ target: CircuitState, at now: MonotonicTime) -> CircuitTransition? {
        transition(to: target, reason: .forced, at: now)
    }

    /// Back to closed with an empty window, as after a fresh start.
    public mutating func reset(at now: MonotonicTime) -> CircuitTransition? {
        let result = transition(to: .closed, reason: .reset, at: now)
        window.reset()
        return result
    }

    private mutating func transition(
        to target: CircuitState,
        reason: CircuitTransitionReason,
        at now: MonotonicTime
    ) -> CircuitTransition? {
        let from = state
        state = target
        generation &+= 1
        counters.transitions += 1
        lastTransitionAt = now
        lastReason = reason
        probesInFlight = 0
        halfOpenSuccesses = 0
        openUntil = target == .open ? now + configuration.timeout : nil
        if target == .closed { window.reset() }
        guard from != target else { return nil }
        return CircuitTransition(from: from, to: target, reason: reason, at: now, generation: generation)
    }
}
