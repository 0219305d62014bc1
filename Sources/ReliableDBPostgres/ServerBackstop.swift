import Logging
import PostgresNIO
import ReliableDB

/// The server-side `statement_timeout`: what ends a statement when neither the CancelRequest nor
/// closing its connection reaches the server (a partition, a wedged proxy). It is the longest the
/// pipeline lets an operation run plus a margin, so it never ends a statement a caller still waits
/// for; an operation whose own deadline is later raises it for its statements. Every path that runs
/// a statement or opens a transaction asks ``statementTimeout(within:now:)`` (Sources/ReliableDB/Documentation.docc/Deadlines.md).
struct ServerBackstop: Sendable {
    /// How far past the longest timeout the server's own timeout fires: the client stops the
    /// statement first whenever it can reach the server.
    static let margin: Duration = .seconds(5)

    /// The setting every connection starts with (a startup parameter); nil leaves the server's.
    let connectionDefault: Duration?
    /// Whether a transaction-pooling PgBouncer is in between (declared or found).
    let pooler: PoolerDetection

    init(connectionDefault: Duration?, pooler: PoolerDetection) {
        self.connectionDefault = connectionDefault
        self.pooler = pooler
    }

    init(connectionDefault: Duration?, perTransactionOnly: Bool) {
        self.init(
            connectionDefault: connectionDefault,
            pooler: PoolerDetection(declared: perTransactionOnly, logger: Logger(label: "reliabledb.postgres"))
        )
    }

    /// Behind PgBouncer in transaction pooling a session setting would stay on a server connection
    /// other clients share: the backstop is set per transaction (`SET LOCAL`) and never per session.
    var perTransactionOnly: Bool { pooler.isDetected }

    /// The backstop for a pipeline's timeouts: the longest an operation may run (any kind's
    /// timeout, the batch cap) plus ``margin``; nil when timeouts are disabled.
    static func duration(for timeouts: TimeoutConfiguration) -> Duration? {
        guard timeouts.enabled else { return nil }
        let longest = OperationKind.allCases.map { timeouts[$0] }.max() ?? .zero
        return max(longest, timeouts.batchCap) + margin
    }

    /// The one rule: the `statement_timeout` the statements of `attempt` need that the connection's
    /// own setting does not give them, or nil when it does. Behind PgBouncer that is always the
    /// backstop (the connection has none); otherwise only when the attempt's deadline is later
    /// than the connection's setting allows.
    func statementTimeout(within attempt: AttemptContext, now: MonotonicTime) -> Duration? {
        guard let connectionDefault else { return nil }
        var needed = connectionDefault
        if let deadline = attempt.deadline { needed = max(needed, deadline - now + Self.margin) }
        return perTransactionOnly || needed > connectionDefault ? needed : nil
    }

    /// `SET LOCAL statement_timeout` for a transaction of `attempt` behind PgBouncer; nil elsewhere,
    /// where the connection's setting, raised for the lease when the attempt needs more
    /// (``setForSession(within:now:)``), covers the transaction too.
    func setLocal(within attempt: AttemptContext, now: MonotonicTime) -> PostgresQuery? {
        guard perTransactionOnly else { return nil }
        return statementTimeout(within: attempt, now: now).map {
            PostgresQuery(unsafeSQL: "SET LOCAL statement_timeout = \(Self.milliseconds($0))")
        }
    }

    /// `SET statement_timeout` for the statements of `attempt` on a leased connection, or nil when
    /// the connection's setting covers them or none may be set (behind PgBouncer, where a plain
    /// statement has only the pooler's `query_timeout`). The caller resets it afterwards
    /// (``reset``), or discards the connection.
    func setForSession(within attempt: AttemptContext, now: MonotonicTime) -> PostgresQuery? {
        guard !perTransactionOnly else { return nil }
        return statementTimeout(within: attempt, now: now).map {
            PostgresQuery(unsafeSQL: "SET statement_timeout = \(Self.milliseconds($0))")
        }
    }

    /// Back to the connection's startup setting.
    static let reset: PostgresQuery = "RESET statement_timeout"

    /// The startup parameter that gives every connection the backstop, when it may have one.
    var startupParameter: (String, String)? {
        guard let connectionDefault, !perTransactionOnly else { return nil }
        return ("statement_timeout", "\(Self.milliseconds(connectionDefault))")
    }

    private static func milliseconds(_ duration: Duration) -> Int64 {
        max(1, Int64(duration.milliseconds))
    }
}
