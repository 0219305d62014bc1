import ReliableDB
import Synchronization

/// A counting semaphore in front of GRDB's pool: cancellable, bounded by a timeout, and exact.
///
/// GRDB waits for a free reader by blocking a dispatch queue, which neither task cancellation nor
/// a deadline can interrupt. Admitting callers here first, with the same capacity as GRDB's pool,
/// means GRDB never has to wait: waiting happens here, where it ends at the pool timeout, the
/// operation's deadline or the caller's cancellation, and where it is counted.
final class ConnectionGate: Sendable {
    private struct State {
        var available: Int
        var nextID: UInt64 = 0
        var waiters: [(id: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
        /// Waiters given an id but not yet enqueued.
        var arriving: Set<UInt64> = []
        /// Failures that arrived before their waiter was enqueued.
        var earlyFailures: [UInt64: any Error] = [:]
    }

    let capacity: Int
    private let state: Mutex<State>
    private let clock: any ReliabilityClock

    init(capacity: Int, clock: any ReliabilityClock) {
        self.capacity = capacity
        self.clock = clock
        state = Mutex(State(available: capacity))
    }

    /// Permits handed out and not yet released.
    var inUse: Int { state.withLock { capacity - $0.available } }
    /// Callers waiting for a permit.
    var waiting: Int { state.withLock { $0.waiters.count } }

    /// Takes a permit. Waits at most `timeout` (then throws ``GateTimeout``) and never past the
    /// attempt's deadline (then throws ``AttemptDeadlineExceeded``).
    func acquire(timeout: Duration, attempt: AttemptContext) async throws {
        let waiterID = state.withLock { state -> UInt64? in
            if state.available > 0 {
                state.available -= 1
                return nil
            }
            state.nextID += 1
            state.arriving.insert(state.nextID)
            return state.nextID
        }
        guard let id = waiterID else { return }

        // Slow path: a caller is about to wait, so a timer task is affordable here.
        let clock = self.clock
        let timer = Task { [weak self] in
            try await clock.sleep(for: timeout)
            self?.fail(id, with: GateTimeout())
        }
        defer { timer.cancel() }
        defer {
            state.withLock {
                $0.arriving.remove(id)
                $0.earlyFailures[id] = nil
            }
        }
        try await attempt.withInterrupt({ [weak self] in self?.fail(id, with: AttemptDeadlineExceeded()) }) {
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                    let outcome = state.withLock { state -> Result<Void, any Error>? in
                        state.arriving.remove(id)
                        if let failure = state.earlyFailures.removeValue(forKey: id) { return .failure(failure) }
                        if state.available > 0 {
                            state.available -= 1
                            return .success(())
                        }
                        state.waiters.append((id, continuation))
                        return nil
                    }
                    if let outcome { continuation.resume(with: outcome) }
                }
            } onCancel: { [weak self] in
                self?.fail(id, with: CancellationError())
            }
        }
    }

    /// Wakes waiter `id` with `error`, unless it already got its permit.
    private func fail(_ id: UInt64, with error: any Error) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            if let index = state.waiters.firstIndex(where: { $0.id == id }) {
                return state.waiters.remove(at: index).continuation
            }
            if state.arriving.contains(id) {
                // Not enqueued yet: leave the failure for it to find.
                state.earlyFailures[id] = error
            }
            return nil
        }
        waiter?.resume(throwing: error)
    }

    /// Returns a permit, handing it straight to the longest waiter if there is one.
    func release() {
        let next = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            if state.waiters.isEmpty {
                state.available += 1
                return nil
            }
            return state.waiters.removeFirst().continuation
        }
        next?.resume()
    }
}

struct GateTimeout: Error {}
