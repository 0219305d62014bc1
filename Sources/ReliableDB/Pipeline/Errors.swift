import Foundation

/// The circuit breaker rejected the call without touching the database.
///
/// The database was failing recently; the call fails fast instead of piling onto it.
/// `retryAfter` says when the breaker will let a probe through (nil when an operator holds it open
/// or the probe slots are taken).
public struct DatabaseCircuitBreakerError: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var state: CircuitState
    public var retryAfter: Duration?
    public var nextAttempt: Date?

    public var description: String {
        var text = "Circuit breaker is \(state.rawValue): '\(operation)' was not sent to the database"
        if let retryAfter {
            text += "; the breaker admits a probe in \(formatDuration(retryAfter))"
        } else if state == .forcedOpen {
            text += "; it was forced open by an operator"
        } else if state == .halfOpen {
            text += "; recovery probes are in flight"
        }
        return text
    }
}

/// The operation did not finish within its deadline; the running statement was stopped.
///
/// A transaction that timed out did not commit and never commits later, unless
/// ``commitOutcomeUnknown`` is true: then the deadline passed while its COMMIT was on its way and
/// the connection had to be cut, so it may have committed. Check before doing the work again.
public struct DatabaseTimeoutError: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var kind: OperationKind
    public var timeout: Duration
    public var elapsed: Duration
    public var commitOutcomeUnknown: Bool

    public init(
        operation: String,
        kind: OperationKind,
        timeout: Duration,
        elapsed: Duration,
        commitOutcomeUnknown: Bool = false
    ) {
        self.operation = operation
        self.kind = kind
        self.timeout = timeout
        self.elapsed = elapsed
        self.commitOutcomeUnknown = commitOutcomeUnknown
    }

    public var description: String {
        let limit = "timed out after \(formatDuration(elapsed)) (limit \(formatDuration(timeout)))"
        if commitOutcomeUnknown {
            return
                "Operation '\(operation)' (\(kind.rawValue)) \(limit) while its COMMIT was in flight; it may have committed"
        }
        return "Operation '\(operation)' (\(kind.rawValue)) \(limit); the statement was cancelled"
    }
}

/// Thrown by a backend when an attempt ended while a transaction's COMMIT had been sent and not
/// answered: whether it committed is unknown. The pipeline never retries it unless the operation
/// is idempotent, and reports a timeout with ``DatabaseTimeoutError/commitOutcomeUnknown``.
public struct CommitOutcomeUnknownError: Error, CustomStringConvertible, Sendable {
    public var underlying: any Error
    /// `underlying` in words, as its backend describes it.
    public var underlyingDescription: String

    /// - Parameters:
    ///   - underlying: the error the connection was lost with.
    ///   - underlyingDescription: `underlying` in words (the backend's
    ///     ``DatabaseBackend/describe(_:)``); by default its own description.
    public init(underlying: any Error, underlyingDescription: String? = nil) {
        self.underlying = underlying
        self.underlyingDescription = underlyingDescription ?? "\(underlying)"
    }

    public var description: String {
        "the connection was lost while COMMIT was in flight; the transaction may have committed (\(underlyingDescription))"
    }
}

/// A transaction's connection was lost before its COMMIT was sent, so the transaction did not
/// commit: the server rolls back every transaction whose session ends. The pipeline retries it as
/// a whole, as it does a serialization failure.
public struct TransactionNotCommittedError: Error, CustomStringConvertible, Sendable {
    public var underlying: any Error
    /// `underlying` in words, as its backend describes it.
    public var underlyingDescription: String

    /// - Parameters:
    ///   - underlying: the error the connection was lost with.
    ///   - underlyingDescription: `underlying` in words (the backend's
    ///     ``DatabaseBackend/describe(_:)``); by default its own description.
    public init(underlying: any Error, underlyingDescription: String? = nil) {
        self.underlying = underlying
        self.underlyingDescription = underlyingDescription ?? "\(underlying)"
    }

    public var description: String {
        "the transaction did not commit: its connection was lost before COMMIT was sent (\(underlyingDescription))"
    }
}

/// The operation failed on every attempt it was allowed.
public struct DatabaseRetryError: Error, CustomStringConvertible, Sendable {
    public enum Reason: String, Sendable {
        case attemptsExhausted = "attempts exhausted"
        case deadlineReached = "the next retry would pass the deadline"
        case budgetExhausted = "the retry budget is spent"
        case notRetryable = "the last error is not retryable"
        case circuitOpened = "the circuit breaker opened"
    }

    public var operation: String
    public var attempts: Int
    public var reason: Reason
    public var lastError: any Error
    public var lastErrorClass: ErrorClass
    /// `lastError` in words, as the backend describes it (SQLSTATE and message, or the network
    /// cause), never a driver type's debug form.
    public var lastErrorDescription: String

    public var description: String {
        "Operation '\(operation)' failed after \(attempts) attempts (\(reason.rawValue)); last error (\(lastErrorClass.rawValue)): \(lastErrorDescription)"
    }
}

/// No pooled connection became free within the pool timeout (`DB_POOL_TIMEOUT`).
public struct DatabasePoolTimeoutError: Error, CustomStringConvertible, Sendable {
    public var waited: Duration
    public var statistics: PoolStatistics
    /// Why the pool could not open a connection, when it tried and failed (e.g. wrong password).
    public var lastConnectError: String?
    /// Who held the connections, the longest-held first, with for how long
    /// (`orders.export (App/Orders.swift:42) for 12.3 s`): bounded, operation names and call sites
    /// only, so the log line explains the outage without showing a value.
    public var holders: [String]

    public init(
        waited: Duration,
        statistics: PoolStatistics,
        lastConnectError: String? = nil,
        holders: [String] = []
    ) {
        self.waited = waited
        self.statistics = statistics
        self.lastConnectError = lastConnectError
        self.holders = holders
    }

    public var description: String {
        let heldBy = holders.isEmpty ? "" : "; held by \(holders.joined(separator: ", "))"
        if let lastConnectError {
            return
                "No database connection within \(formatDuration(waited)) (pool: \(statistics)); connecting fails: \(lastConnectError)"
                + heldBy
        }
        let prefix = "No database connection within \(formatDuration(waited)) (pool: \(statistics)); "
        if statistics.total < statistics.max && statistics.idle == 0 {
            return prefix + "new connections did not open in time: the server is slow to accept them or unreachable"
                + heldBy
        }
        return prefix
            + "the connections were in use by statements still running (a slow or unreachable server holds them too); "
            + "if the server answers quickly, raise DB_CONNECTION_LIMIT or DB_POOL_TIMEOUT" + heldBy
    }
}

/// `error`'s own description, unless that is Swift's debug form of a type that has none, which
/// for a driver's error carries a source file and line (`PostgresTransactionError(file: "...`):
/// then only its type's name, so a log line or an HTTP body never shows the dump.
package func plainDescription(of error: any Error) -> String {
    let text = String(describing: error)
    return text.contains("file: \"") ? "\(type(of: error))" : text
}

package func formatDuration(_ duration: Duration) -> String {
    let ms = duration.milliseconds
    if ms >= 10_000 { return String(format: "%.1f s", ms / 1000) }
    if ms >= 1 { return String(format: "%.0f ms", ms) }
    return String(format: "%.3f ms", ms)
}
