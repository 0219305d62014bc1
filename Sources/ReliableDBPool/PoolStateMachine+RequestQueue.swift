import ReliableDBClock

extension PoolStateMachine {
    /// When a wait ends and what ends it: the earlier of the pool's timeout and the operation's
    /// deadline, worked out once on arrival so that the queue keeps one instant per waiter.
    struct WaitEnd: Sendable, Equatable {
        var at: PoolInstant
        /// `.timedOut` or `.deadlineReached`.
        var reason: PoolFailureReason

        /// `nil` when neither instant is set: the request waits without bound. On a tie the
        /// operation's deadline wins: its caller is out of time whatever the pool does.
        init?(timeoutAt: PoolInstant?, deadline: PoolInstant?) {
            switch (timeoutAt, deadline) {
            case (nil, nil): return nil
            case (let timeoutAt?, nil): (at, reason) = (timeoutAt, .timedOut)
            case (nil, let deadline?): (at, reason) = (deadline, .deadlineReached)
            case (let timeoutAt?, let deadline?):
                (at, reason) = deadline <= timeoutAt ? (deadline, .deadlineReached) : (timeoutAt, .timedOut)
            }
        }
    }

    /// A request waiting for a connection.
    struct Waiter: Sendable, Equatable {
        var id: RequestID
        /// The enqueue order; tells a live queue entry from a stale one for a reused request id.
        var ticket: UInt64
        var end: WaitEnd?
        var enqueuedAt: PoolInstant
        var loopKey: Int?
    }

    /// The FIFO of waiting requests, with O(1) cancel and O(log n) earliest-deadline lookup.
    ///
    /// Three views of one set: a dictionary (the truth: who is waiting), an array in arrival order
    /// (who is served next) and a deadline heap (who times out next). Cancels, grants and timeouts
    /// remove a waiter from the dictionary only; the order and heap entries it leaves behind are
    /// recognised as stale by their ticket and skipped, and both are compacted when stale entries
    /// outnumber live ones. Under a 10x exhausted pool this keeps every event O(log n) instead of
    /// rescanning all waiters.
    struct RequestQueue: Sendable {
        private struct Slot: Sendable {
            var request: RequestID
            var ticket: UInt64
        }

        private var waiting: [RequestID: Waiter] = [:]
        private var order: [Slot] = []
        private var head = 0
        private var deadlines = DeadlineHeap()
        private var nextTicket: UInt64 = 0

        var count: Int { waiting.count }
        var isEmpty: Bool { waiting.isEmpty }

        func contains(_ request: RequestID) -> Bool {
            waiting[request] != nil
        }

        /// The waiting request ids, first served first. Allocates; for tests and diagnostics.
        var requestIDs: [RequestID] {
            order[head...].filter { isLive($0.request, $0.ticket) }.map(\.request)
        }

        /// Adds a waiter at the back. Returns false (and changes nothing) when `request` is already waiting.
        mutating func enqueue(
            _ request: RequestID,
            end: WaitEnd?,
            now: PoolInstant,
            loopKey: Int?
        ) -> Bool {
            guard waiting[request] == nil else { return false }
            let ticket = nextTicket
            nextTicket += 1
            waiting[request] = Waiter(
                id: request,
                ticket: ticket,
                end: end,
                enqueuedAt: now,
                loopKey: loopKey
            )
            order.append(Slot(request: request, ticket: ticket))
            if let end { deadlines.push(.init(deadline: end.at, ticket: ticket, request: request)) }
            return true
        }

        /// Removes and returns the longest-waiting request.
        mutating func popFirst() -> Waiter? {
            while head < order.count {
                let slot = order[head]
                head += 1
                if isLive(slot.request, slot.ticket) {
                    let waiter = waiting.removeValue(forKey: slot.request)
                    tidy()
                    return waiter
                }
            }
            tidy()
            return nil
        }

        /// Removes `request` wherever it is in the queue.
        mutating func remove(_ request: RequestID) -> Waiter? {
            guard let waiter = waiting.removeValue(forKey: request) else { return nil }
            tidy()
            return waiter
        }

        /// Removes and returns a waiter whose wait ends at or before `now`, earliest first.
        mutating func popExpired(now: PoolInstant) -> Waiter? {
            guard let top = liveTop(), top.deadline <= now else { return nil }
            deadlines.popTop()
            let waiter = waiting.removeValue(forKey: top.request)
            tidy()
            return waiter
        }

        /// The earliest end of a wait among the waiters.
        mutating func earliestDeadline() -> PoolInstant? {
            liveTop()?.deadline
        }

        /// Removes every waiter, returned first served first.
        mutating func removeAll() -> [Waiter] {
            var result: [Waiter] = []
            result.reserveCapacity(waiting.count)
            for slot in order[head...] where isLive(slot.request, slot.ticket) {
                result.append(waiting[slot.request]!)
            }
            waiting.removeAll(keepingCapacity: true)
            tidy()
            return result
        }

        private func isLive(_ request: RequestID, _ ticket: UInt64) -> Bool {
            waiting[request]?.ticket == ticket
        }

        private mutating func liveTop() -> DeadlineHeap.Entry? {
            while let top = deadlines.top {
                if isLive(top.request, top.ticket) { return top }
                deadlines.popTop()
            }
            return nil
        }

        /// Reclaims stale entries: all at once when the queue empties (the common case), otherwise
        /// when they outnumber the live ones, so the garbage stays proportional to the queue.
        private mutating func tidy() {
            if waiting.isEmpty {
                order.removeAll(keepingCapacity: true)
                head = 0
                deadlines.removeAll()
                return
            }
            let slack = 32
            if order.count - head > 2 * waiting.count + slack {
                order = order[head...].filter { isLive($0.request, $0.ticket) }
                head = 0
            } else if head > slack && head * 2 > order.count {
                order.removeFirst(head)
                head = 0
            }
            if deadlines.count > 2 * waiting.count + slack {
                let waiting = waiting
                deadlines.rebuild { waiting[$0.request]?.ticket == $0.ticket }
            }
        }
    }
}
