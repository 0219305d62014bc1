import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import ReliableDB
import Synchronization

/// Why a lease was not granted.
enum PoolLeaseError: Error {
    /// The request was withdrawn (deadline, pool timeout or task cancellation).
    case cancelled
    case shutDown
    /// No connection is open and the last attempt to open one failed.
    case connectFailed(any Error)
}

/// The PostgreSQL connection pool: a lock-protected list of idle connections and a FIFO queue of
/// waiters, with every statistic counted where it changes, so it is exact.
///
/// A lease that finds an idle connection takes it under the lock without suspending, allocating
/// a continuation or arming a timer; postgres-nio's generic pool did all three per query and cost
/// half the throughput on `SELECT 1`. Idle connections are preferred on the caller's event loop,
/// so a task running on that loop reads its reply without a thread hop. Idle timeout and
/// keep-alive run in one periodic sweep instead of a timer per release.
final class PostgresConnectionPool: Sendable {
    typealias Connect = @Sendable (_ id: Int, _ eventLoop: any EventLoop) async throws -> PooledPostgresConnection

    private struct Waiter {
        let id: Int
        let continuation: CheckedContinuation<PooledPostgresConnection, any Error>
    }

    /// Where a returned, opened or checked connection goes, decided under the lock and carried
    /// out after it (`carryOut`).
    private enum Placement {
        case grant(Waiter)
        case idle
        case close(PoolCloseReason)
    }

    private struct IdleConnection {
        let connection: PooledPostgresConnection
        /// Last returned by a caller: the idle timeout counts from here.
        let since: ContinuousClock.Instant
        /// Last known alive (returned, or answered a keep-alive): the next check counts from here.
        let checked: ContinuousClock.Instant
    }

    private struct State {
        let limit: Int
        var idle: [IdleConnection] = []
        var open: [Int: PooledPostgresConnection] = [:]
        /// Connections lent to callers, including ones closed (by the server) while lent.
        var leased = 0
        /// Lent connections that closed before they were returned: no longer open, not active.
        var closedWhileLeased = 0
        var connecting = 0
        /// Idle connections out for a keep-alive check.
        var pinging: [Int: IdleConnection] = [:]
        /// Connections the pool is closing that no caller holds.
        var closing: Set<Int> = []
        var waiters = CircularBuffer<Waiter>()
        var isShutDown = false
        var nextConnectionID = 0
        var consecutiveConnectFailures = 0
        var opened = 0
        var closed = 0
        var connectFailures = 0
        var acquireTimeouts = 0
        var closesByReason: [String: Int] = [:]
        var lastConnectError: (any Error)?
        /// Granted leases, their total and longest wait: all the statistics report. A lease from
        /// the idle list only counts, under a lock every core takes.
        var acquireCount: UInt64 = 0
        var acquireTotalMicroseconds: UInt64 = 0
        var acquireMaxMicroseconds: UInt64 = 0

        init(limit: Int) {
            self.limit = limit
        }

        /// Takes an open idle connection, the most recently used one on `eventLoop` if any, so
        /// surplus connections stay idle long enough to time out. When only connections on other
        /// loops are idle, one of them is taken and, below the limit, a connection on `eventLoop`
        /// is opened in the background (`localConnect`), so the next lease from that loop is local.
        mutating func takeIdle(
            preferring eventLoop: (any EventLoop)?
        ) -> (connection: PooledPostgresConnection, localConnect: Int?)? {
            while !idle.isEmpty {
                let onLoop = eventLoop.flatMap { loop in idle.lastIndex { $0.connection.eventLoop === loop } }
                let entry = idle.remove(at: onLoop ?? idle.count - 1)
                // Closed by the server while idle: drop it and look again. Only the candidate is
                // checked, so a lease costs the same with 1 idle connection or 100.
                if entry.connection.underlying.isClosed {
                    closing.insert(entry.connection.id)
                    continue
                }
                let wantsLocal = eventLoop != nil && onLoop == nil
                let localConnect =
                    wantsLocal && !isShutDown && connecting == 0 && open.count < limit ? reserveSlot() : nil
                leased += 1
                return (entry.connection, localConnect)
            }
            return nil
        }

        private mutating func reserveSlot() -> Int {
            connecting += 1
            nextConnectionID += 1
            return nextConnectionID
        }

        /// Reserves a connection for every waiter that no connection being opened will serve,
        /// within the limit.
        mutating func reserveConnects() -> [Int] {
            var ids: [Int] = []
            while !isShutDown, waiters.count > connecting, open.count + connecting < limit {
                ids.append(reserveSlot())
            }
            return ids
        }

        /// Hands a usable connection to the first waiter, or back to the idle list.
        mutating func place(
            _ connection: PooledPostgresConnection,
            since: ContinuousClock.Instant,
            checked: ContinuousClock.Instant
        ) -> Placement {
            if let waiter = waiters.popFirst() {
                leased += 1
                return .grant(waiter)
            }
            idle.append(IdleConnection(connection: connection, since: since, checked: checked))
            return .idle
        }
    }

    let limit: Int
    let idleTimeout: Duration
    let keepAliveAfter: Duration
    /// The longest a keep-alive check may take before its connection is closed as dead.
    let keepAliveTimeout: Duration
    private let state: Mutex<State>
    private let connect: Connect
    private let eventLoops: any EventLoopGroup
    private let logger: Logger

    init(
        limit: Int,
        idleTimeout: Duration,
        keepAliveAfter: Duration = .seconds(30),
        keepAliveTimeout: Duration = .seconds(10),
        eventLoops: any EventLoopGroup = PostgresConnection.defaultEventLoopGroup,
        logger: Logger,
        connect: @escaping Connect
    ) {
        self.limit = limit
        self.idleTimeout = idleTimeout
        self.keepAliveAfter = keepAliveAfter
        self.keepAliveTimeout = keepAliveTimeout
        self.eventLoops = eventLoops
        self.logger = logger
        self.connect = connect
        state = Mutex(State(limit: limit))
    }

    // MARK: Leasing

    /// An idle connection at once, or nil: the fast path, no suspension. A granted lease is
    /// recorded as a zero wait under the same lock.
    func leaseIdle() -> PooledPostgresConnection? {
        let eventLoop = MultiThreadedEventLoopGroup.currentEventLoop
        let taken = state.withLock { state -> (PooledPostgresConnection, Int?)? in
            guard !state.isShutDown, let taken = state.takeIdle(preferring: eventLoop) else { return nil }
            state.acquireCount += 1
            return taken
        }
        guard let (connection, localConnect) = taken else { return nil }
        if let localConnect, let eventLoop { open(localConnect, on: eventLoop) }
        return connection
    }

    /// Queues request `id`; `continuation` is resumed with a connection or a `PoolLeaseError`.
    /// Call `cancel(id)` to withdraw it.
    func enqueue(_ id: Int, _ continuation: CheckedContinuation<PooledPostgresConnection, any Error>) {
        let eventLoop = MultiThreadedEventLoopGroup.currentEventLoop
        enum Action {
            case grant(PooledPostgresConnection, connect: Int?)
            case fail(PoolLeaseError)
            case wait(connects: [Int])
        }
        let action = state.withLock { state -> Action in
            if state.isShutDown { return .fail(.shutDown) }
            if let (connection, localConnect) = state.takeIdle(preferring: eventLoop) {
                return .grant(connection, connect: localConnect)
            }
            state.waiters.append(Waiter(id: id, continuation: continuation))
            return .wait(connects: state.reserveConnects())
        }
        switch action {
        case .grant(let connection, let connectionID):
            if let connectionID, let eventLoop { open(connectionID, on: eventLoop) }
            continuation.resume(returning: connection)
        case .fail(let error):
            continuation.resume(throwing: error)
        case .wait(let connectionIDs):
            for connectionID in connectionIDs { open(connectionID, on: eventLoop ?? eventLoops.next()) }
        }
    }

    /// Withdraws a queued request; false when it was already granted or failed.
    @discardableResult
    func cancel(_ id: Int) -> Bool {
        let waiter = state.withLock { state -> Waiter? in
            guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return state.waiters.remove(at: index)
        }
        waiter?.continuation.resume(throwing: PoolLeaseError.cancelled)
        return waiter != nil
    }

    /// Returns a leased connection; with a `closeReason` (or when it is closed) it is closed and
    /// its slot freed for a new connection.
    func release(_ connection: PooledPostgresConnection, closeReason: PoolCloseReason? = nil) {
        let now = ContinuousClock.now
        let placement = state.withLock { state -> Placement in
            state.leased -= 1
            if state.open[connection.id] == nil {
                // Closed while lent; `closed` already counted it.
                state.closedWhileLeased -= 1
                return .close(closeReason ?? .server)
            }
            let reason =
                closeReason ?? (state.isShutDown ? .pool : connection.underlying.isClosed ? .server : nil)
            if let reason {
                state.closing.insert(connection.id)
                return .close(reason)
            }
            return state.place(connection, since: now, checked: now)
        }
        carryOut(placement, connection)
    }

    private func carryOut(_ placement: Placement, _ connection: PooledPostgresConnection) {
        switch placement {
        case .grant(let waiter):
            waiter.continuation.resume(returning: connection)
        case .idle:
            break
        case .close(let reason):
            connection.markClosing(reason)
            connection.close()
        }
    }

    /// Records how long a granted lease waited, and whether a withdrawn one gave up at the pool
    /// timeout.
    func recordAcquire(waited: Duration, timedOut: Bool = false) {
        let micros = UInt64(max(0, waited.nanosecondsClamped / 1000))
        state.withLock { state in
            if timedOut {
                state.acquireTimeouts += 1
            } else {
                state.acquireCount += 1
                state.acquireTotalMicroseconds &+= micros
                state.acquireMaxMicroseconds = max(state.acquireMaxMicroseconds, micros)
            }
        }
    }

    // MARK: Opening and closing connections

    private func open(_ id: Int, on eventLoop: any EventLoop, after delay: Duration = .zero) {
        Task {
            if delay > .zero {
                try? await Task.sleep(for: delay)
                // A retry that comes due after shutdown gives its slot back instead of connecting.
                let abandoned = state.withLock { state in
                    if state.isShutDown { state.connecting -= 1 }
                    return state.isShutDown
                }
                if abandoned { return }
            }
            do {
                opened(try await connect(id, eventLoop))
            } catch {
                connectFailed(error)
            }
        }
    }

    private func opened(_ connection: PooledPostgresConnection) {
        let now = ContinuousClock.now
        let placement = state.withLock { state -> Placement in
            state.connecting -= 1
            state.opened += 1
            state.open[connection.id] = connection
            state.lastConnectError = nil
            state.consecutiveConnectFailures = 0
            // Closed between the handshake and now: `closed` will count it; hand nothing out.
            if state.isShutDown || connection.underlying.isClosed {
                state.closing.insert(connection.id)
                return .close(.pool)
            }
            return state.place(connection, since: now, checked: now)
        }
        connection.underlying.closeFuture.whenComplete { _ in self.closed(connection) }
        carryOut(placement, connection)
    }

    private func connectFailed(_ error: any Error) {
        let (failed, retries, delay) = state.withLock { state -> ([Waiter], [Int], Duration) in
            state.connecting -= 1
            state.connectFailures += 1
            state.consecutiveConnectFailures += 1
            state.lastConnectError = error
            // With nothing open no release will serve the queue, and the server is most likely
            // unreachable: fail the waiters now with the cause rather than at the pool timeout
            // (the pipeline retries with backoff). Connects still under way finish on their own.
            if state.open.isEmpty {
                defer { state.waiters.removeAll() }
                return (Array(state.waiters), [], .zero)
            }
            // Otherwise try again for the waiters no connection will serve, backing off while
            // the failures go on (100 ms doubling to 2 s); they give up at their pool timeout.
            let exponent = min(state.consecutiveConnectFailures - 1, 5)
            let delay = min(Duration.milliseconds(100) * (1 << exponent), .seconds(2))
            return ([], state.reserveConnects(), delay)
        }
        for waiter in failed { waiter.continuation.resume(throwing: PoolLeaseError.connectFailed(error)) }
        for id in retries { open(id, on: eventLoops.next(), after: delay) }
    }

    private func closed(_ connection: PooledPostgresConnection) {
        let (reopen, eventLoop) = state.withLock { state -> ([Int], (any EventLoop)?) in
            guard state.open.removeValue(forKey: connection.id) != nil else { return ([], nil) }
            state.closed += 1
            state.closesByReason[(connection.closeReason ?? .server).rawValue, default: 0] += 1
            let idleBefore = state.idle.count
            state.idle.removeAll { $0.connection === connection }
            let wasPinging = state.pinging.removeValue(forKey: connection.id) != nil
            let wasClosing = state.closing.remove(connection.id) != nil
            if state.idle.count == idleBefore, !wasPinging, !wasClosing {
                state.closedWhileLeased += 1
            }
            return (state.reserveConnects(), connection.underlying.eventLoop)
        }
        if let eventLoop {
            for id in reopen { open(id, on: eventLoop) }
        }
    }

    // MARK: Maintenance

    /// Closes connections idle longer than the idle timeout and checks those not known alive
    /// for `keepAliveAfter`, until cancelled.
    func run() async {
        let interval = min(min(idleTimeout, keepAliveAfter) / 4, .seconds(5))
        while !Task.isCancelled {
            try? await Task.sleep(for: max(interval, .milliseconds(100)))
            sweep()
        }
    }

    private func sweep() {
        let now = ContinuousClock.now
        let (expired, stale) = state.withLock { state -> ([PooledPostgresConnection], [IdleConnection]) in
            var expired: [PooledPostgresConnection] = []
            var stale: [IdleConnection] = []
            state.idle.removeAll { entry in
                if now - entry.since >= idleTimeout {
                    expired.append(entry.connection)
                    state.closing.insert(entry.connection.id)
                    return true
                }
                if now - entry.checked >= keepAliveAfter {
                    stale.append(entry)
                    return true
                }
                return false
            }
            for entry in stale { state.pinging[entry.connection.id] = entry }
            return (expired, stale)
        }
        for connection in expired {
            connection.markClosing(.pool)
            connection.close()
        }
        // Each check runs on its own, so one that hangs holds up neither the sweep nor the others.
        for entry in stale {
            Task { await check(entry) }
        }
    }

    /// Runs `SELECT 1` on an idle connection; one that fails or does not answer within
    /// `keepAliveTimeout` is closed.
    private func check(_ entry: IdleConnection) async {
        let connection = entry.connection
        let watchdog = Task {
            try? await Task.sleep(for: keepAliveTimeout)
            guard !Task.isCancelled else { return }
            connection.markClosing(.pool)
            connection.close()
        }
        var alive = true
        do {
            _ = try await connection.underlying.query("SELECT 1", logger: logger).collect()
        } catch {
            alive = false
        }
        watchdog.cancel()
        let now = ContinuousClock.now
        let placement = state.withLock { state -> Placement in
            // Gone from `pinging` when it closed meanwhile (and was counted then).
            guard state.pinging.removeValue(forKey: connection.id) != nil else { return .close(.pool) }
            guard alive, !state.isShutDown, !connection.underlying.isClosed else {
                state.closing.insert(connection.id)
                return .close(.pool)
            }
            // The idle timeout still counts from the caller's last use.
            return state.place(connection, since: entry.since, checked: now)
        }
        carryOut(placement, connection)
    }

    /// Fails the waiters, closes every connection (leased ones too: their statements fail) and
    /// waits until they, and any being opened, are closed.
    func shutdown() async {
        let (waiters, connections) = state.withLock { state -> ([Waiter], [PooledPostgresConnection]) in
            state.isShutDown = true
            for entry in state.idle { state.closing.insert(entry.connection.id) }
            defer {
                state.waiters.removeAll()
                state.idle.removeAll()
            }
            return (Array(state.waiters), Array(state.open.values))
        }
        for waiter in waiters { waiter.continuation.resume(throwing: PoolLeaseError.shutDown) }
        for connection in connections {
            connection.markClosing(.pool)
            connection.close()
        }
        for connection in connections {
            try? await connection.underlying.closeFuture.get()
        }
        // A connect under way finishes (or times out) and closes what it opened.
        while state.withLock({ $0.connecting > 0 }) {
            try? await Task.sleep(for: .milliseconds(10))
        }
        let late = state.withLock { Array($0.open.values) }
        for connection in late {
            try? await connection.underlying.closeFuture.get()
        }
    }

    // MARK: Statistics

    var lastConnectError: (any Error)? {
        state.withLock { $0.lastConnectError }
    }

    func statistics() -> PoolStatistics {
        state.withLock { state in
            let samples = state.acquireCount
            return PoolStatistics(
                total: state.open.count,
                active: state.leased - state.closedWhileLeased,
                idle: state.idle.count + state.pinging.count,
                waiting: state.waiters.count,
                max: limit,
                opened: state.opened,
                closed: state.closed,
                connectFailures: state.connectFailures,
                acquireTimeouts: state.acquireTimeouts,
                averageAcquireTime: samples == 0
                    ? .zero : .microseconds(Int64(state.acquireTotalMicroseconds / samples)),
                maxAcquireTime: .microseconds(Int64(state.acquireMaxMicroseconds)),
                closesByReason: state.closesByReason
            )
        }
    }
}
