import ReliableDB
import Synchronization

/// A counting semaphore in front of GRDB's pool: cancellable, bounded by a timeout, and exact.
///
/// GRDB waits for a free reader by blocking a dispatch queue, which neither task cancellation nor
/// a deadline can interrupt. Admitting callers here first, with the same capacity as GRDB's pool,
/// means GRDB never has to wait: waiting happens here, where it can time out with
/// ``DatabasePoolTimeoutError``, be cancelled, and be counted.
final class ConnectionGate: Sendable {
    private struct Waiter {
        var id: UInt64
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var available: Int
        var nextID: UInt64 = 0
        var waiters: [Waiter] = []
        var cancelledEarly: Set<UInt64> = []
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

    /// Takes a permit, waiting at most `timeout`. Throws `GateTimeout` when the wait is too long.
    func acquire(timeout: Duration) async throws {
        let immediate = state.withLock { state -> UInt64? in
            if state.available > 0 {
                state.available -= 1
                return nil
            }
            state.nextID += 1
            return state.nextID
        }
        guard let id = immediate else { return }
        let clock = self.clock
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await self.wait(id: id)
                return true
            }
            group.addTask {
                try await clock.sleep(for: timeout)
                return false
            }
            let first = try await group.next()!
            group.cancelAll()
            if first { return }
            // The timer won, but the permit may have been granted in the same instant.
            if (try? await group.next()) == true { return }
            throw GateTimeout()
        }
    }

    private func wait(id: UInt64) async throws {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let outcome = state.withLock { state -> Result<Void, any Error>? in
                    if state.cancelledEarly.remove(id) != nil { return .failure(CancellationError()) }
                    if state.available > 0 {
                        state.available -= 1
                        return .success(())
                    }
                    state.waiters.append(Waiter(id: id, continuation: continuation))
                    return nil
                }
                if let outcome { continuation.resume(with: outcome) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> Waiter? in
                if let index = state.waiters.firstIndex(where: { $0.id == id }) {
                    return state.waiters.remove(at: index)
                }
                state.cancelledEarly.insert(id)
                return nil
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Returns a permit, handing it straight to the longest waiter if there is one.
    func release() {
        let next = state.withLock { state -> Waiter? in
            if state.waiters.isEmpty {
                state.available += 1
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.continuation.resume()
    }
}

struct GateTimeout: Error {}
