import Dispatch
import Foundation
import Synchronization

/// Fires operation deadlines from one background loop, so an operation with a timeout runs inline
/// in its caller's task: no child task, no timer and no allocation per call.
///
/// Work that can be stopped (a SQLite statement, a PostgreSQL query, a pool wait) registers its
/// deadline with an *interrupt* for as long as it runs; when the deadline passes the loop marks
/// the slot fired and calls the interrupt. Interrupts are called under the scheduler's lock, and
/// unregistering takes the same lock, so an interrupt can never hit a connection that has already
/// moved on to another caller. Only interruptible work registers: whether an operation's deadline
/// has passed is a clock reading, so an operation costs two lock round trips here, not four.
///
/// With the system clock the loop is a dedicated thread that sleeps until the earliest armed
/// deadline and is woken when an earlier one arrives, so deadlines fire on time even when every
/// cooperative thread is busy (which is when timeouts matter most). With another clock (a test's
/// ``ManualClock``) the loop is a task sleeping on that clock, at most ``tick`` at a time. Either
/// parks when nothing is armed.
public final class DeadlineScheduler: Sendable {
    package struct Token: Sendable, Equatable {
        let index: Int32
        let generation: UInt32
    }

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
        var armed = 0
        var loopRunning = false
        var parked: CheckedContinuation<Void, Never>?
        var stopped = false
        /// When the timer thread will next wake on its own; nil while it is parked.
        var threadWakesAt: MonotonicTime?
    }

    /// The longest the loop sleeps while deadlines are armed: the worst-case lateness of a
    /// deadline registered earlier than all others.
    public let tick: Duration
    let clock: any ReliabilityClock
    private let state: Mutex<State>
    private let usesThread: Bool
    private let wakeup = DispatchSemaphore(value: 0)

    public init(clock: any ReliabilityClock, tick: Duration = .milliseconds(5)) {
        self.clock = clock
        self.tick = tick
        usesThread = clock is SystemClock
        var initial = State()
        initial.slots.reserveCapacity(64)
        initial.free.reserveCapacity(64)
        state = Mutex(initial)
    }

    deinit {
        stop()
    }

    /// Stops the loop; deadlines registered afterwards never fire.
    public func stop() {
        let parked = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.stopped = true
            defer { state.parked = nil }
            return state.parked
        }
        parked?.resume()
        if usesThread { wakeup.signal() }
    }

    /// Runs `body` with a context whose deadline is `deadline`, for bounding work outside the
    /// pipeline (a backend's pool wait).
    public func bounded<R>(until deadline: MonotonicTime, _ body: (AttemptContext) async throws -> R) async throws -> R
    {
        try await body(AttemptContext(scheduler: self, attempt: 1, deadline: deadline))
    }

    /// Arms `deadline` with `interrupt` until ``unregister(_:)``; nil, arming nothing, when the
    /// deadline has already passed.
    func register(_ deadline: MonotonicTime, interrupt: @escaping @Sendable () -> Void) -> Token? {
        if clock.now >= deadline { return nil }
        let (token, wake, start, signalThread) = state.withLock {
            state -> (Token, CheckedContinuation<Void, Never>?, Bool, Bool) in
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
            state.armed += 1
            let start = !state.loopRunning && !state.stopped
            if start { state.loopRunning = true }
            let wake = state.parked
            state.parked = nil
            let signalThread = usesThread && !start && (state.threadWakesAt.map { deadline < $0 } ?? true)
            if signalThread { state.threadWakesAt = deadline }
            return (Token(index: index, generation: state.slots[slot].generation), wake, start, signalThread)
        }
        wake?.resume()
        if signalThread { wakeup.signal() }
        if start {
            if usesThread {
                let thread = Thread { [self] in runThread() }
                thread.name = "reliabledb-deadlines"
                thread.start()
            } else {
                Task.detached { [weak self] in await self?.run() }
            }
        }
        return token
    }

    /// Releases the slot. Returns whether the deadline fired while it was held.
    @discardableResult
    func unregister(_ token: Token) -> Bool {
        state.withLock { state in
            let slot = Int(token.index)
            guard state.slots[slot].generation == token.generation, state.slots[slot].inUse else { return false }
            let fired = state.slots[slot].fired
            if !fired { state.armed -= 1 }
            state.slots[slot].inUse = false
            state.slots[slot].interrupt = nil
            state.slots[slot].generation &+= 1
            state.free.append(token.index)
            return fired
        }
    }

    private enum Next {
        case sleep(until: MonotonicTime)
        case park
        case stop
    }

    /// Fires every due deadline and says what the loop should do next.
    private func fireDue(at now: MonotonicTime, tick: Duration?) -> Next {
        state.withLock { state -> Next in
            if state.stopped {
                state.loopRunning = false
                return .stop
            }
            var earliest: MonotonicTime?
            for index in state.slots.indices where state.slots[index].inUse && !state.slots[index].fired {
                if state.slots[index].deadline <= now {
                    state.slots[index].fired = true
                    state.armed -= 1
                    state.slots[index].interrupt?()
                    state.slots[index].interrupt = nil
                } else if earliest.map({ state.slots[index].deadline < $0 }) ?? true {
                    earliest = state.slots[index].deadline
                }
            }
            state.threadWakesAt = earliest
            guard let earliest else { return .park }
            return .sleep(until: tick.map { min(earliest, now + $0) } ?? earliest)
        }
    }

    /// The system-clock loop, on its own thread.
    private func runThread() {
        while true {
            let now = clock.now
            switch fireDue(at: now, tick: nil) {
            case .stop:
                return
            case .sleep(let until):
                let nanoseconds = max(0, (until - now).nanosecondsClamped)
                _ = wakeup.wait(timeout: .now() + .nanoseconds(Int(nanoseconds)))
            case .park:
                wakeup.wait()
            }
        }
    }

    /// The loop for other clocks, as a task sleeping on the clock.
    private func run() async {
        while true {
            switch fireDue(at: clock.now, tick: tick) {
            case .stop:
                return
            case .sleep(let until):
                try? await clock.sleep(until: until)
            case .park:
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let resumeNow = state.withLock { state -> Bool in
                        if state.armed > 0 || state.stopped { return true }
                        state.parked = continuation
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
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
    /// work that stops on task cancellation but has no interrupt of its own.
    public func cancellingAtDeadline<R: Sendable>(_ body: @escaping @Sendable () async throws -> R) async throws -> R {
        guard scheduler != nil else { return try await body() }
        let task = Task { try await body() }
        // Never leave the work running unsupervised, whichever way this returns.
        defer { task.cancel() }
        return try await withTaskCancellationHandler {
            // Cancelling runs the task's cancellation handlers; do it off the scheduler's lock.
            try await withInterrupt({ Task { task.cancel() } }) { try await task.value }
        } onCancel: {
            task.cancel()
        }
    }
}

/// Thrown by work that finds its deadline already passed; the pipeline reports
/// ``DatabaseTimeoutError``.
public struct AttemptDeadlineExceeded: Error, Sendable {
    public init() {}
}
