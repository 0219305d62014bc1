import ReliableDB
import Synchronization

/// A clock that moves only when told to, for testing timing logic without real sleeps.
///
/// Sleepers registered with ``sleep(until:)`` resume, and armed alarms fire, when ``advance(by:)``
/// moves time past their deadline (alarms on the thread that advances). ``waitForSleepers(count:)``
/// lets a test wait until the code under test is parked in a sleep or has armed an alarm before
/// moving time, so the test never races the code it drives.
public final class ManualClock: ReliabilityClock {
    fileprivate struct Sleeper {
        var id: UInt64
        var deadline: MonotonicTime
        var continuation: CheckedContinuation<Void, any Error>
    }

    fileprivate struct State {
        var now: MonotonicTime
        var nextID: UInt64 = 0
        var sleepers: [Sleeper] = []
        /// Armed alarms by id, with the instant each is armed for.
        var alarms: [UInt64: (deadline: MonotonicTime, action: @Sendable () -> Void)] = [:]
        var cancelledBeforeRegistration: Set<UInt64> = []
        /// Tasks waiting in ``waitForSleepers(count:)``.
        var watchers: [(id: UInt64, count: Int, continuation: CheckedContinuation<Bool, Never>)] = []
    }

    fileprivate let state: Mutex<State>

    public init(start: MonotonicTime = MonotonicTime(nanoseconds: 1_000_000_000)) {
        state = Mutex(State(now: start))
    }

    public var now: MonotonicTime {
        state.withLock { $0.now }
    }

    /// The number of tasks currently suspended in ``sleep(until:)``, plus the armed alarms.
    public var sleeperCount: Int {
        state.withLock { $0.waitingCount }
    }

    public func sleep(until deadline: MonotonicTime) async throws {
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let (immediate, satisfied) = state.withLock {
                    state -> (Result<Void, any Error>?, [CheckedContinuation<Bool, Never>]) in
                    if state.cancelledBeforeRegistration.remove(id) != nil {
                        return (.failure(CancellationError()), [])
                    }
                    if deadline <= state.now {
                        return (.success(()), [])
                    }
                    state.sleepers.append(Sleeper(id: id, deadline: deadline, continuation: continuation))
                    return (nil, state.satisfiedWatchers())
                }
                if let immediate {
                    continuation.resume(with: immediate)
                }
                for watcher in satisfied { watcher.resume(returning: true) }
            }
        } onCancel: {
            let sleeper = state.withLock { state -> Sleeper? in
                if let index = state.sleepers.firstIndex(where: { $0.id == id }) {
                    return state.sleepers.remove(at: index)
                }
                state.cancelledBeforeRegistration.insert(id)
                return nil
            }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves time forward and wakes every sleeper whose deadline has passed, earliest first.
    public func advance(by duration: Duration) {
        advance(to: now + duration)
    }

    /// Moves time to `instant` (never backwards), wakes the sleepers that are due and fires the due
    /// alarms, earliest first.
    public func advance(to instant: MonotonicTime) {
        let (due, alarms) = state.withLock { state -> ([Sleeper], [@Sendable () -> Void]) in
            if instant > state.now { state.now = instant }
            let now = state.now
            let due = state.sleepers.filter { $0.deadline <= now }.sorted { $0.deadline < $1.deadline }
            state.sleepers.removeAll { $0.deadline <= now }
            let alarms = state.alarms.filter { $0.value.deadline <= now }
                .sorted { $0.value.deadline < $1.value.deadline }
            for (id, _) in alarms { state.alarms[id] = nil }
            return (due, alarms.map(\.value.action))
        }
        for sleeper in due {
            sleeper.continuation.resume()
        }
        for action in alarms { action() }
    }

    public func makeAlarm(_ action: @escaping @Sendable () -> Void) -> any ClockAlarm {
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        return Alarm(clock: self, id: id, action: action)
    }

    /// An alarm that fires in ``advance(to:)``; arming at an instant already passed fires at the
    /// next advance.
    private final class Alarm: ClockAlarm {
        let clock: ManualClock
        let id: UInt64
        let action: @Sendable () -> Void

        init(clock: ManualClock, id: UInt64, action: @escaping @Sendable () -> Void) {
            self.clock = clock
            self.id = id
            self.action = action
        }

        deinit { disarm() }

        func arm(at instant: MonotonicTime) {
            let satisfied = clock.state.withLock { state in
                state.alarms[id] = (instant, action)
                return state.satisfiedWatchers()
            }
            for watcher in satisfied { watcher.resume(returning: true) }
        }

        func disarm() {
            _ = clock.state.withLock { $0.alarms.removeValue(forKey: id) }
        }
    }

    /// Waits until at least `count` tasks sleep on this clock, so a test moves time only once the
    /// code under test is parked. Returns false if the waiting task is cancelled first.
    @discardableResult
    public func waitForSleepers(count: Int = 1) async -> Bool {
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let ready = state.withLock { state -> Bool? in
                    if state.cancelledBeforeRegistration.remove(id) != nil { return false }
                    if state.waitingCount >= count { return true }
                    state.watchers.append((id, count, continuation))
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            let watcher = state.withLock { state -> CheckedContinuation<Bool, Never>? in
                if let index = state.watchers.firstIndex(where: { $0.id == id }) {
                    return state.watchers.remove(at: index).continuation
                }
                state.cancelledBeforeRegistration.insert(id)
                return nil
            }
            watcher?.resume(returning: false)
        }
    }
}

extension ManualClock.State {
    var waitingCount: Int { sleepers.count + alarms.count }

    /// Removes and returns the watchers that the current number of sleepers and alarms satisfies.
    mutating func satisfiedWatchers() -> [CheckedContinuation<Bool, Never>] {
        let count = waitingCount
        let satisfied = watchers.filter { $0.count <= count }.map(\.continuation)
        watchers.removeAll { $0.count <= count }
        return satisfied
    }
}
