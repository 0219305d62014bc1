import ReliableDBClock

extension PoolStateMachine {
    /// The connections, in an array for cheap scans plus an id index for O(1) lookups.
    ///
    /// The pool is small (tens of connections), so the timer sweep and the idle search walk the
    /// array; events about one connection find it through the index. Removal swaps the last
    /// element into the hole, so no index but the moved one changes.
    struct ConnectionGroup: Sendable {
        private(set) var all: [PoolConnection] = []
        private var indexByID: [ConnectionID: Int] = [:]

        var isEmpty: Bool { all.isEmpty }
        var count: Int { all.count }
        var indices: Range<Int> { all.indices }

        subscript(index: Int) -> PoolConnection {
            get { all[index] }
            set {
                precondition(newValue.id == all[index].id, "a connection's id never changes")
                all[index] = newValue
            }
        }

        func index(of id: ConnectionID) -> Int? {
            indexByID[id]
        }

        mutating func add(_ connection: PoolConnection) {
            precondition(indexByID[connection.id] == nil, "connection \(connection.id) already exists")
            indexByID[connection.id] = all.count
            all.append(connection)
        }

        @discardableResult
        mutating func remove(at index: Int) -> PoolConnection {
            let removed = all[index]
            let last = all.count - 1
            if index != last {
                all.swapAt(index, last)
                indexByID[all[index].id] = index
            }
            all.removeLast()
            indexByID[removed.id] = nil
            return removed
        }

        /// The idle connection a lease should take: one on the preferred loop if there is one, else
        /// any; among those the most recently released (it is warm, and the others get the chance
        /// to idle out). A connection past its lifetime is never handed out.
        func bestIdle(preferring loopKey: Int?, now: PoolInstant) -> Int? {
            var best: Int?
            var bestSince = PoolInstant.zero
            var bestMatches = false
            for index in all.indices {
                guard case .idle(let since, _) = all[index].state, !all[index].isExpired(at: now) else { continue }
                let matches = loopKey != nil && all[index].loopKey == loopKey
                if best == nil || (matches && !bestMatches) || (matches == bestMatches && since > bestSince) {
                    best = index
                    bestSince = since
                    bestMatches = matches
                }
            }
            return best
        }

        /// How many connections are connecting and how many exist at all, in one pass.
        func connectingAndTotal() -> (connecting: Int, total: Int) {
            var connecting = 0
            for connection in all where connection.state == .connecting { connecting += 1 }
            return (connecting, all.count)
        }

        /// Connections on their way out: their close was asked for.
        func closingCount() -> Int {
            var closing = 0
            for connection in all {
                if case .closing = connection.state { closing += 1 }
            }
            return closing
        }

        /// Connections free to lease now or after their probe: idle, or being probed.
        func idleCount() -> Int {
            var idle = 0
            for connection in all {
                switch connection.state {
                case .idle, .keepAlive: idle += 1
                case .connecting, .leased, .closing: break
                }
            }
            return idle
        }

        /// Established connections in service: idle, leased, or being probed.
        func openCount() -> Int {
            var open = 0
            for connection in all {
                switch connection.state {
                case .idle, .leased, .keepAlive: open += 1
                case .connecting, .closing: break
                }
            }
            return open
        }
    }
}
