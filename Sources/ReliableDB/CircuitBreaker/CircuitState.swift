/// The states a circuit breaker can be in. Raw values are the spellings `/api/health` and
/// `db_circuit_breaker_state` report.
public enum CircuitState: String, Sendable, CaseIterable, Codable {
    /// Calls flow; failures are counted.
    case closed = "CLOSED"
    /// Calls are rejected until the open timeout has elapsed.
    case open = "OPEN"
    /// A few probe calls test whether the database has recovered.
    case halfOpen = "HALF_OPEN"
    /// An operator holds the breaker open; it does not recover on its own.
    case forcedOpen = "FORCED_OPEN"
    /// An operator switched the breaker off; every call passes and nothing is counted.
    case disabled = "DISABLED"

    /// Whether this state lets ordinary calls through.
    public var allowsTraffic: Bool {
        self == .closed || self == .disabled
    }
}

/// Why a breaker changed state, carried by every transition event.
public enum CircuitTransitionReason: String, Sendable, Codable {
    case failureThreshold = "failure_threshold"
    case failureRate = "failure_rate"
    case slowCallRate = "slow_call_rate"
    case openTimeoutElapsed = "open_timeout_elapsed"
    case probesSucceeded = "probes_succeeded"
    case probeFailed = "probe_failed"
    /// A probe on a fresh connection completed a round trip while the breaker was open.
    case serverAnswered = "server_answered"
    /// Connections moved to another server (a failover): the breaker starts over for it.
    case serverChanged = "server_changed"
    case forced
    case reset
}

/// One state change, delivered to subscribers (alerts, metrics, logs).
public struct CircuitTransition: Sendable, Equatable {
    public var from: CircuitState
    public var to: CircuitState
    public var reason: CircuitTransitionReason
    public var at: MonotonicTime
    /// The breaker's generation after the change; outcomes of older permits are ignored.
    /// (Plain values only: a transition is returned, mostly nil, by every permit and record, and a
    /// reference-counted field would cost them; the server is ``CircuitBreaker/server``.)
    public var generation: UInt64
}

/// How a permitted call ended, as far as the breaker is concerned.
public enum CircuitCallOutcome: Sendable, Equatable {
    case success
    /// A failure that says the database is in trouble (connection, overload, timeout).
    case failure
    /// An outcome that says nothing about the database (caller error, cancellation).
    case ignored
}
