import Synchronization

/// Fires operation deadlines from one clock alarm, so an operation with a timeout runs inline in
/// its caller's task: no child task, no timer and no allocation per call.
///
/// Work that can be stopped (a SQLite statement, a PostgreSQL query, a pool wait) registers its
/// deadline with an *interrupt* for as long as it runs; when the deadline passes the alarm marks
/// the slot fired and calls the interrupt. Interrupts are called under the scheduler's lock, and
/// unregistering takes the same lock, so an interrupt can never hit a connection that has already
/// moved on to another caller. Only interruptible work registers: whether an operation's deadline
/// has passed is a clock reading, so an operation costs two lock round trips here, not four.
///
/// The alarm (``ReliabilityClock/makeAlarm(_:)``) is armed for the earliest deadline registered
/// since it last fired, and re-armed only when an earlier one arrives: with equal timeouts, once
/// per timeout period however many operations run. With ``SystemClock`` it is a libdispatch timer,
/// on time even while every cooperative thread is busy (which is when timeouts matter most); with a
/// ``ManualClock`` it fires as the test advances time. No thread or task runs in the background.
package final class DeadlineScheduler: Sendable {
    package struct Token: Sendable, Equatable {
        let index: Int32
        let generation: UInt32
    }

    let clock: any ReliabilityClock
    /// The slots and the alarm. The alarm's action holds the core strongly and `deinit` breaks that
    /// cycle: a weak reference to the scheduler would give it a side table, and then every retain
    /// of it (each operation's ``AttemptContext`` takes one) would take the runtime's slow path,
    /// shared by both cores (measured with `Benchmarks/PipelineContention`, Sources/ReliableDB/Documentation.docc/Performance.md).
    private let core: Core

    package init(clock: any ReliabilityClock) {
        self.clock = clock
        core = Core(clock: clock)
    }

    deinit {
        core.stop()
    }

    /// Stops firing; deadlines registered afterwards never fire.
    package func stop() {
        core.stop()
    }

    /// Runs `body` with a context whose deadline is `deadline`, for bounding work outside the
    /// pipeline (a backend's pool wait).
    package func bounded<R>(until deadline: MonotonicTime, _ body: (AttemptContext) async throws -> R) async throws -> R
    {
        try await body(AttemptContext(scheduler: self, attempt: 1, deadline: deadline))
    }

    /// Arms `deadline` with `interrupt` until ``unregister(_:)``; nil, arming nothing, when the
    /// deadline has already passed.
    func register(_ deadline: MonotonicTime, interrupt: @escaping @Sendable () -> Void) -> Token? {
        if clock.now >= deadline { return nil }
        return core.register(deadline, interrupt: interrupt)
    }

    /// Releases the slot. Returns whether the deadline fired while it was held. The alarm stays
    /// armed: it finds nothing due and re-arms for the earliest deadline left, if any.
    @discardableResult
    func unregister(_ token: Token) -> Bool {
        core.unregister(token)
    }

    private final class Core: Sendable {
        private struct Slot {
            var generation: UInt32 = 0
            var deadline = MonotonicTime.zero
            var inUse = false
            var fired = false
            var interrupt: (@Sendable () -> Void)?
        }

        private struct State {
            var slots: [Slot] = []
            var free: [Int32] = []
            var stopped = false
            /// Detached once stopped, which ends the cycle through the alarm's action.
            var alarm = HeldAlarm()
        }

        private let clock: any ReliabilityClock
        private let state: Mutex<State>

        init(clock: any ReliabilityClock) {
            self.clock = clock
            var initial = State()
            initial.slots.reserveCapacity(64)
            initial.free.reserveCapacity(64)
            state = Mutex(initial)
            let alarm = clock.makeAlarm { [self] in fireDue() }
            state.withLock { $0.alarm.hold(alarm) }
        }

        func stop() {
            let alarm = state.withLock { state -> (any ClockAlarm)? in
                state.stopped = true
                return state.alarm.detach()
            }
            alarm?.disarm()
        }

        func register(_ deadline: MonotonicTime, interrupt: @escaping @Sendable () -> Void) -> Token {
            state.withLock { state -> Token in
                let index: Int32
                if let reused = state.free.popLast() {
                    index = reused
                } else {
                    index = Int32(state.slots.count)
                    state.slots.append(Slot())
                }
                let slot = Int(index)
                state.slots[slot].deadline = deadline
                state.slots[slot].inUse = true
                state.slots[slot].fired = false
                state.slots[slot].interrupt = interrupt
                state.alarm.arm(notLaterThan: deadline)
                return Token(index: index, generation: state.slots[slot].generation)
            }
        }

        func unregister(_ token: Token) -> Bool {
            state.withLock { state in
                let slot = Int(token.index)
                guard state.slots[slot].generation == token.generation, state.slots[slot].inUse else { return false }
                let fired = state.slots[slot].fired
                state.slots[slot].inUse = false
                state.slots[slot].interrupt = nil
                state.slots[slot].generation &+= 1
                state.free.append(token.index)
                return fired
            }
        }

        /// The alarm's action: fires every due deadline and re-arms for the earliest one left.
        private func fireDue() {
            let now = clock.now
            state.withLock { state in
                guard !state.stopped else { return }
                var earliest: MonotonicTime?
                for index in state.slots.indices where state.slots[index].inUse && !state.slots[index].fired {
                    if state.slots[index].deadline <= now {
                        state.slots[index].fired = true
                        state.slots[index].interrupt?()
                        state.slots[index].interrupt = nil
                    } else if earliest.map({ state.slots[index].deadline < $0 }) ?? true {
                        earliest = state.slots[index].deadline
                    }
                }
                state.alarm.fired()
                if let earliest { state.alarm.arm(notLaterThan: earliest) }
            }
        }
    }
}

/// What one attempt of an operation may know about its deadline, and how it makes itself
/// stoppable: a backend attaches an interrupt (cancel the statement, wake the waiter) for the time
/// it holds a connection, and the scheduler calls it when the deadline passes.
public struct AttemptContext: Sendable {
    /// Fires the interrupts; nil when the operation has no deadline.
    let scheduler: DeadlineScheduler?
    /// 1 for the first attempt.
    public let attempt: Int
    /// When the operation's time is up; nil when timeouts are off.
    public let deadline: MonotonicTime?
    /// Whether this attempt is the circuit breaker's half-open trial or its prober's probe. The
    /// breaker already spaces them out (at most about one a second, Sources/ReliableDB/Documentation.docc/Breaker.md), so a backend
    /// should try the database now instead of waiting out its own connect backoff: otherwise the
    /// trial can time out waiting and the breaker opens again (Sources/ReliableDBPostgres/Documentation.docc/Failover.md).
    public let isBreakerProbe: Bool

    package init(scheduler: DeadlineScheduler?, attempt: Int, deadline: MonotonicTime?, isBreakerProbe: Bool = false) {
        self.scheduler = scheduler
        self.attempt = attempt
        self.deadline = deadline
        self.isBreakerProbe = isBreakerProbe
    }

    /// A context with no deadline, for calling backend methods outside the pipeline.
    public static let unbounded = AttemptContext(scheduler: nil, attempt: 1, deadline: nil)

    /// Whether the deadline has passed.
    public var isExpired: Bool {
        guard let scheduler, let deadline else { return false }
        return scheduler.clock.now >= deadline
    }

    /// Runs synchronous work (such as a GRDB closure on its database thread) with `interrupt`
    /// attached. Throws ``AttemptDeadlineExceeded`` without running `body` when time is already up.
    public func withInterrupt<R>(_ interrupt: @escaping @Sendable () -> Void, _ body: () throws -> R) throws -> R {
        let token = try attachInterrupt(interrupt)
        defer { detachInterrupt(token) }
        return try body()
    }

    /// Attaches `interrupt` until ``detachInterrupt(_:)`` is given what this returns: the same as
    /// `withInterrupt` for a backend's hot path, without an async wrapper around the work (each
    /// async frame costs executor checks on every resumption). Throws ``AttemptDeadlineExceeded``
    /// when time is already up.
    package func attachInterrupt(_ interrupt: @escaping @Sendable () -> Void) throws -> DeadlineScheduler.Token? {
        guard let scheduler, let deadline else { return nil }
        guard let token = scheduler.register(deadline, interrupt: interrupt) else { throw AttemptDeadlineExceeded() }
        return token
    }

    package func detachInterrupt(_ token: DeadlineScheduler.Token?) {
        if let token { scheduler?.unregister(token) }
    }

    /// Runs asynchronous work with `interrupt` attached.
    public func withInterrupt<R>(
        _ interrupt: @escaping @Sendable () -> Void,
        _ body: () async throws -> R
    ) async throws -> R {
        let token = try attachInterrupt(interrupt)
        defer { detachInterrupt(token) }
        return try await body()
    }

    /// Runs arbitrary async work in a child task that is cancelled when the deadline passes, for
    /// work that stops on task cancellation but has no interrupt of its own. Structured: it returns
    /// once the work has ended.
    public func cancellingAtDeadline<R: Sendable>(_ body: @escaping @Sendable () async throws -> R) async throws -> R {
        guard scheduler != nil else { return try await body() }
        let deadlinePassed = OneShotSignal()
        let token = try attachInterrupt { deadlinePassed.fire() }
        defer { detachInterrupt(token) }
        return try await withThrowingTaskGroup(of: R?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                await deadlinePassed.wait()
                return nil
            }
            defer { group.cancelAll() }
            while let first = try await group.next() {
                if let value = first { return value }
                // The deadline passed: cancel the work and wait for it to end.
                group.cancelAll()
            }
            throw AttemptDeadlineExceeded()
        }
    }
}

/// Fired once, waited on by one task; cancelling the waiter ends its wait too.
final class OneShotSignal: Sendable {
    private let state = Mutex<(fired: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

    func fire() {
        let waiter = state.withLock { state in
            state.fired = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    func wait() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let fired = state.withLock { state in
                    if !state.fired { state.waiter = continuation }
                    return state.fired
                }
                if fired { continuation.resume() }
            }
        } onCancel: {
            fire()
        }
    }
}

/// Thrown by work that finds its deadline already passed; the pipeline reports
/// ``DatabaseTimeoutError``.
public struct AttemptDeadlineExceeded: Error, Sendable {
    public init() {}
}
