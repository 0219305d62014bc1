import ReliableDB
import ReliableDBPool
import Synchronization

/// Why a caller was not admitted.
enum AdmissionFailure: Error {
    /// The pool timeout passed first.
    case poolTimeout
    /// The attempt's own deadline passed first.
    case deadline
    /// The caller's task was cancelled.
    case cancelled
    case shutDown
}

/// One admission: the slot to give back, and how long the caller queued for it.
struct Admission: Sendable {
    let slot: PoolStateMachine.ConnectionID
    let waited: Duration
}

/// Admission in front of GRDB's pool: the I/O shell around ``PoolStateMachine`` for SQLite.
///
/// GRDB waits for a free reader by blocking a dispatch queue, which neither task cancellation nor
/// a deadline can interrupt. Admitting callers here first, with the same capacity as GRDB's pool,
/// means GRDB never has to wait: waiting happens here, where it ends at the pool timeout, the
/// attempt's deadline or the caller's cancellation, and where it is counted.
///
/// The machine's connections are admission slots. GRDB owns the real SQLite connections, so a
/// slot needs no I/O: a `connect` action is reported `connected` at once (a `close`, `closed`),
/// under the same lock. What is left for the shell is resuming callers and keeping one alarm of
/// the injected clock at the machine's `wakeAt`, so a ``ManualClock`` drives pool timeouts in
/// tests. An attempt's deadline also ends the wait through the attempt's deadline scheduler. An
/// admission with a free slot costs one lock and no suspension.
final class AdmissionPool: Sendable {
    fileprivate typealias Waiter = CheckedContinuation<Admission, any Error>

    fileprivate struct Shell {
        var machine: PoolStateMachine
        var waiters: [PoolStateMachine.RequestID: Waiter] = [:]
        /// Answers for requests whose continuation was not stored yet.
        var early: [PoolStateMachine.RequestID: Result<Admission, AdmissionFailure>] = [:]
        var nextRequest = 0
        /// The instant the alarm is armed for; nil while disarmed.
        var alarmAt: PoolInstant?
        var shutdownWaiters: [CheckedContinuation<Void, Never>] = []
    }

    /// The request of the event being handled, answered by return instead of a resume.
    fileprivate struct OwnRequest {
        var id: PoolStateMachine.RequestID
    }

    /// What an event left to do outside the lock.
    fileprivate struct Work {
        var resumes = PoolActionList<(Waiter, Result<Admission, AdmissionFailure>)>()
        var own: Result<Admission, AdmissionFailure>?
        /// The machine's next instant, from the last event handled.
        var wakeAt: PoolInstant?
        var shutdownWaiters: [CheckedContinuation<Void, Never>] = []
    }

    /// Counts read under one lock, so they agree with each other.
    struct Statistics {
        var limit: Int
        var active: Int
        var idle: Int
        var waiting: Int
        var open: Int
        var opened: Int
        var closed: Int
        /// Waits that ended at the pool timeout (not at the attempt's deadline).
        var poolTimeouts: Int
        var acquisitions: Int
        var acquireNanoseconds: Int64
        var maxAcquireNanoseconds: Int64
    }

    let limit: Int
    let poolTimeout: Duration
    private let clock: any ReliabilityClock
    private let state: Mutex<Shell>
    /// Set once in init; its action holds the pool weakly.
    private nonisolated(unsafe) var alarm: (any ClockAlarm)!

    /// - Parameters:
    ///   - limit: the most callers admitted at once.
    ///   - openSlots: slots opened (and left idle) at once, to mirror connections GRDB opens
    ///     eagerly (its writer).
    init(limit: Int, poolTimeout: Duration, clock: any ReliabilityClock, openSlots: Int = 0) {
        var machine = PoolStateMachine(configuration: PoolConfiguration(maximumConnections: limit))
        let now = clock.now
        for connect in machine.prewarm(count: openSlots, now: now).connects {
            _ = machine.connected(connection: connect.connection, now: now)
        }
        self.limit = machine.configuration.maximumConnections
        self.poolTimeout = poolTimeout
        self.clock = clock
        state = Mutex(Shell(machine: machine))
        alarm = clock.makeAlarm { [weak self] in self?.alarmFired() }
    }

    deinit {
        alarm.disarm()
    }

    private var now: PoolInstant {
        clock.now
    }

    // MARK: Admission

    /// A slot, waiting at most until the earlier of the pool timeout and the attempt's deadline.
    /// Throws ``AdmissionFailure``.
    func admit(within attempt: AttemptContext) async throws -> Admission {
        let deadline = attempt.deadline
        let (request, work) = state.withLock { shell -> (PoolStateMachine.RequestID, Work) in
            let now = self.now
            // At least a nanosecond, so that a zero pool timeout still takes a free slot.
            let timeoutAt = now + max(poolTimeout, .nanoseconds(1))
            shell.nextRequest += 1
            let own = OwnRequest(id: shell.nextRequest)
            var work = Work()
            let actions = shell.machine.lease(request: own.id, timeoutAt: timeoutAt, deadline: deadline, now: now)
            shell.absorb(actions, now, own, &work)
            shell.schedule(work, alarm: alarm)
            return (own.id, work)
        }
        carryOut(work)
        if let own = work.own { return try own.get() }  // a free slot (or an immediate failure)

        // The wait also ends when the attempt's deadline scheduler fires: the tick then finds the
        // request overdue.
        let token: DeadlineScheduler.Token?
        do {
            token = try attempt.attachInterrupt { [weak self] in self?.tick() }
        } catch {
            token = nil
            tick()
        }
        defer { attempt.detachInterrupt(token) }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: Waiter) in
                let early = state.withLock { shell -> Result<Admission, AdmissionFailure>? in
                    if let early = shell.early.removeValue(forKey: request) { return early }
                    shell.waiters[request] = continuation
                    return nil
                }
                if let early { continuation.resume(with: early.mapError { $0 as any Error }) }
            }
        } onCancel: {
            self.event { machine, _ in machine.cancel(request: request) }
        }
    }

    /// Gives a slot back; the longest waiter gets it.
    func release(_ admission: Admission) {
        event { machine, now in machine.release(connection: admission.slot, now: now) }
    }

    /// Fails the waiters and admits no one any more. Slots in use close when released.
    func shutdown() {
        event { machine, _ in machine.shutdown() }
    }

    /// Waits, after ``shutdown()``, until every slot in use has been released: then no one uses
    /// GRDB's connections any more. Suspends rather than blocks, unlike GRDB's own close.
    func waitUntilShutDown() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { shell -> Bool in
                if shell.machine.isShutDownComplete { return true }
                shell.shutdownWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Fails the waiters whose deadline has passed.
    private func tick() {
        event { machine, now in machine.tick(now: now) }
    }

    /// Applies one event to the machine and carries out what it decided.
    private func event(_ body: (inout PoolStateMachine, PoolInstant) -> PoolActions) {
        let work = state.withLock { shell in
            let now = self.now
            var work = Work()
            shell.absorb(body(&shell.machine, now), now, nil, &work)
            shell.schedule(work, alarm: alarm)
            return work
        }
        carryOut(work)
    }

    private func carryOut(_ work: Work) {
        for (continuation, result) in work.resumes {
            continuation.resume(with: result.mapError { $0 as any Error })
        }
        for waiter in work.shutdownWaiters { waiter.resume() }
    }

    // MARK: Timer

    /// Ticks the machine when the alarm fires; the tick's `wakeAt` re-arms it.
    private func alarmFired() {
        let work = state.withLock { shell in
            shell.alarmAt = nil
            let now = self.now
            var work = Work()
            shell.absorb(shell.machine.tick(now: now), now, nil, &work)
            shell.schedule(work, alarm: alarm)
            return work
        }
        carryOut(work)
    }

    // MARK: Statistics

    func statistics() -> Statistics {
        state.withLock { shell in
            let machine = shell.machine.statistics
            return Statistics(
                limit: limit,
                active: machine.active,
                idle: machine.idle + machine.keepAlive,
                waiting: machine.waiting,
                open: machine.open,
                opened: machine.opened,
                closed: machine.closed,
                poolTimeouts: machine.acquireTimeouts,
                acquisitions: machine.granted,
                acquireNanoseconds: machine.acquireWaitNanoseconds,
                maxAcquireNanoseconds: machine.maxAcquireWaitNanoseconds
            )
        }
    }
}

extension AdmissionPool.Shell {
    /// Turns the machine's actions into work for outside the lock. Slots need no I/O, so connects,
    /// closes and keep-alives are answered to the machine at once, and what those answers decide is
    /// absorbed too.
    fileprivate mutating func absorb(
        _ actions: PoolActions,
        _ now: PoolInstant,
        _ own: AdmissionPool.OwnRequest?,
        _ work: inout AdmissionPool.Work
    ) {
        work.wakeAt = actions.wakeAt
        if let grant = actions.grant {
            deliver(.success(Admission(slot: grant.connection, waited: grant.waited)), to: grant.request, own, &work)
        }
        if !actions.listsAreEmpty {
            for failure in actions.failures {
                let error: AdmissionFailure
                switch failure.reason {
                case .timedOut:
                    error = .poolTimeout
                case .deadlineReached:
                    error = .deadline
                case .cancelled:
                    error = .cancelled
                case .shutdown:
                    error = .shutDown
                case .connectFailed:
                    assertionFailure("admission slots open without I/O, so no connect fails")
                    error = .shutDown
                }
                deliver(.failure(error), to: failure.request, own, &work)
            }
            for connect in actions.connects {
                absorb(machine.connected(connection: connect.connection, now: now), now, own, &work)
            }
            for close in actions.closes {
                absorb(machine.closed(connection: close.connection, now: now), now, own, &work)
            }
            for slot in actions.keepAlives {
                absorb(machine.keepAliveDone(connection: slot, alive: true, now: now), now, own, &work)
            }
        }
        if actions.shutDownCompleted {
            work.shutdownWaiters += shutdownWaiters
            shutdownWaiters = []
        }
    }

    private mutating func deliver(
        _ result: Result<Admission, AdmissionFailure>,
        to request: PoolStateMachine.RequestID,
        _ own: AdmissionPool.OwnRequest?,
        _ work: inout AdmissionPool.Work
    ) {
        if request == own?.id {
            work.own = result
            return
        }
        if let continuation = waiters.removeValue(forKey: request) {
            work.resumes.append((continuation, result))
        } else {
            early[request] = result
        }
    }

    /// Keeps the alarm at the machine's `wakeAt` or earlier, and disarmed when nothing is due. An
    /// alarm that fires early (the instant moved later) only ticks the machine, which re-arms it.
    fileprivate mutating func schedule(_ work: AdmissionPool.Work, alarm: any ClockAlarm) {
        guard let wakeAt = work.wakeAt else {
            if alarmAt != nil {
                alarmAt = nil
                alarm.disarm()
            }
            return
        }
        if alarmAt.map({ $0 <= wakeAt }) ?? false { return }
        alarmAt = wakeAt
        alarm.arm(at: wakeAt)
    }
}
