import Logging
import NIOCore
import PostgresNIO
import ReliableDB
import Synchronization

/// What a server said about itself when a connection reached it.
package struct ServerRole: Sendable, Equatable, CustomStringConvertible {
    /// `pg_is_in_recovery()`: a standby (hot standby, or a server still replaying).
    package var inRecovery: Bool
    /// `transaction_read_only` of a new session: a standby, or a primary set read-only.
    package var readOnly: Bool

    package init(inRecovery: Bool, readOnly: Bool) {
        self.inRecovery = inRecovery
        self.readOnly = readOnly
    }

    package var description: String {
        inRecovery ? "a standby" : readOnly ? "a read-only primary" : "a read-write primary"
    }

    /// `standby`, `primary` or `read-only primary`, for `/api/health`.
    package var name: String {
        inRecovery ? "standby" : readOnly ? "read-only primary" : "primary"
    }

    /// One round trip on a new connection; libpq asks the same of servers older than 14.
    static let query: PostgresQuery = "SELECT pg_is_in_recovery(), current_setting('transaction_read_only') = 'on'"
}

extension PostgresURL.TargetSessionAttributes {
    /// Whether a connection must learn its server's role before the walk can accept it.
    var needsRole: Bool { self != .any }

    /// Whether a server in `role` serves this target, as libpq 16 decides it. `relaxed` is the
    /// second pass of `prefer-standby`, which takes any server when no standby answered.
    func accepts(_ role: ServerRole, relaxed: Bool = false) -> Bool {
        switch self {
        case .any: true
        case .readWrite: !role.readOnly
        case .readOnly: role.readOnly
        case .primary: !role.inRecovery
        case .standby: role.inRecovery
        case .preferStandby: relaxed || role.inRecovery
        }
    }
}

/// No server of a multi-host URL matched `target_session_attrs`: every one either refused the
/// connection or had the wrong role. Says what each server answered.
public struct PostgresNoMatchingServerError: Error, CustomStringConvertible, Sendable {
    public var target: PostgresURL.TargetSessionAttributes
    /// Per server, in the order tried: what it answered.
    public var outcomes: [(server: PostgresURL.Endpoint, outcome: String)]

    public var description: String {
        let tried = outcomes.map { "\($0.server) \($0.outcome)" }.joined(separator: "; ")
        return "no server is \(target.rawValue) (target_session_attrs): \(tried)"
    }
}

/// libpq's walk over the servers of a URL: tried in order (or shuffled, `load_balance_hosts=random`),
/// a server whose role does not match `target_session_attrs` is disconnected and the walk goes on,
/// a failed authentication ends it. With one server and `any` it is a plain connect, with the
/// plain connect's errors.
///
/// Unlike libpq, a walk for a role (`read-write`, `primary`, ...) starts at the server the last
/// walk accepted: after a failover the client stays with the new primary while it answers as
/// one, so an old primary that comes back still claiming the role (split brain, as after a
/// manual restart) gets no connection, where libpq with the servers in order would write to it.
final class HostWalk: Sendable {
    /// A connect to one server (with its own host, port and TLS server name) for a pool slot.
    typealias Connect = @Sendable (Int, any EventLoop) -> EventLoopFuture<PooledPostgresConnection>

    let servers: [(endpoint: PostgresURL.Endpoint, connect: Connect)]
    let target: PostgresURL.TargetSessionAttributes
    let loadBalance: PostgresURL.LoadBalanceHosts
    let logger: Logger
    let clock: any ReliabilityClock
    /// The server the last walk for a role accepted, tried first by the next one.
    private let current = Mutex<Int?>(nil)
    /// The server the last walk without a role (`any`) connected to; a walk for a role keeps
    /// ``currentServer`` instead.
    private let last = Mutex<Int?>(nil)
    /// Servers that keep failing, tried last for a while (ServerEjection.swift).
    private let ejection: Mutex<ServerEjection>

    init(
        servers: [(endpoint: PostgresURL.Endpoint, connect: Connect)],
        target: PostgresURL.TargetSessionAttributes,
        loadBalance: PostgresURL.LoadBalanceHosts,
        maxEjection: Duration = .seconds(30),
        clock: any ReliabilityClock,
        logger: Logger
    ) {
        self.servers = servers
        self.target = target
        self.loadBalance = loadBalance
        self.clock = clock
        self.logger = logger
        ejection = Mutex(
            ServerEjection(count: servers.count, base: min(.seconds(1), maxEjection), maximum: maxEjection)
        )
    }

    /// What the walk knows of each server, in the URL's order.
    var serverStates: [(endpoint: PostgresURL.Endpoint, state: ServerEjection.Server, ejected: Bool, current: Bool)] {
        let now = clock.now
        let (ejection, current) = (self.ejection.withLock { $0 }, self.current.withLock { $0 })
        return servers.indices.map { index in
            (servers[index].endpoint, ejection.servers[index], ejection.isEjected(index, at: now), index == current)
        }
    }

    /// The server connections currently go to when the walk looks for a role; nil before the
    /// first connection and for `any`.
    var currentServer: PostgresURL.Endpoint? {
        current.withLock { $0 }.map { servers[$0].endpoint }
    }

    /// The server the last walk without a role connected to; nil before the first.
    var lastServer: PostgresURL.Endpoint? {
        last.withLock { $0 }.map { servers[$0].endpoint }
    }

    func connect(id: Int, on eventLoop: any EventLoop) -> EventLoopFuture<PooledPostgresConnection> {
        var order = Array(servers.indices)
        if loadBalance == .random { order.shuffle() }
        if target.needsRole, let last = current.withLock({ $0 }), let at = order.firstIndex(of: last), at > 0 {
            order.remove(at: at)
            order.insert(last, at: 0)
        }
        // Failing servers go last (ServerEjection.swift); a single server keeps its own connect
        // errors and the pool's backoff.
        if servers.count > 1 {
            let now = clock.now
            order = ejection.withLock { $0.walkOrder(order, at: now) }
        }
        return step(order, 0, relaxed: false, outcomes: [], lastError: nil, id: id, on: eventLoop)
    }

    /// A topology source (Patroni) named server `index` the one to connect to: the next walk
    /// starts there and it is no longer ejected. Returns the server walks went to before, when it
    /// was another.
    func follow(_ index: Int, outcome: String) -> Int? {
        ejection.withLock { $0.reached(index, role: nil, outcome: outcome) }
        let previous = current.withLock { current in
            defer { current = index }
            return current
        }
        return previous == index ? nil : previous
    }

    /// Records the server a walk for a role accepted, and says so when it changed (a failover).
    private func accepted(_ index: Int, role: ServerRole) {
        let previous = current.withLock { current in
            defer { current = index }
            return current
        }
        guard let previous, previous != index else { return }
        logger.warning(
            "connections now go to \(servers[index].endpoint), \(role); \(servers[previous].endpoint) no longer serves \(target.rawValue)"
        )
    }

    private func step(
        _ order: [Int],
        _ position: Int,
        relaxed: Bool,
        outcomes: [(server: PostgresURL.Endpoint, outcome: String)],
        lastError: (any Error)?,
        id: Int,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<PooledPostgresConnection> {
        guard position < order.count else {
            if target == .preferStandby, !relaxed {
                // No standby: a second pass takes any server (libpq's prefer-standby).
                return step(order, 0, relaxed: true, outcomes: outcomes, lastError: lastError, id: id, on: eventLoop)
            }
            // One server that refused: its own error, as a single-host connect reports it.
            if servers.count == 1, let lastError { return eventLoop.makeFailedFuture(lastError) }
            return eventLoop.makeFailedFuture(PostgresNoMatchingServerError(target: target, outcomes: outcomes))
        }
        let server = servers[order[position]]
        @Sendable func next(_ outcome: String, _ error: (any Error)?) -> EventLoopFuture<PooledPostgresConnection> {
            step(
                order,
                position + 1,
                relaxed: relaxed,
                outcomes: outcomes + [(server.endpoint, outcome)],
                lastError: error ?? lastError,
                id: id,
                on: eventLoop
            )
        }
        let (target, logger) = (self.target, self.logger)
        // What this server did, decided by its own connect and role query only: the rest of the
        // walk runs after, outside these error handlers, so a later server's failure is never
        // taken for this one's.
        let attempt = server.connect(id, eventLoop).flatMap { connection -> EventLoopFuture<StepResult> in
            guard target.needsRole else {
                self.last.withLock { $0 = order[position] }
                return eventLoop.makeSucceededFuture(.accepted(connection))
            }
            return Self.role(of: connection, logger: logger).map { role -> StepResult in
                self.ejection.withLock { $0.reached(order[position], role: role, outcome: "is \(role)") }
                if target.accepts(role, relaxed: relaxed) {
                    self.accepted(order[position], role: role)
                    return .accepted(connection)
                }
                connection.close()
                return .moveOn("is \(role)", nil)
            }.recover { error -> StepResult in
                connection.close()
                let outcome = "did not say its role (\(describePostgresError(error, namingHost: false)))"
                let now = self.clock.now
                self.ejection.withLock { $0.failed(order[position], outcome: outcome, at: now) }
                return .moveOn(outcome, error)
            }
        }.recover { error -> StepResult in
            // The credentials provider failed: a local problem, not this server's (Wire/Credentials.swift).
            if error is PostgresCredentialsError { return .stop(error) }
            if let state = sqlState(of: error), state.hasPrefix("28") {
                // A wrong password or user is wrong on every server: libpq stops here too.
                self.ejection.withLock { $0.reached(order[position], role: nil, outcome: "refused the credentials") }
                return .stop(error)
            }
            let outcome = "refused: \(describePostgresError(error, namingHost: false))"
            if self.servers.count > 1 {
                let now = self.clock.now
                self.ejection.withLock { $0.failed(order[position], outcome: outcome, at: now) }
            }
            return .moveOn(outcome, error)
        }
        return attempt.flatMap { result in
            switch result {
            case .accepted(let connection): eventLoop.makeSucceededFuture(connection)
            case .moveOn(let outcome, let error): next(outcome, error)
            case .stop(let error): eventLoop.makeFailedFuture(error)
            }
        }
    }

    /// What one server of a walk did.
    private enum StepResult: Sendable {
        /// It serves the target: the walk ends with its connection.
        case accepted(PooledPostgresConnection)
        /// It does not (wrong role, refused, no answer): the walk goes on.
        case moveOn(String, (any Error)?)
        /// It refused the credentials, which every server would: the walk ends with that error.
        case stop(any Error)
    }

    static func role(of connection: PooledPostgresConnection, logger: Logger) -> EventLoopFuture<ServerRole> {
        connection.underlying.query(ServerRole.query, logger: logger).flatMapThrowing { result in
            guard let row = result.rows.first else { throw PostgresError.protocol("no row for the server's role") }
            let (inRecovery, readOnly) = try row.decode((Bool, Bool).self)
            return ServerRole(inRecovery: inRecovery, readOnly: readOnly)
        }
    }
}
