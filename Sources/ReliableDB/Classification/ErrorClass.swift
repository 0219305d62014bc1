/// What kind of failure an error is, which decides how the pipeline reacts to it.
///
/// One classification drives retries, the circuit breaker and connection handling, so the three
/// can never disagree about the same error (README.md, "What happens to one operation").
public enum ErrorClass: String, Sendable, CaseIterable, Codable {
    /// The server rolled the transaction back for a reason that goes away on its own (serialization
    /// failure, deadlock, SQLite BUSY/LOCKED). The whole transaction is safe to run again.
    case transientTransaction = "transient_transaction"
    /// The connection broke or could not be made. The database may be down.
    case connection
    /// The database or pool is saturated (too many connections, pool acquire timeout).
    case overload
    /// The operation's deadline fired.
    case timeout
    /// The caller's own mistake: constraint violation, syntax error, bad data. Never retried and
    /// never held against the database.
    case caller
    /// The caller cancelled the operation. Neither retried nor counted.
    case cancelled
    /// Anything else (corruption, protocol violations): neither retried nor counted, because
    /// waiting would not fix it and only outages should open the breaker.
    case fatal

    /// Whether trying again may succeed.
    public var isRetryable: Bool {
        switch self {
        case .transientTransaction, .connection, .overload: true
        case .timeout, .caller, .cancelled, .fatal: false
        }
    }

    /// Whether the error says something about the database's health, so the breaker counts it.
    public var countsAgainstBreaker: Bool {
        switch self {
        case .connection, .overload, .timeout: true
        case .transientTransaction, .caller, .cancelled, .fatal: false
        }
    }
}

/// A backend's verdict on one error.
public struct ErrorClassification: Sendable, Equatable {
    public var errorClass: ErrorClass
    /// True when the statement may have reached the server before the failure, so running it again
    /// could apply a write twice. Only idempotent operations are retried in that case.
    public var mayHaveReachedServer: Bool
    /// True when the connection that saw the error must not be handed out again.
    public var discardConnection: Bool
    /// True when the error ended one established connection and says nothing yet about the server:
    /// a session terminated by an administrator, one socket reset or closed, a statement cut by its
    /// own connection's death. A fresh connection would not have it. The pipeline retries such an
    /// attempt at once on another connection (when ``mayHaveReachedServer`` allows) and never
    /// counts it against the circuit breaker: the breaker counts what fresh connections find
    /// (Sources/ReliableDB/Documentation.docc/Breaker.md).
    public var connectionScoped: Bool

    public init(
        _ errorClass: ErrorClass,
        mayHaveReachedServer: Bool = false,
        discardConnection: Bool = false,
        connectionScoped: Bool = false
    ) {
        self.errorClass = errorClass
        self.mayHaveReachedServer = mayHaveReachedServer
        self.discardConnection = discardConnection
        self.connectionScoped = connectionScoped
    }
}

/// Maps errors to classes. Each backend provides one; the core knows no driver.
public protocol ErrorClassifier: Sendable {
    func classify(_ error: any Error) -> ErrorClassification
}
