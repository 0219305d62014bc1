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
public struct DatabaseTimeoutError: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var kind: OperationKind
    public var timeout: Duration
    public var elapsed: Duration

    public var description: String {
        "Operation '\(operation)' (\(kind.rawValue)) timed out after \(formatDuration(elapsed)) (limit \(formatDuration(timeout))); the statement was cancelled"
    }
}

/// The operation failed on every attempt it was allowed.
public struct DatabaseRetryError: Error, CustomStringConvertible, Sendable {
    public enum Reason: String, Sendable {
        case attemptsExhausted = "attempts exhausted"
        case deadlineReached = "the next retry would pass the deadline"
        case budgetExhausted = "the retry budget is spent"
        case notRetryable = "the last error is not retryable"
    }

    public var operation: String
    public var attempts: Int
    public var reason: Reason
    public var lastError: any Error
    public var lastErrorClass: ErrorClass

    public var description: String {
        "Operation '\(operation)' failed after \(attempts) attempts (\(reason.rawValue)); last error (\(lastErrorClass.rawValue)): \(lastError)"
    }
}

/// No pooled connection became free within the pool timeout (`DB_POOL_TIMEOUT`).
public struct DatabasePoolTimeoutError: Error, CustomStringConvertible, Sendable {
    public var waited: Duration
    public var statistics: PoolStatistics
    /// Why the pool could not open a connection, when it tried and failed (e.g. wrong password).
    public var lastConnectError: String?

    public init(waited: Duration, statistics: PoolStatistics, lastConnectError: String? = nil) {
        self.waited = waited
        self.statistics = statistics
        self.lastConnectError = lastConnectError
    }

    public var description: String {
        if let lastConnectError {
            return
                "No database connection within \(formatDuration(waited)) (pool: \(statistics)); connecting fails: \(lastConnectError)"
        }
        return
            "No database connection became free within \(formatDuration(waited)) (pool: \(statistics)); raise DB_CONNECTION_LIMIT or DB_POOL_TIMEOUT, or find what holds connections"
    }
}

func formatDuration(_ duration: Duration) -> String {
    let ms = duration.milliseconds
    if ms >= 10_000 { return String(format: "%.1f s", ms / 1000) }
    if ms >= 1 { return String(format: "%.0f ms", ms) }
    return String(format: "%.3f ms", ms)
}
