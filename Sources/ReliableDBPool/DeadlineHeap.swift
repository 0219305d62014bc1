import ReliableDBClock

/// A binary min-heap of waiter deadlines, so the earliest one is found in O(1) and removed in
/// O(log n) however the deadlines are mixed.
///
/// Waiters leave the queue in other ways too (granted, cancelled); their heap entries are left in
/// place and skipped when they surface ("lazy deletion"), which keeps every removal O(1) on the
/// queue's side. ``RequestQueue`` rebuilds the heap when stale entries pile up.
struct DeadlineHeap: Sendable {
    struct Entry: Sendable {
        var deadline: PoolInstant
        /// The enqueue order, which breaks ties (FIFO among equal deadlines) and identifies the waiter.
        var ticket: UInt64
        var request: PoolStateMachine.RequestID

        func precedes(_ other: Entry) -> Bool {
            deadline != other.deadline ? deadline < other.deadline : ticket < other.ticket
        }
    }

    private var entries: [Entry] = []

    var count: Int { entries.count }
    var top: Entry? { entries.first }

    mutating func push(_ entry: Entry) {
        entries.append(entry)
        siftUp(entries.count - 1)
    }

    @discardableResult
    mutating func popTop() -> Entry? {
        guard !entries.isEmpty else { return nil }
        entries.swapAt(0, entries.count - 1)
        let top = entries.removeLast()
        if !entries.isEmpty { siftDown(0) }
        return top
    }

    mutating func removeAll() {
        entries.removeAll(keepingCapacity: true)
    }

    /// Drops every entry `isLive` rejects and restores the heap order in O(n).
    mutating func rebuild(keeping isLive: (Entry) -> Bool) {
        entries.removeAll { !isLive($0) }
        for index in stride(from: entries.count / 2 - 1, through: 0, by: -1) { siftDown(index) }
    }

    private mutating func siftUp(_ start: Int) {
        var child = start
        while child > 0 {
            let parent = (child - 1) / 2
            guard entries[child].precedes(entries[parent]) else { return }
            entries.swapAt(child, parent)
            child = parent
        }
    }

    private mutating func siftDown(_ start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var first = parent
            if left < entries.count && entries[left].precedes(entries[first]) { first = left }
            if right < entries.count && entries[right].precedes(entries[first]) { first = right }
            guard first != parent else { return }
            entries.swapAt(parent, first)
            parent = first
        }
    }
}
