import Synchronization

/// Load shedding settings: a bulkhead (at most ``maxConcurrent`` operations in flight, at most
/// ``maxWaiting`` callers waiting up to ``maxWait``) whose limit an adaptive concurrency limit
/// moves with the measured latency, so overload is answered at once with
/// ``DatabaseOverloadedError`` instead of queueing into pool timeouts.
public struct LoadSheddingConfiguration: Sendable, Equatable {
    /// Off by default: a bulkhead rejects work the pool would have queued, which an application
    /// must be ready to answer (HTTP 503 with `Retry-After`).
    public var enabled: Bool
    /// The hard cap on operations in flight; the pool size is a good start.
    public var maxConcurrent: Int
    /// Callers that may wait for a slot; 0 sheds at once.
    public var maxWaiting: Int
    /// The longest a caller waits for a slot (never past its own deadline).
    public var maxWait: Duration
    /// Moves the limit between its `minLimit` and ``maxConcurrent`` with the latency; nil keeps
    /// it at ``maxConcurrent``.
    public var adaptive: AdaptiveLimitConfiguration?

    public init(
        enabled: Bool = false,
        maxConcurrent: Int = 10,
        maxWaiting: Int = 0,
        maxWait: Duration = .zero,
        adaptive: AdaptiveLimitConfiguration? = .init()
    ) {
        self.enabled = enabled
        self.maxConcurrent = maxConcurrent
        self.maxWaiting = maxWaiting
        self.maxWait = maxWait
        self.adaptive = adaptive
    }

    public static let disabled = LoadSheddingConfiguration()

    public var validationProblems: [String] {
        guard enabled else { return [] }
        var problems: [String] = []
        if maxConcurrent < 1 { problems.append("loadShedding.maxConcurrent to be at least 1, got \(maxConcurrent)") }
        if maxWaiting < 0 { problems.append("loadShedding.maxWaiting to be 0 or more, got \(maxWaiting)") }
        if maxWait < .zero { problems.append("loadShedding.maxWait to be zero or more, got \(maxWait)") }
        if let adaptive { problems += adaptive.validationProblems }
        return problems
    }
}

/// The operation was shed: the database already has as much work as the load-shedding limit
/// allows. Nothing was sent. Answer it at once (HTTP 503 with `Retry-After`), do not retry in a loop.
public struct DatabaseOverloadedError: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var limit: Int
    public var inFlight: Int
    /// How long the caller waited for a slot before being shed (zero when shed at once).
    public var waited: Duration

    public var description: String {
        let wait = waited > .zero ? " after waiting \(waited.milliseconds) ms" : ""
        return
            "Database overloaded: '\(operation)' was shed\(wait) (\(inFlight) operations in flight, limit \(limit)); not sent"
    }
}

/// What the load shedder is doing now, for metrics and `/api/health`.
public struct LoadSheddingSnapshot: Sendable, Equatable, Codable {
    public var limit: Int
    public var inFlight: Int
    public var waiting: Int
    public var admitted: Int
    public var shed: Int

    public init(limit: Int, inFlight: Int, waiting: Int, admitted: Int, shed: Int) {
        self.limit = limit
        self.inFlight = inFlight
        self.waiting = waiting
        self.admitted = admitted
        self.shed = shed
    }
}

/// The shell around ``BulkheadStateMachine`` and ``AdaptiveConcurrencyLimit``: a lock, the
/// waiting callers' continuations, and one clock alarm at the earliest wait's end.
///
/// The alarm is a ``HeldAlarm`` in the locked state, armed under the lock by the event that queued
/// a waiter or found the next one: armed after the lock, a caller could be seen waiting (and the
/// clock moved past its wait's end) before its alarm was set.
final class LoadShedder: Sendable {
    private struct State {
        var bulkhead: BulkheadStateMachine
        var adaptive: AdaptiveConcurrencyLimit?
        var waiters: [UInt64: CheckedContinuation<Void, any Error>] = [:]
        /// Waits decided (admitted: true, shed: false) before their caller had suspended.
        var decidedEarly: [UInt64: Bool] = [:]
        var nextID: UInt64 = 0
        var admitted = 0
        var shed = 0
        /// At the earliest wait's end while anyone waits. Its action holds the shedder weakly.
        var alarm = HeldAlarm()

        /// Resumes `id`'s caller, or records the decision for when it suspends.
        mutating func decide(_ id: UInt64, admitted: Bool) -> (CheckedContinuation<Void, any Error>, Bool)? {
            if let continuation = waiters.removeValue(forKey: id) { return (continuation, admitted) }
            decidedEarly[id] = admitted
            return nil
        }
    }

    /// A slot held by one operation; hand it back with ``release(_:latency:dropped:)``.
    struct Permit: Sendable {}

    private struct Shed: Error {}

    private let state: Mutex<State>
    private let clock: any ReliabilityClock

    init(_ configuration: LoadSheddingConfiguration, clock: any ReliabilityClock) {
        var adaptive: AdaptiveConcurrencyLimit?
        if var tuned = configuration.adaptive {
            // The adaptive limit moves below the bulkhead's cap, never above it.
            tuned.maxLimit = min(tuned.maxLimit, configuration.maxConcurrent)
            tuned.minLimit = min(tuned.minLimit, tuned.maxLimit)
            tuned.initialLimit = min(max(tuned.initialLimit, tuned.minLimit), tuned.maxLimit)
            adaptive = AdaptiveConcurrencyLimit(tuned)
        }
        state = Mutex(
            State(
                bulkhead: BulkheadStateMachine(
                    maxConcurrent: adaptive?.limit ?? configuration.maxConcurrent,
                    maxWaiting: configuration.maxWaiting,
                    maxWait: configuration.maxWait
                ),
                adaptive: adaptive
            )
        )
        self.clock = clock
        let alarm = clock.makeAlarm { [weak self] in self?.expireDue() }
        state.withLock { $0.alarm.hold(alarm) }
    }

    deinit {
        state.withLock { $0.alarm.detach() }?.disarm()
    }

    var snapshot: LoadSheddingSnapshot {
        state.withLock {
            LoadSheddingSnapshot(
                limit: $0.bulkhead.limit,
                inFlight: $0.bulkhead.inFlight,
                waiting: $0.bulkhead.waiting,
                admitted: $0.admitted,
                shed: $0.shed
            )
        }
    }

    /// A slot now, after a wait of at most `maxWait`, or ``DatabaseOverloadedError``.
    func acquire(_ operation: String) async throws -> Permit {
        let start = clock.now
        let (decision, id) = state.withLock { state in
            state.nextID &+= 1
            let decision = state.bulkhead.admit(id: state.nextID, at: start)
            switch decision {
            case .admitted: state.admitted += 1
            case .rejected: state.shed += 1
            case .queued: if let next = state.bulkhead.nextDeadline { state.alarm.arm(notLaterThan: next) }
            }
            return (decision, state.nextID)
        }
        switch decision {
        case .admitted:
            return Permit()
        case .rejected:
            throw overloaded(operation, waited: .zero)
        case .queued:
            do {
                try await withTaskCancellationHandler {
                    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                        let early = state.withLock { state -> Bool? in
                            if let decided = state.decidedEarly.removeValue(forKey: id) { return decided }
                            state.waiters[id] = continuation
                            return nil
                        }
                        switch early {
                        case true?: continuation.resume()
                        case false?: continuation.resume(throwing: Shed())
                        case nil: break
                        }
                    }
                } onCancel: {
                    let continuation = state.withLock { state -> CheckedContinuation<Void, any Error>? in
                        guard state.bulkhead.cancel(id: id) else { return nil }
                        guard let continuation = state.waiters.removeValue(forKey: id) else {
                            state.decidedEarly[id] = false
                            return nil
                        }
                        return continuation
                    }
                    continuation?.resume(throwing: CancellationError())
                }
            } catch is Shed {
                throw overloaded(operation, waited: clock.now - start)
            }
            return Permit()
        }
    }

    /// Hands the slot back; `latency` (the operation's own time) and `dropped` (it timed out or
    /// found the database overloaded) move the adaptive limit.
    func release(_ permit: Permit, latency: Duration, dropped: Bool) {
        let now = clock.now
        let resumed = state.withLock { state -> [(CheckedContinuation<Void, any Error>, Bool)] in
            var ids: [UInt64] = []
            if var adaptive = state.adaptive {
                let limit = adaptive.sample(rtt: latency, inFlight: state.bulkhead.inFlight, didDrop: dropped, at: now)
                state.adaptive = adaptive
                ids += state.bulkhead.setLimit(limit, at: now)
            }
            if let next = state.bulkhead.release(at: now) { ids.append(next) }
            state.admitted += ids.count
            return ids.compactMap { state.decide($0, admitted: true) }
        }
        for (continuation, _) in resumed { continuation.resume() }
    }

    private func overloaded(_ operation: String, waited: Duration) -> DatabaseOverloadedError {
        let (limit, inFlight) = state.withLock { ($0.bulkhead.limit, $0.bulkhead.inFlight) }
        return DatabaseOverloadedError(operation: operation, limit: limit, inFlight: inFlight, waited: waited)
    }

    /// The alarm: sheds the waiters whose wait has ended and re-arms for the next. A spare or
    /// early call (the earliest waiter left before its wait ended) sheds no one and re-arms.
    private func expireDue() {
        let now = clock.now
        let expired = state.withLock { state in
            state.alarm.fired()
            let ids = state.bulkhead.expire(at: now)
            state.shed += ids.count
            if let next = state.bulkhead.nextDeadline { state.alarm.arm(notLaterThan: next) }
            return ids.compactMap { state.decide($0, admitted: false) }
        }
        for (continuation, _) in expired { continuation.resume(throwing: Shed()) }
    }
}
