import Synchronization

/// How a read may degrade instead of failing: first on a standby (with a multi-host URL), then
/// with the last good result for ``key``; either only if no older than ``maxAge`` (a standby's
/// answer is as old as its replay lag). Only failures of the database (unreachable, overloaded,
/// timed out, breaker open) degrade; the caller's own errors (a constraint, bad SQL) never do.
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

/// Why an answer is degraded, where it came from and how old it is.
public struct Degradation: Sendable, Equatable {
    /// Where a degraded answer came from.
    public enum Source: Sendable, Equatable {
        /// The last good result kept for the fallback's key.
        case cached
        /// A standby (`host:port`) answered while the primary could not: it may miss the
        /// primary's last writes.
        case standby(server: String)
    }

    /// The age of the served result: since it was kept, or the standby's replay lag (zero when
    /// it had replayed everything it received).
    public var age: Duration
    /// The failure that made the read degrade, in words (secret-free).
    public var cause: String
    public var source: Source = .cached

    /// The HTTP header that marks a degraded answer, as the HTTP helpers set it.
    public static let headerName = "X-ReliableDB-Degraded"

    /// `cached; age=12` or `standby; age=0; server="db2:5432"` (seconds, rounded down).
    public var headerValue: String {
        switch source {
        case .cached: "cached; age=\(Int64(age.seconds))"
        case .standby(let server): "standby; age=\(Int64(age.seconds)); server=\"\(server)\""
        }
    }
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
    /// result. When the database fails it:
    /// 1. with several servers, `read` runs once more with its reads (operations marked
    ///    `readOnly`) on a standby, under the standby's own breaker: the answer is degraded, as old
    ///    as the standby's replay lag (when a standby failed it under `standby_reads=true`, the
    ///    second run goes to the primary instead, and its answer is fresh);
    /// 2. else, or when that fails too, the last good result for the fallback's key is served, if
    ///    one no older than `maxAge` exists, marked degraded.
    ///
    /// A read that `standby_reads=true` sent to a standby while the primary could not be reached
    /// is marked degraded too: it may miss the primary's last writes (its age is bounded by
    /// `max_standby_lag`, not `maxAge`). Degraded answers are counted
    /// (`degradedAnswers`, `db_degraded_answers_total`). Each run of `read` has its own deadlines,
    /// so a read that degrades to a standby can take up to two of them.
    public func withFallback<R: Sendable>(
        _ fallback: ReadFallback,
        _ read: () async throws -> R
    ) async throws -> Degradable<R> {
        let scope = ReadScope(route: .usual)
        var failure: any Error
        do {
            let value = try await ReadScope.$current.withValue(scope) { try await read() }
            // A standby's answer is as old as its replay lag (within max_standby_lag).
            lastGoodResults.store(value, for: fallback.key, at: clock.now - (scope.standby?.lag ?? .zero))
            if let standby = scope.standby, !standby.primaryReachable || circuitBreaker.state != .closed {
                return degraded(value, from: standby, cause: "the primary is unavailable")
            }
            return Degradable(value: value, degradation: nil)
        } catch {
            guard Self.degrades(error, classify(error).errorClass) else { throw error }
            failure = error
        }
        // Another server: a standby when the primary failed the read (unless the standby is known
        // down: then the kept result answers at once), the primary when a standby did
        // (standby_reads=true).
        let route: ReadScope.Route = scope.standby == nil ? .standby : .primary
        if let standby = standbyRouting, route == .primary || standby.standbyWorthTrying() {
            let second = ReadScope(route: route)
            do {
                let value = try await ReadScope.$current.withValue(second) { try await read() }
                guard second.route == .standby, let standby = second.standby else {
                    // The primary answered, or none of its reads is marked readOnly: a fresh answer.
                    lastGoodResults.store(value, for: fallback.key, at: clock.now)
                    return Degradable(value: value, degradation: nil)
                }
                // An unknown lag counts as too far behind.
                if let lag = standby.lag, lag <= fallback.maxAge {
                    lastGoodResults.store(value, for: fallback.key, at: clock.now - lag)
                    return degraded(value, from: standby, cause: raw.describe(failure))
                }
            } catch {
                guard Self.degrades(error, classify(error).errorClass) else { throw error }
            }
        }
        guard let kept = lastGoodResults.value(for: fallback.key, as: R.self) else { throw failure }
        let age = clock.now - kept.at
        guard age <= fallback.maxAge else { throw failure }
        operationMetrics.degradedAnswer()
        instruments?.recordDegraded()
        return Degradable(value: kept.value, degradation: Degradation(age: age, cause: raw.describe(failure)))
    }

    private func degraded<R>(_ value: R, from standby: ReadScope.ServedByStandby, cause: String) -> Degradable<R> {
        operationMetrics.degradedAnswer()
        instruments?.recordDegraded()
        let degradation = Degradation(age: standby.lag ?? .zero, cause: cause, source: .standby(server: standby.server))
        return Degradable(value: value, degradation: degradation)
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
