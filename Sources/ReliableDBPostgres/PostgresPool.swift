import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import ReliableDB
import ReliableDBPool

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

    init(_ failure: PoolLeaseFailure) {
        switch failure {
        case .timedOut: self = .timedOut
        case .deadlineReached: self = .deadlineReached
        case .cancelled: self = .cancelled
        case .shutDown: self = .shutDown
        case .connectFailed(let cause): self = .connectFailed(cause)
        }
    }
}

/// The PostgreSQL pool: PostgresNIO connections in a ``PoolShell``, which waits, times out and
/// counts exactly as SQLite's admission does. What is PostgreSQL's is ``PostgresConnections``:
/// opening a connection on the caller's event loop, closing it, and `SELECT 1` as the keep-alive.
/// A lease that finds an idle connection costs one lock and no suspension.
final class PostgresPool: Sendable {
    /// Opens a connection without a task: the pool starts no task or thread of its own.
    typealias Connect = @Sendable (_ id: Int, _ eventLoop: any EventLoop) -> EventLoopFuture<PooledPostgresConnection>

    let shell: PoolShell

    var limit: Int { shell.limit }

    init(
        configuration: PoolConfiguration,
        clock: any ReliabilityClock = SystemClock(),
        eventLoops: any EventLoopGroup = PostgresConnection.defaultEventLoopGroup,
        logger: Logger,
        connect: @escaping Connect
    ) {
        shell = PoolShell(
            configuration: configuration,
            driver: PostgresConnections(connect: connect, eventLoops: eventLoops),
            clock: clock
        )
    }

    /// Disarms the alarm and lets go of it, which ends the cycle through its action (it holds the
    /// shell). No timer fires afterwards: only for a pool shut down or no longer used.
    func detachAlarm() {
        shell.detachAlarm()
    }

    // MARK: Leasing

    /// A connection, waiting at most `timeout` (the pool timeout; `nil` for none) or until the
    /// operation's `deadline`, whichever ends first. Throws ``PoolLeaseError``. `bypassingBackoff`
    /// is for a circuit breaker's trial (``PoolStateMachine/lease(request:timeoutAt:deadline:now:preferredLoop:bypassingBackoff:)``).
    func lease(
        timeout: Duration?,
        deadline: MonotonicTime? = nil,
        bypassingBackoff: Bool = false
    ) async throws -> PooledPostgresConnection {
        do {
            let lease = try await shell.lease(
                timeout: timeout,
                deadline: deadline,
                preferredLoop: PostgresConnections.loopKey(MultiThreadedEventLoopGroup.currentEventLoop),
                bypassingBackoff: bypassingBackoff
            )
            // The shell holds only what PostgresConnections opened.
            return unsafeDowncast(lease.connection, to: PooledPostgresConnection.self)
        } catch let failure as PoolLeaseFailure {
            throw PoolLeaseError(failure)
        }
    }

    /// Returns a leased connection; with `discard` (or when its socket is closed) it is closed and
    /// its slot freed for a new connection.
    func release(_ connection: PooledPostgresConnection, discard: Bool) {
        shell.release(connection.id, discard: discard || connection.underlying.isClosed)
    }

    /// `connection` found its server demoted: retires the connections that existed then
    /// (``PoolStateMachine/evictAll(refused:now:)``).
    func evictAll(refused connection: PooledPostgresConnection) {
        shell.evictAll(refused: connection.id)
    }

    /// Retires every connection open now: idle ones close at once, leased ones when released.
    /// For when a topology source says their server no longer serves them.
    func retireOpenConnections() {
        shell.evictAll(refused: .max)
    }

    /// The server answered a connection made outside the pool (the health probe's): end the
    /// connect backoff, so callers waiting for a connection get one now.
    func serverReachable() {
        shell.serverReachable()
    }

    // MARK: Shutdown

    /// Fails the waiters and closes every connection, leased ones too (their statements fail at
    /// once), then waits until every connection, and every connect under way, has ended.
    func shutdown() async {
        shell.beginShutdown(closingLeased: true)
        await shell.waitUntilShutDown()
        detachAlarm()
    }

    // MARK: Statistics

    var lastConnectError: (any Error)? {
        shell.lastConnectError
    }

    /// Whether the last connect failed, and how many connections are open (idle, leased or being
    /// probed), read together: a server with both is known down, one with neither failure nor
    /// connections has not been tried.
    var reachability: (connectFailed: Bool, openConnections: Int) {
        shell.reachability
    }

    /// Connects in flight now.
    var connecting: Int { shell.statistics.connecting }

    func statistics() -> PoolStatistics {
        let machine = shell.statistics
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
                "resized": closes.resized,
            ]
        )
    }
}

/// How the PostgreSQL pool opens, closes and checks its connections.
struct PostgresConnections: PoolDriver {
    let connect: PostgresPool.Connect
    let eventLoops: any EventLoopGroup

    static func loopKey(_ eventLoop: (any EventLoop)?) -> Int? {
        eventLoop.map { ObjectIdentifier($0).hashValue }
    }

    /// Opened on the loop of the caller it is for when that caller is running this (a lease's
    /// connect is started on its caller's thread), so that caller reads its replies without a
    /// thread hop; otherwise on the group's next loop.
    func open(_ id: Int, loopKey: Int?, for pool: PoolShell) {
        let current = MultiThreadedEventLoopGroup.currentEventLoop
        let eventLoop: any EventLoop
        if let current, loopKey != nil, Self.loopKey(current) == loopKey {
            eventLoop = current
        } else {
            eventLoop = eventLoops.next()
        }
        connect(id, eventLoop).whenComplete { result in
            switch result {
            case .success(let connection):
                pool.connected(connection, id: id, loopKey: Self.loopKey(connection.eventLoop))
                connection.underlying.closeFuture.whenComplete { _ in pool.closed(id: id) }
            case .failure(let error):
                pool.connectFailed(id: id, error: error)
            }
        }
    }

    func close(_ connection: Connection) {
        unsafeDowncast(connection, to: PooledPostgresConnection.self).close()
    }

    /// Runs `SELECT 1` on an idle connection; the machine closes it if the answer does not come
    /// within the keep-alive timeout.
    func keepAlive(_ connection: Connection, id: Int, for pool: PoolShell) {
        unsafeDowncast(connection, to: PooledPostgresConnection.self).underlying.simpleQuery("SELECT 1").whenComplete {
            result in
            let alive: Bool
            if case .success = result { alive = true } else { alive = false }
            pool.keepAliveDone(id: id, alive: alive)
        }
    }
}
