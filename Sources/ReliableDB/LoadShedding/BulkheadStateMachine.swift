/// A bulkhead's admission decisions as a pure value: time comes in as an argument, decisions come
/// out. A shell adds the lock, suspends queued callers and arms one timer at ``nextDeadline``.
///
/// At most ``limit`` operations run at once, so an overloaded database sees a bounded amount of
/// work instead of every caller at once. Callers beyond the limit wait in a FIFO of at most
/// ``maxWaiting`` entries, each for at most ``maxWait``; the rest are shed at once, because a
/// caller who would wait longer than that is better served by a fast failure.
///
/// A waiter is never admitted at or after its deadline: ``release(at:)`` and ``setLimit(_:at:)``
/// pass over waiters whose deadline has come, and leave them for ``expire(at:)`` to reject (their
/// deadline is ``nextDeadline``, so the shell's timer is already due).
package struct BulkheadStateMachine: Sendable {
    /// What ``admit(id:at:)`` decided for one caller.
    package enum Admission: Sendable, Equatable {
        /// Run now, and call ``release(at:)`` when done.
        case admitted
        /// Wait until ``release(at:)`` or ``setLimit(_:at:)`` admits the caller, or until
        /// ``expire(at:)`` rejects it at `until`, whichever comes first.
        case queued(until: MonotonicTime)
        /// Shed without waiting.
        case rejected(Rejection)
    }

    /// Why a caller was shed at once, so the shell can say which setting did it.
    package enum Rejection: Sendable, Equatable {
        /// Every slot is taken and ``maxWaiting`` callers already wait.
        case queueFull
        /// Every slot is taken and ``maxWait`` is zero: this bulkhead never queues.
        case waitingDisabled
    }

    private struct Waiter: Sendable {
        var id: UInt64
        var deadline: MonotonicTime
    }

    /// Operations allowed in flight at once. The adaptive limit moves it through ``setLimit(_:at:)``.
    package private(set) var limit: Int
    /// Callers allowed to wait at once; a full queue sheds new callers.
    package let maxWaiting: Int
    /// The longest a caller waits for a slot; `.zero` sheds instead of queueing.
    package let maxWait: Duration
    /// Operations admitted and not yet released. Above ``limit`` only after the limit was lowered.
    package private(set) var inFlight = 0
    /// Waiters in arrival order from `head` on; deadlines never decrease along it (see `admit`).
    private var queue: [Waiter] = []
    private var head = 0

    /// Negative settings count as zero.
    package init(maxConcurrent: Int, maxWaiting: Int, maxWait: Duration) {
        limit = max(0, maxConcurrent)
        self.maxWaiting = max(0, maxWaiting)
        self.maxWait = max(.zero, maxWait)
    }

    /// Callers waiting, including any whose deadline has come but that ``expire(at:)`` has not
    /// rejected yet.
    package var waiting: Int { queue.count - head }

    /// The earliest deadline among the waiters: the instant to arm the shell's timer for, so it
    /// can call ``expire(at:)``. `nil` when nobody waits.
    package var nextDeadline: MonotonicTime? {
        head < queue.count ? queue[head].deadline : nil
    }

    /// The waiters' ids, first served first. Allocates; for tests.
    var waiterIDs: [UInt64] { queue[head...].map(\.id) }

    /// Asks to run the operation `id` (unique among waiters). A free slot admits it only when
    /// nobody is waiting for one, so a newcomer never overtakes a waiter.
    package mutating func admit(id: UInt64, at now: MonotonicTime) -> Admission {
        if inFlight < limit, !hasLiveWaiter(at: now) {
            inFlight += 1
            return .admitted
        }
        guard maxWait > .zero else { return .rejected(.waitingDisabled) }
        guard waiting < maxWaiting else { return .rejected(.queueFull) }
        // A caller never gets an earlier deadline than the one ahead of it, even when `now` runs
        // slightly backwards between callers: the queue's front is then always the earliest
        // deadline, which makes ``nextDeadline`` and ``expire(at:)`` O(1) per waiter.
        var deadline = now + maxWait
        if head < queue.count, let last = queue.last, last.deadline > deadline { deadline = last.deadline }
        queue.append(Waiter(id: id, deadline: deadline))
        return .queued(until: deadline)
    }

    /// Ends one admitted operation. Returns the waiter admitted into the freed slot, the first in
    /// line whose deadline has not come, if the slot is within the limit. A release with nothing
    /// in flight is ignored.
    package mutating func release(at now: MonotonicTime) -> UInt64? {
        guard inFlight > 0 else { return nil }
        inFlight -= 1
        guard inFlight < limit, let id = removeFirstLiveWaiter(at: now) else { return nil }
        inFlight += 1
        return id
    }

    /// Rejects the waiters whose deadline is at or before `now`, in arrival order. Call it when
    /// the timer armed for ``nextDeadline`` fires.
    package mutating func expire(at now: MonotonicTime) -> [UInt64] {
        var expired: [UInt64] = []
        while head < queue.count, queue[head].deadline <= now {
            expired.append(queue[head].id)
            head += 1
        }
        compact()
        return expired
    }

    /// Removes the waiter `id` (its caller gave up). Returns false when `id` was not waiting: it
    /// was already admitted (the shell must then release it) or rejected, or never queued.
    package mutating func cancel(id: UInt64) -> Bool {
        guard let index = queue[head...].firstIndex(where: { $0.id == id }) else { return false }
        remove(at: index)
        return true
    }

    /// Changes the number of operations allowed in flight. Raising it admits waiters at once, in
    /// line order, and returns them; lowering it revokes nothing: operations already admitted run
    /// to completion and no one is admitted until releases bring ``inFlight`` under the new limit.
    package mutating func setLimit(_ newLimit: Int, at now: MonotonicTime) -> [UInt64] {
        limit = max(0, newLimit)
        var admitted: [UInt64] = []
        while inFlight < limit, let id = removeFirstLiveWaiter(at: now) {
            inFlight += 1
            admitted.append(id)
        }
        return admitted
    }

    /// Whether someone waits whose deadline has not come. Deadlines never decrease along the
    /// queue, so the last waiter decides.
    private func hasLiveWaiter(at now: MonotonicTime) -> Bool {
        head < queue.count && queue[queue.count - 1].deadline > now
    }

    /// Takes the first waiter whose deadline has not come out of the queue, leaving the expired
    /// ones before it (a prefix, as deadlines never decrease) for ``expire(at:)``.
    private mutating func removeFirstLiveWaiter(at now: MonotonicTime) -> UInt64? {
        guard let index = queue[head...].firstIndex(where: { $0.deadline > now }) else { return nil }
        let id = queue[index].id
        remove(at: index)
        return id
    }

    private mutating func remove(at index: Int) {
        if index == head {
            head += 1
            compact()
        } else {
            queue.remove(at: index)
        }
    }

    /// Drops the served prefix once it is empty or outweighs the waiters, keeping removal at the
    /// front O(1) amortized.
    private mutating func compact() {
        if head == queue.count {
            queue.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 16, head * 2 >= queue.count {
            queue.removeFirst(head)
            head = 0
        }
    }
}
