import ReliableDB

/// Which servers of a multi-host URL the walk tries last for now: a server that keeps failing
/// (refuses, times out, breaks during startup) is ejected for a growing time, 1 s after its first
/// failure and doubling up to ``maximum``, so a dead server does not cost a connection a connect
/// timeout while another server serves. It is still tried, after the others, soonest back first:
/// when none of them matches (a primary restarting in place beside its replica), it is found as
/// soon as it answers. A server that answers is back in at once.
///
/// Pure: time comes in as `now`; HostWalk keeps it under a lock.
package struct ServerEjection: Sendable, Equatable {
    package struct Server: Sendable, Equatable {
        /// Failures since the last success.
        package var failures = 0
        package var ejectedUntil: MonotonicTime?
        /// The role it answered with the last time a connection reached it.
        package var role: ServerRole?
        /// What the last attempt found, in words (for `/api/health` and errors).
        package var lastOutcome: String?
    }

    package let base: Duration
    package let maximum: Duration
    package private(set) var servers: [Server]

    package init(count: Int, base: Duration = .seconds(1), maximum: Duration = .seconds(30)) {
        self.base = base
        self.maximum = maximum
        servers = Array(repeating: Server(), count: count)
    }

    /// `order` with the servers ejected at `now` moved to the end, soonest back first. A walk
    /// tries the servers that are not failing first and the failing ones only when none of those
    /// matched (libpq tries them all), so a server restarting in place, as Patroni restarts a
    /// killed postmaster, is found as soon as it answers rather than when its ejection ends.
    package func walkOrder(_ order: [Int], at now: MonotonicTime) -> [Int] {
        let available = order.filter { !isEjected($0, at: now) }
        let ejected = order.filter { isEjected($0, at: now) }.sorted {
            (servers[$0].ejectedUntil ?? now) < (servers[$1].ejectedUntil ?? now)
        }
        return available + ejected
    }

    package func isEjected(_ index: Int, at now: MonotonicTime) -> Bool {
        servers[index].ejectedUntil.map { now < $0 } ?? false
    }

    /// A connection reached the server (whether or not its role matched).
    package mutating func reached(_ index: Int, role: ServerRole?, outcome: String) {
        servers[index].failures = 0
        servers[index].ejectedUntil = nil
        if let role { servers[index].role = role }
        servers[index].lastOutcome = outcome
    }

    /// The server failed to take a connection: ejected for `base` × 2^(failures − 1), at most `maximum`.
    package mutating func failed(_ index: Int, outcome: String, at now: MonotonicTime) {
        servers[index].failures += 1
        let doublings = min(servers[index].failures - 1, 30)
        let ejection = min(maximum, base * (1 << doublings))
        servers[index].ejectedUntil = now + ejection
        servers[index].lastOutcome = outcome
    }
}
