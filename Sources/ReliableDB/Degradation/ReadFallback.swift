import Synchronization

/// How a read may degrade instead of failing: with the last good result for ``key``, if it is no
/// older than ``maxAge``. Only failures of the database (unreachable, overloaded, timed out,
/// breaker open) degrade; the caller's own errors (a constraint, bad SQL) never do.
public struct ReadFallback: Sendable, Equatable {
    /// What the read returns, e.g. `orders-of-42`: its last good result is kept under this key.
    public var key: String
    /// The oldest result that may still be served.
    public var maxAge: Duration

    public init(key: String, maxAge: Duration) {
        self.key = key
        self.maxAge = maxAge
    }
}

/// A read's answer, and whether it is degraded (served from an earlier result).
public struct Degradable<Value: Sendable>: Sendable {
    public var value: Value
    /// Nil for a fresh answer.
    public var degradation: Degradation?

    public var isDegraded: Bool { degradation != nil }
}

/// Why an answer is degraded and how old it is.
public struct Degradation: Sendable, Equatable {
    /// The age of the served result.
    public var age: Duration
    /// The failure that made the read degrade, in words (secret-free).
    public var cause: String

    /// The HTTP header that marks a degraded answer, as the HTTP helpers set it.
    public static let headerName = "X-ReliableDB-Degraded"

    /// `cached; age=12` (seconds, rounded down).
    public var headerValue: String { "cached; age=\(Int64(age.seconds))" }
}

/// The last good result of each fallback key; bounded, so keys built from user input cannot grow it
/// without limit.
final class LastGoodResults: Sendable {
    static let capacity = 1000
    private let entries = Mutex<[String: (value: any Sendable, at: MonotonicTime)]>([:])

    func store(_ value: any Sendable, for key: String, at now: MonotonicTime) {
        entries.withLock { entries in
            if entries.count >= Self.capacity, entries[key] == nil,
                let oldest = entries.min(by: { $0.value.at < $1.value.at })?.key
            {
                entries.removeValue(forKey: oldest)
            }
            entries[key] = (value, now)
        }
    }

    func value<R>(for key: String, as type: R.Type) -> (value: R, at: MonotonicTime)? {
        entries.withLock { entries in
            guard let entry = entries[key], let value = entry.value as? R else { return nil }
            return (value, entry.at)
        }
    }
}

extension ReliableDatabase {
    /// Runs `read` (any read through this database: `query`, a Fluent query, ...) and keeps its
    /// result; when the database fails it, answers with the last good result for the fallback's
    /// key instead, if one no older than `maxAge` exists, marked degraded. Degraded answers are
    /// counted (`degradedAnswers`, `db_degraded_answers_total`).
    public func withFallback<R: Sendable>(
        _ fallback: ReadFallback,
        _ read: () async throws -> R
    ) async throws -> Degradable<R> {
        do {
            let value = try await read()
            lastGoodResults.store(value, for: fallback.key, at: clock.now)
            return Degradable(value: value, degradation: nil)
        } catch {
            guard Self.degrades(error, classify(error).errorClass),
                let kept = lastGoodResults.value(for: fallback.key, as: R.self)
            else { throw error }
            let age = clock.now - kept.at
            guard age <= fallback.maxAge else { throw error }
            operationMetrics.degradedAnswer()
            instruments?.recordDegraded()
            return Degradable(value: kept.value, degradation: Degradation(age: age, cause: raw.describe(error)))
        }
    }

    /// Failures of the database, not of the caller.
    static func degrades(_ error: any Error, _ errorClass: ErrorClass) -> Bool {
        switch error {
        case is DatabaseCircuitBreakerError, is DatabaseOverloadedError, is DatabaseTimeoutError,
            is DatabasePoolTimeoutError, is CommitOutcomeUnknownError:
            return true
        case let error as DatabaseRetryError:
            return error.lastErrorClass != .caller
        default:
            return [.connection, .overload, .timeout, .transientTransaction].contains(errorClass)
        }
    }
}
