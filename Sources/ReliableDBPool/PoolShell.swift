import ReliableDBClock
import Synchronization

/// The I/O shell around ``PoolStateMachine`` that both backends' pools run on: a lock, the waiting
/// callers' continuations, answers that arrived before their caller suspended, and one alarm of
/// the injected clock at the machine's `wakeAt`.
///
/// Every decision is the machine's; the shell carries out its actions (resume a caller, hand a
/// connect, close or keep-alive to the ``PoolDriver``) outside the lock. The alarm is the library's
/// one timer mechanism (``ReliabilityClock/makeAlarm(_:)``: with the system clock a libdispatch
/// timer, not a cooperative thread), so a wait ends on time even while every cooperative thread is
/// busy, and a ``ManualClock`` drives every timeout in tests. The acquire figures are the
/// machine's (``PoolCounters``), so every backend reports them the same way.
///
/// A lease that finds an idle connection costs one lock, no suspension and no allocation. The
/// shell is not generic: connections are objects (``PoolConnectionObject``) that each backend's
/// adapter casts back to its own type, and the driver is an existential called only off the fast
/// path. A generic shell would need every backend's module to specialize it, and `@inlinable`
/// `package` code is not specialized across modules: its unspecialized lease and release went
/// through generic metadata on every call, 30% of a pooled statement's CPU.
///
/// The alarm's action holds the shell strongly (a weak reference would give the shell a side table
/// and slow every retain of it); ``detachAlarm()`` ends that cycle, and its owner must call it (on
/// shutdown, or in its own deinit).
package final class PoolShell: Sendable {
    package typealias Connection = PoolConnectionObject
    @usableFromInline typealias Answer = Result<PoolLease, PoolLeaseFailure>
    @usableFromInline typealias Waiter = CheckedContinuation<PoolLease, any Error>

    @usableFromInline
    struct State {
        @usableFromInline var machine: PoolStateMachine
        /// Every connection the machine knows past `connecting`, by id.
        @usableFromInline var connections: [PoolStateMachine.ConnectionID: Connection] = [:]
        var waiters: [PoolStateMachine.RequestID: Waiter] = [:]
        /// Answers for requests whose continuation was not stored yet.
        var early: [PoolStateMachine.RequestID: Answer] = [:]
        @usableFromInline var nextRequest = 0
        @usableFromInline var alarm = HeldAlarm()
        var lastConnectError: (any Error)?
        var shutdownWaiters: [CheckedContinuation<Void, Never>] = []

        init(machine: PoolStateMachine) {
            self.machine = machine
        }

        /// Keeps the alarm at `wakeAt` or earlier, armed under the lock so that two events cannot
        /// leave it at the later instant. With nothing due it is disarmed only when `disarmsWhenIdle`:
        /// for a pool whose idle timers come and go with every lease and release, re-arming a
        /// system timer each time would cost a syscall, and an alarm that fires early only ticks
        /// the machine, which re-arms it.
        mutating func schedule(_ wakeAt: PoolInstant?, disarmsWhenIdle: Bool) {
            if let wakeAt {
                alarm.arm(notLaterThan: wakeAt)
            } else if disarmsWhenIdle {
                alarm.disarm()
            }
        }
    }

    /// What an event left to do outside the lock.
    @usableFromInline
    struct Work {
        var resumes: [(Waiter, Answer)] = []
        var connects: [PoolConnect] = []
        var closes: [Connection] = []
        var keepAlives: [(Connection, PoolStateMachine.ConnectionID)] = []
        var shutdownWaiters: [CheckedContinuation<Void, Never>] = []
        /// The answer to the request that caused the event, when it got one at once.
        var own: Answer?
        /// The machine's next instant, from the last event handled.
        var wakeAt: PoolInstant?

        init() {}
    }

    @usableFromInline let state: Mutex<State>
    @usableFromInline let clock: any ReliabilityClock
    @usableFromInline let disarmsWhenIdle: Bool
    package let driver: any PoolDriver
    /// The most connections at once, as the machine clamped it.
    /// The most connections now (``resize(maximumConnections:)`` changes it).
    package var limit: Int { limitNow.load(ordering: .relaxed) }
    private let limitNow: Atomic<Int>

    /// - Parameters:
    ///   - prewarm: connections opened at once and left idle (``PoolStateMachine/prewarm(count:now:)``).
    ///   - disarmsWhenIdle: whether the alarm is disarmed while nothing is due (see
    ///     `State.schedule`); worth it only where idle connections have no timers.
    package init(
        configuration: PoolConfiguration,
        driver: any PoolDriver,
        clock: any ReliabilityClock,
        prewarm: Int = 0,
        disarmsWhenIdle: Bool = false
    ) {
        let machine = PoolStateMachine(configuration: configuration)
        limitNow = Atomic(machine.configuration.maximumConnections)
        state = Mutex(State(machine: machine))
        self.clock = clock
        self.driver = driver
        self.disarmsWhenIdle = disarmsWhenIdle
        let alarm = clock.makeAlarm { [self] in alarmFired() }
        state.withLock { $0.alarm.hold(alarm) }
        if prewarm > 0 { event { machine, now in machine.prewarm(count: prewarm, now: now) } }
        // A minimum idle is opened from the start, a couple of connects at a time.
        if machine.configuration.minimumIdle > 0 { event { machine, now in machine.tick(now: now) } }
    }

    /// Disarms the alarm and lets go of it, which ends the cycle through its action. No timer
    /// fires afterwards: only for a pool shut down or no longer used.
    package func detachAlarm() {
        state.withLock { $0.alarm.detach() }?.disarm()
    }

    // MARK: Leasing

    /// A connection, waiting at most `timeout` (the pool timeout: ``PoolLeaseFailure/timedOut``;
    /// `nil` for none) or until the operation's `deadline` (``PoolLeaseFailure/deadlineReached``),
    /// whichever ends first. Throws ``PoolLeaseFailure``. The timeout runs from the time read under
    /// the lock, so a timeout of a nanosecond still takes a free connection. See
    /// ``PoolStateMachine/lease(request:timeoutAt:deadline:now:preferredLoop:bypassingBackoff:)``
    /// for `preferredLoop` and `bypassingBackoff`.
    package func lease(
        timeout: Duration?,
        deadline: PoolInstant?,
        preferredLoop: Int? = nil,
        bypassingBackoff: Bool = false
    ) async throws -> PoolLease {
        let (request, fast, work) = state.withLock { state -> (Int, PoolLease?, Work?) in
            state.nextRequest += 1
            let request = state.nextRequest
            let now = clock.now
            let actions = state.machine.lease(
                request: request,
                timeoutAt: timeout.map { now + $0 },
                deadline: deadline,
                now: now,
                preferredLoop: preferredLoop,
                bypassingBackoff: bypassingBackoff
            )
            // The fast path: an idle connection, nothing else to do.
            if let grant = actions.grant, grant.request == request, actions.listsAreEmpty,
                !actions.shutDownCompleted, let connection = state.connections[grant.connection]
            {
                state.schedule(actions.wakeAt, disarmsWhenIdle: disarmsWhenIdle)
                return (request, PoolLease(connection: connection, id: grant.connection, waited: .zero), nil)
            }
            return (request, nil, handle(actions, own: request, now: now, in: &state))
        }
        if let fast { return fast }
        return try await answer(request, after: work!)
    }

    /// Carries out what the lease's event decided, then returns its answer, suspending until it
    /// comes if it has not yet.
    @usableFromInline
    func answer(_ request: PoolStateMachine.RequestID, after work: Work) async throws -> PoolLease {
        carryOut(work)
        if let own = work.own { return try own.get() }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: Waiter) in
                let early = state.withLock { state -> Answer? in
                    if let early = state.early.removeValue(forKey: request) { return early }
                    state.waiters[request] = continuation
                    return nil
                }
                if let early { continuation.resume(with: early.mapError { $0 as any Error }) }
            }
        } onCancel: {
            self.event { machine, _ in machine.cancel(request: request) }
        }
    }

    /// Returns a leased connection; with `discard` it is closed and its slot freed for a new one.
    package func release(_ id: PoolStateMachine.ConnectionID, discard: Bool = false) {
        let work = state.withLock { state -> Work? in
            let now = clock.now
            let actions = state.machine.release(connection: id, discard: discard, now: now)
            // The common case: nobody waits, nothing closes.
            if actions.grant == nil, actions.listsAreEmpty, !actions.shutDownCompleted {
                state.schedule(actions.wakeAt, disarmsWhenIdle: disarmsWhenIdle)
                return nil
            }
            return handle(actions, own: nil, now: now, in: &state)
        }
        if let work { carryOut(work) }
    }

    // MARK: Reports from the driver

    /// Connection `id` opened; `loopKey` is the event loop it ended up on, if the driver knows.
    package func connected(_ connection: Connection, id: PoolStateMachine.ConnectionID, loopKey: Int?) {
        event { machine, now in
            machine.connected(connection: id, loop: loopKey, now: now, lifetimeJitter: Double.random(in: 0...1))
        } preparing: { state in
            state.connections[id] = connection
            state.lastConnectError = nil
        }
    }

    /// Opening connection `id` failed with `error`; callers failed fast are answered with it.
    package func connectFailed(id: PoolStateMachine.ConnectionID, error: any Error) {
        event { machine, now in
            machine.connectFailed(connection: id, now: now)
        } preparing: { state in
            state.lastConnectError = error
        }
    }

    /// Connection `id`'s socket closed, whatever state it was in.
    package func closed(id: PoolStateMachine.ConnectionID) {
        event { machine, now in
            machine.closed(connection: id, now: now)
        } preparing: { state in
            state.connections[id] = nil
        }
    }

    /// A keep-alive check of connection `id` finished.
    package func keepAliveDone(id: PoolStateMachine.ConnectionID, alive: Bool) {
        event { machine, now in machine.keepAliveDone(connection: id, alive: alive, now: now) }
    }

    /// Connection `refused` found its server demoted (``PoolStateMachine/evictAll(refused:now:)``).
    package func evictAll(refused: PoolStateMachine.ConnectionID) {
        event { machine, now in machine.evictAll(refused: refused, now: now) }
    }

    /// The server answered outside the pool (``PoolStateMachine/serverReachable(now:)``).
    package func serverReachable() {
        event { machine, now in machine.serverReachable(now: now) }
    }

    // MARK: Shutdown

    /// Fails the waiters and admits no one any more; idle connections close now, leased ones when
    /// released. With `closingLeased`, leased connections are closed now too (their work fails).
    package func beginShutdown(closingLeased: Bool = false) {
        let (work, open) = state.withLock { state in
            let now = clock.now
            let work = handle(state.machine.shutdown(), own: nil, now: now, in: &state)
            return (work, closingLeased ? Array(state.connections.values) : [])
        }
        carryOut(work)
        for connection in open { driver.close(connection) }
    }

    /// Waits, after ``beginShutdown(closingLeased:)``, until every connection has ended. Suspends
    /// rather than blocks.
    package func waitUntilShutDown() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state -> Bool in
                if state.machine.isShutDownComplete { return true }
                state.shutdownWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    // MARK: Figures

    /// The machine's gauges and counts, acquire times included, read under the lock.
    package var statistics: PoolCounters {
        state.withLock { $0.machine.statistics }
    }

    /// The error of the last connect, until a connect succeeds.
    package var lastConnectError: (any Error)? {
        state.withLock { $0.lastConnectError }
    }

    /// Whether the last connect failed, and how many connections are open (idle, leased or being
    /// probed), read together.
    package var reachability: (connectFailed: Bool, openConnections: Int) {
        state.withLock { ($0.lastConnectError != nil, $0.machine.openConnectionCount) }
    }

    // MARK: Events

    /// Applies one event to the machine and carries out what it decided.
    func event(_ body: (inout PoolStateMachine, PoolInstant) -> PoolActions) {
        event(body) { _ in }
    }

    /// Applies one event to the machine after `preparing` updated the shell's own records.
    func event(_ body: (inout PoolStateMachine, PoolInstant) -> PoolActions, preparing: (inout State) -> Void) {
        let work = state.withLock { state in
            preparing(&state)
            let now = clock.now
            return handle(body(&state.machine, now), own: nil, now: now, in: &state)
        }
        carryOut(work)
    }

    /// A new most connections (live settings): see
    /// ``PoolStateMachine/resize(maximumConnections:now:)``.
    package func resize(maximumConnections: Int) {
        event { machine, now in
            let actions = machine.resize(maximumConnections: maximumConnections, now: now)
            limitNow.store(machine.configuration.maximumConnections, ordering: .relaxed)
            return actions
        }
    }

    private func alarmFired() {
        let work = state.withLock { state in
            state.alarm.fired()
            let now = clock.now
            return handle(state.machine.tick(now: now), own: nil, now: now, in: &state)
        }
        carryOut(work)
    }

    /// Turns one event's actions into work for outside the lock and keeps the alarm at the
    /// machine's next instant.
    @usableFromInline
    func handle(
        _ actions: PoolActions,
        own: PoolStateMachine.RequestID?,
        now: PoolInstant,
        in state: inout State
    )
        -> Work
    {
        var work = Work()
        absorb(actions, own: own, now: now, into: &work, state: &state)
        state.schedule(work.wakeAt, disarmsWhenIdle: disarmsWhenIdle)
        if state.machine.isShutDownComplete && !state.shutdownWaiters.isEmpty {
            work.shutdownWaiters = state.shutdownWaiters
            state.shutdownWaiters = []
        }
        return work
    }

    /// Resolves ids to connections and continuations. A driver that opens instantly has its
    /// connects, closes and keep-alives answered to the machine here, and what those answers
    /// decide is absorbed too.
    private func absorb(
        _ actions: PoolActions,
        own: PoolStateMachine.RequestID?,
        now: PoolInstant,
        into work: inout Work,
        state: inout State
    ) {
        work.wakeAt = actions.wakeAt
        if let grant = actions.grant {
            guard let connection = state.connections[grant.connection] else {
                preconditionFailure("the pool granted connection \(grant.connection), which it never opened")
            }
            let lease = PoolLease(connection: connection, id: grant.connection, waited: grant.waited)
            deliver(.success(lease), to: grant.request, own: own, into: &work, state: &state)
        }
        guard !actions.listsAreEmpty else { return }
        for failure in actions.failures {
            let error: PoolLeaseFailure
            switch failure.reason {
            case .timedOut: error = .timedOut
            case .deadlineReached: error = .deadlineReached
            case .cancelled: error = .cancelled
            case .shutdown: error = .shutDown
            case .connectFailed: error = .connectFailed(state.lastConnectError ?? PoolLeaseFailure.shutDown)
            }
            deliver(.failure(error), to: failure.request, own: own, into: &work, state: &state)
        }
        let instant = driver.opensInstantly
        for connect in actions.connects {
            if instant {
                state.connections[connect.connection] = driver.instantConnection(connect.connection)
                let next = state.machine.connected(connection: connect.connection, now: now)
                absorb(next, own: own, now: now, into: &work, state: &state)
            } else {
                work.connects.append(connect)
            }
        }
        for close in actions.closes {
            if instant {
                state.connections[close.connection] = nil
                absorb(
                    state.machine.closed(connection: close.connection, now: now),
                    own: own,
                    now: now,
                    into: &work,
                    state: &state
                )
            } else if let connection = state.connections[close.connection] {
                work.closes.append(connection)
            }
        }
        for id in actions.keepAlives {
            if instant {
                let next = state.machine.keepAliveDone(connection: id, alive: true, now: now)
                absorb(next, own: own, now: now, into: &work, state: &state)
            } else if let connection = state.connections[id] {
                work.keepAlives.append((connection, id))
            }
        }
    }

    private func deliver(
        _ answer: Answer,
        to request: PoolStateMachine.RequestID,
        own: PoolStateMachine.RequestID?,
        into work: inout Work,
        state: inout State
    ) {
        if request == own {
            work.own = answer
        } else if let continuation = state.waiters.removeValue(forKey: request) {
            work.resumes.append((continuation, answer))
        } else {
            state.early[request] = answer
        }
    }

    @usableFromInline
    func carryOut(_ work: Work) {
        for (continuation, answer) in work.resumes { continuation.resume(with: answer.mapError { $0 as any Error }) }
        for connect in work.connects { driver.open(connect.connection, loopKey: connect.loopKey, for: self) }
        for connection in work.closes { driver.close(connection) }
        for (connection, id) in work.keepAlives { driver.keepAlive(connection, id: id, for: self) }
        for waiter in work.shutdownWaiters { waiter.resume() }
    }
}
