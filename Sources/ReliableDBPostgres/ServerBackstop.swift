import Logging
import PostgresNIO
import ReliableDB

/// The server-side `statement_timeout` and `idle_in_transaction_session_timeout`: what ends a
/// statement when neither the CancelRequest nor closing its connection reaches the server (a
/// partition, a wedged proxy), and what ends a transaction whose client went away mid-way (a
/// process killed, a partition) instead of holding its locks until TCP notices. Both are the
/// longest the pipeline lets an operation run plus a margin, so they never end a statement or
/// transaction a caller still waits for; an operation whose own deadline is later raises them for
/// its lease. Every path that runs a statement or opens a transaction asks
/// ``statementTimeout(within:now:)`` (Sources/ReliableDB/Documentation.docc/Deadlines.md).
/// `transaction_timeout` (PostgreSQL 17) is not sent: an unknown startup parameter would make
/// older servers refuse the connection.
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

    /// The backstop's `SET LOCAL`s for a transaction of `attempt` behind PgBouncer; nil elsewhere,
    /// where the connection's setting, raised for the lease when the attempt needs more
    /// (``setForSession(within:now:)``), covers the transaction too.
    func setLocal(within attempt: AttemptContext, now: MonotonicTime) -> PostgresQuery? {
        guard perTransactionOnly else { return nil }
        return statementTimeout(within: attempt, now: now).map { Self.set($0, local: true) }
    }

    /// The backstop's `SET`s for the statements of `attempt` on a leased connection, or nil when
    /// the connection's setting covers them or none may be set (behind PgBouncer, where a plain
    /// statement has only the pooler's `query_timeout`). The caller resets it afterwards
    /// (``reset``), or discards the connection.
    func setForSession(within attempt: AttemptContext, now: MonotonicTime) -> PostgresQuery? {
        guard !perTransactionOnly else { return nil }
        return statementTimeout(within: attempt, now: now).map { Self.set($0, local: false) }
    }

    /// Back to the connection's startup settings, in one statement.
    static let reset: PostgresQuery = """
        SELECT set_config(name, reset_val, false) FROM pg_settings
        WHERE name IN ('statement_timeout', 'idle_in_transaction_session_timeout')
        """

    /// The settings the backstop sets, all to the same duration.
    static let settings = ["statement_timeout", "idle_in_transaction_session_timeout"]

    /// The startup parameters that give every connection the backstop, when it may have one.
    var startupParameters: [(String, String)] {
        guard let connectionDefault, !perTransactionOnly else { return [] }
        return Self.settings.map { ($0, "\(Self.milliseconds(connectionDefault))") }
    }

    /// One statement setting every backstop setting to `duration`, for the transaction (`local`)
    /// or the session.
    private static func set(_ duration: Duration, local: Bool) -> PostgresQuery {
        let value = milliseconds(duration)
        let calls = settings.map { "set_config('\($0)', '\(value)', \(local))" }
        return PostgresQuery(unsafeSQL: "SELECT " + calls.joined(separator: ", "))
    }

    private static func milliseconds(_ duration: Duration) -> Int64 {
        max(1, Int64(duration.milliseconds))
    }
}
