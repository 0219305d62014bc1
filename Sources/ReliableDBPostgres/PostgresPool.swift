import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import ReliableDB
import ReliableDBPool
import Synchronization

/// Why a lease was not granted.
enum PoolLeaseError: Error {
    /// The pool timeout passed first.
    case timedOut
    /// The operation's deadline passed first.
    case deadlineReached
    /// The caller's task was cancelled.
    case cancelled
    case shutDown
    /// No connection is open and the last attempt to open one failed.
    case connectFailed(any Error)
}

/// The PostgreSQL pool: the I/O shell around ``PoolStateMachine``.
///
/// Every decision (who gets which connection, when a waiter gives up, when a connection is opened,
/// checked or retired) is the machine's; this class only carries out its actions: it resumes
/// callers, opens and closes sockets, runs keep-alive checks and keeps one alarm of the injected
/// clock at the machine's `wakeAt` (the library's one timer mechanism, `ReliabilityClock.makeAlarm`:
/// with the system clock a libdispatch timer, not a cooperative thread), so a wait ends on
/// time even while every cooperative thread is busy. A lease that finds an idle connection costs
/// one lock and no suspension.
final class PostgresPool: Sendable {
    /// Opens a connection without a task: the pool starts no task or thread of its own.
    typealias Connect = @Sendable (_ id: Int, _ eventLoop: any EventLoop) -> EventLoopFuture<PooledPostgresConnection>

    fileprivate typealias Waiter = CheckedContinuation<PooledPostgresConnection, any Error>

    fileprivate struct Shell {
        var machine: PoolStateMachine
        /// Every connection the machine knows past `connecting`, by id.
        var connections: [Int: PooledPostgresConnection] = [:]
        var waiters: [Int: Waiter] = [:]
        /// Answers for requests whose continuation was not stored yet.
        var early: [Int: Result<PooledPostgresConnection, PoolLeaseError>] = [:]
        var nextRequest = 0
        /// The clock's alarm at the machine's `wakeAt`. Its action holds the pool strongly;
        /// ``detachAlarm()`` ends that cycle: `shutdown()` and the backend's deinit call it.
        var alarm = HeldAlarm()
        var lastConnectError: (any Error)?
        var shutdownWaiters: [CheckedContinuation<Void, Never>] = []
    }

    /// What an event left to do outside the lock.
    fileprivate struct Work {
        var resumes: [(Waiter, Result<PooledPostgresConnection, any Error>)] = []
        var connects: [(id: Int, loopKey: Int?)] = []
        var closes: [PooledPostgresConnection] = []
        var keepAlives: [(PooledPostgresConnection, PoolStateMachine.ConnectionID)] = []
        var shutdownWaiters: [CheckedContinuation<Void, Never>] = []
        /// The answer to the request that caused the event, when it got one at once.
        var own: Result<PooledPostgresConnection, PoolLeaseError>?
    }

    let limit: Int
    /// The time the machine runs on.
    private let clock: any ReliabilityClock
    private let state: Mutex<Shell>
    private let connect: Connect
    private let eventLoops: any EventLoopGroup
    private let logger: Logger

    init(
        configuration: PoolConfiguration,
        clock: any ReliabilityClock = SystemClock(),
        eventLoops: any EventLoopGroup = PostgresConnection.defaultEventLoopGroup,
        logger: Logger,
        connect: @escaping Connect
    ) {
        limit = configuration.maximumConnections
        self.clock = clock
        state = Mutex(Shell(machine: PoolStateMachine(configuration: configuration)))
        self.eventLoops = eventLoops
        self.logger = logger
        self.connect = connect
        let alarm = clock.makeAlarm { [self] in timerFired() }
        state.withLock { $0.alarm.hold(alarm) }
    }

    /// Disarms the alarm and lets go of it, which ends the cycle through its action. No timer
    /// fires afterwards: only for a pool shut down or no longer used.
    func detachAlarm() {
        state.withLock { $0.alarm.detach() }?.disarm()
    }

    private var now: PoolInstant {
        clock.now
    }

    fileprivate static func loopKey(_ eventLoop: (any EventLoop)?) -> Int? {
        eventLoop.map { ObjectIdentifier($0).hashValue }
    }

    // MARK: Leasing

    /// A connection, waiting at most until `timeoutAt` (the pool timeout) or the operation's
    /// `deadline`, whichever is earlier. Throws ``PoolLeaseError``. `bypassingBackoff` is for a
    /// circuit breaker's trial (``PoolStateMachine/lease(request:timeoutAt:deadline:now:preferredLoop:bypassingBackoff:)``).
    func lease(
        timeoutAt: MonotonicTime?,
        deadline: MonotonicTime? = nil,
        bypassingBackoff: Bool = false
    ) async throws -> PooledPostgresConnection {
        let eventLoop = MultiThreadedEventLoopGroup.currentEventLoop
        let loop = Self.loopKey(eventLoop)
        let (request, work) = state.withLock { shell -> (Int, Work) in
            shell.nextRequest += 1
            let request = shell.nextRequest
            let actions = shell.machine.lease(
                request: request,
                timeoutAt: timeoutAt,
                deadline: deadline,
                now: self.now,
                preferredLoop: loop,
                bypassingBackoff: bypassingBackoff
            )
            return (request, shell.absorb(actions, own: request, pool: self))
        }
        if let own = work.own, work.isOnlyOwn {
            return try own.get()  // the fast path: an idle connection, no suspension
        }
        carryOut(work, preferredLoop: eventLoop)
        if let own = work.own { return try own.get() }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let early = state.withLock { shell -> Result<PooledPostgresConnection, PoolLeaseError>? in
                    if let early = shell.early.removeValue(forKey: request) { return early }
                    shell.waiters[request] = continuation
                    return nil
                }
                if let early { continuation.resume(with: early.mapError { $0 as any Error }) }
            }
        } onCancel: {
            self.event { $0.cancel(request: request) }
        }
    }

    /// Returns a leased connection; with `discard` (or when its socket is closed) it is closed and
    /// its slot freed for a new connection.
    func release(_ connection: PooledPostgresConnection, discard: Bool) {
        let discard = discard || connection.underlying.isClosed
        event { $0.release(connection: connection.id, discard: discard, now: self.now) }
    }

    /// Applies one event to the machine and carries out what it decided.
    private func event(_ body: (inout PoolStateMachine) -> PoolActions) {
        event(body) { _ in }
    }

    // MARK: Carrying out actions

    private func carryOut(_ work: Work, preferredLoop: (any EventLoop)?) {
        for (continuation, result) in work.resumes { continuation.resume(with: result) }
        for connect in work.connects {
            // Opened on the loop of the caller it is for, so that caller reads its replies without
            // a thread hop.
            let onPreferred = connect.loopKey != nil && connect.loopKey == Self.loopKey(preferredLoop)
            open(connect.id, on: onPreferred ? preferredLoop! : eventLoops.next())
        }
        for connection in work.closes { connection.close() }
        for (connection, id) in work.keepAlives { check(connection, id: id) }
        for waiter in work.shutdownWaiters { waiter.resume() }
    }

    fileprivate func timerFired() {
        let work = state.withLock { shell in
            shell.alarm.fired()
            return shell.absorb(shell.machine.tick(now: self.now), own: nil, pool: self)
        }
        carryOut(work, preferredLoop: nil)
    }

    /// Keeps the alarm at the machine's `wakeAt` or earlier (armed under the shell's lock, so two
    /// events cannot leave it at the later instant). An alarm that fires early (the instant moved
    /// later) only ticks the machine, which re-arms it. Unlike SQLite's admission pool it is not
    /// disarmed when nothing is due: this runs on every lease and release, where `wakeAt` comes and
    /// goes with idle timers, and re-arming a system timer each time would cost a syscall.
    fileprivate func scheduleTimer(_ shell: inout Shell, at wakeAt: PoolInstant?) {
        if let wakeAt { shell.alarm.arm(notLaterThan: wakeAt) }
    }

    private func open(_ id: Int, on eventLoop: any EventLoop) {
        connect(id, eventLoop).whenComplete { result in
            switch result {
            case .success(let connection):
                self.opened(connection)
            case .failure(let error):
                self.event { machine in
                    machine.connectFailed(connection: id, now: self.now)
                } preparing: { shell in
                    shell.lastConnectError = error
                }
            }
        }
    }

    /// Applies one event to the machine after `preparing` updated the shell's own records.
    private func event(_ body: (inout PoolStateMachine) -> PoolActions, preparing: (inout Shell) -> Void) {
        let work = state.withLock { shell in
            preparing(&shell)
            return shell.absorb(body(&shell.machine), own: nil, pool: self)
        }
        carryOut(work, preferredLoop: nil)
    }

    private func opened(_ connection: PooledPostgresConnection) {
        event { machine in
            machine.connected(
                connection: connection.id,
                loop: Self.loopKey(connection.eventLoop),
                now: self.now,
                lifetimeJitter: Double.random(in: 0...1)
            )
        } preparing: { shell in
            shell.connections[connection.id] = connection
            shell.lastConnectError = nil
        }
        connection.underlying.closeFuture.whenComplete { _ in
            self.event { machine in
                machine.closed(connection: connection.id, now: self.now)
            } preparing: { shell in
                shell.connections[connection.id] = nil
            }
        }
    }

    /// Runs `SELECT 1` on an idle connection; the machine closes it if the answer does not come
    /// within the keep-alive timeout.
    private func check(_ connection: PooledPostgresConnection, id: Int) {
        connection.underlying.simpleQuery("SELECT 1").whenComplete { result in
            let alive: Bool
            if case .success = result { alive = true } else { alive = false }
            self.event { $0.keepAliveDone(connection: id, alive: alive, now: self.now) }
        }
    }

    /// `connection` found its server demoted: retires the connections that existed then
    /// (``PoolStateMachine/evictAll(refused:now:)``).
    func evictAll(refused connection: PooledPostgresConnection) {
        event { machine in machine.evictAll(refused: connection.id, now: self.now) }
    }

    /// The server answered a connection made outside the pool (the health probe's): end the
    /// connect backoff, so callers waiting for a connection get one now.
    func serverReachable() {
        event { machine in machine.serverReachable(now: self.now) }
    }

    // MARK: Shutdown

    /// Fails the waiters and closes every connection, leased ones too (their statements fail at
    /// once), then waits until every connection, and every connect under way, has ended.
    func shutdown() async {
        let (work, open) = state.withLock { shell in
            (shell.absorb(shell.machine.shutdown(), own: nil, pool: self), Array(shell.connections.values))
        }
        carryOut(work, preferredLoop: nil)
        for connection in open { connection.close() }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { shell -> Bool in
                if shell.machine.isShutDownComplete { return true }
                shell.shutdownWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
        detachAlarm()
    }

    // MARK: Statistics

    var lastConnectError: (any Error)? {
        state.withLock { $0.lastConnectError }
    }

    /// Whether the last connect failed, and how many connections are open (idle, leased or being
    /// probed), read together: a server with both is known down, one with neither failure nor
    /// connections has not been tried.
    var reachability: (connectFailed: Bool, openConnections: Int) {
        state.withLock { ($0.lastConnectError != nil, $0.machine.openConnectionCount) }
    }

    func statistics() -> PoolStatistics {
        state.withLock { shell in
            let machine = shell.machine.statistics
            let closes = machine.closes
            return PoolStatistics(
                total: machine.open,
                active: machine.active,
                idle: machine.idle + machine.keepAlive,
                waiting: machine.waiting,
                max: limit,
                opened: machine.opened,
                closed: machine.closed,
                connectFailures: machine.connectFailures,
                acquireTimeouts: machine.acquireTimeouts,
                averageAcquireTime: machine.averageAcquireWait,
                maxAcquireTime: machine.maxAcquireWait,
                closesByReason: [
                    "idle": closes.idle, "lifetime": closes.lifetime, "broken": closes.broken,
                    "keepalive": closes.keepAliveFailed, "shutdown": closes.shutdown, "evicted": closes.evicted,
                ]
            )
        }
    }
}

extension PostgresPool.Work {
    /// True when the event's only outcome is the answer to its own request (the fast path).
    fileprivate var isOnlyOwn: Bool {
        resumes.isEmpty && connects.isEmpty && closes.isEmpty && keepAlives.isEmpty && shutdownWaiters.isEmpty
    }
}

extension PostgresPool.Shell {
    /// Turns the machine's actions into work for outside the lock, resolving ids to connections
    /// and continuations. `own` is the request of the event being handled, whose answer is
    /// returned rather than resumed.
    fileprivate mutating func absorb(
        _ actions: PoolActions,
        own: Int?,
        pool: PostgresPool
    ) -> PostgresPool.Work {
        var work = PostgresPool.Work()
        if let grant = actions.grant {
            if let connection = connections[grant.connection] {
                deliver(.success(connection), to: grant.request, own: own, into: &work)
            } else {
                preconditionFailure("the pool granted connection \(grant.connection), which it never opened")
            }
        }
        if !actions.listsAreEmpty {
            for failure in actions.failures {
                let error: PoolLeaseError
                switch failure.reason {
                case .timedOut: error = .timedOut
                case .deadlineReached: error = .deadlineReached
                case .cancelled: error = .cancelled
                case .shutdown: error = .shutDown
                case .connectFailed: error = .connectFailed(lastConnectError ?? PoolLeaseError.shutDown)
                }
                deliver(.failure(error), to: failure.request, own: own, into: &work)
            }
            for connect in actions.connects {
                work.connects.append((connect.connection, connect.loopKey))
            }
            for close in actions.closes {
                if let connection = connections[close.connection] { work.closes.append(connection) }
            }
            for id in actions.keepAlives {
                if let connection = connections[id] { work.keepAlives.append((connection, id)) }
            }
        }
        if actions.shutDownCompleted || machine.isShutDownComplete {
            work.shutdownWaiters = shutdownWaiters
            shutdownWaiters = []
        }
        pool.scheduleTimer(&self, at: actions.wakeAt)
        return work
    }

    private mutating func deliver(
        _ result: Result<PooledPostgresConnection, PoolLeaseError>,
        to request: Int,
        own: Int?,
        into work: inout PostgresPool.Work
    ) {
        if request == own {
            work.own = result
        } else if let continuation = waiters.removeValue(forKey: request) {
            work.resumes.append((continuation, result.mapError { $0 as any Error }))
        } else {
            early[request] = result
        }
    }
}
