/// How the circuit breaker decides to stop sending work to a failing database and when to try again.
///
/// The defaults are those of `DB_CB_FAILURE_THRESHOLD=5` and `DB_CB_TIMEOUT=60000`: open after
/// five failures within the one-minute `monitorWindow`, stay open until a probe finds the server
/// answering (Sources/ReliableDB/Documentation.docc/Breaker.md) or at most a minute, then let trial calls through. Setting
/// ``failureRateThreshold`` switches to Resilience4j's failure-rate mode.
public struct CircuitBreakerConfiguration: Sendable, Equatable {
    /// Failures within the window that open the breaker (count mode).
    public var failureThreshold: Int
    /// Consecutive successful probes in half-open that close the breaker.
    public var successThreshold: Int
    /// The longest the breaker stays open without evidence that the server answers, before it
    /// admits a trial call on its own (`DB_CB_TIMEOUT`); a probe that completes a round trip ends
    /// it sooner (Sources/ReliableDB/Documentation.docc/Breaker.md).
    public var timeout: Duration
    /// The window failures are counted over in count mode, and the default sliding window.
    public var monitorWindow: Duration
    /// When set, the breaker opens on the failure *rate* in percent (0-100] instead of a count.
    public var failureRateThreshold: Double?
    /// Calls that must be recorded in the window before a rate can open the breaker.
    public var minimumNumberOfCalls: Int
    /// The window rates are computed over: the last N calls or the last T of time.
    /// `nil` means a time window of ``monitorWindow``.
    public var slidingWindow: SlidingWindowKind?
    /// Successful calls slower than this count as slow calls. `nil` disables slow-call counting.
    public var slowCallDurationThreshold: Duration?
    /// The slow-call rate in percent that opens the breaker.
    public var slowCallRateThreshold: Double
    /// Probes allowed in flight at once while half-open. Others are rejected, not queued, so a
    /// recovering database sees a trickle instead of the whole backlog.
    public var maxConcurrentProbes: Int
    /// Retries of the operations this breaker protects: now ``ReliabilityConfiguration/retry``.
    @available(
        *,
        deprecated,
        message:
            "retries are set beside the breaker, not inside it; read only when a ReliabilityConfiguration is made from this one"
    )
    public var retry: RetryConfiguration {
        get { legacyRetry ?? .init() }
        set { legacyRetry = newValue }
    }
    /// The deprecated ``retry``, which a ``ReliabilityConfiguration`` made with this configuration
    /// and no retry of its own takes over; nil when never set.
    var legacyRetry: RetryConfiguration?

    public init(
        failureThreshold: Int = 5,
        successThreshold: Int = 2,
        timeout: Duration = .seconds(60),
        monitorWindow: Duration = .seconds(60),
        failureRateThreshold: Double? = nil,
        minimumNumberOfCalls: Int = 10,
        slidingWindow: SlidingWindowKind? = nil,
        slowCallDurationThreshold: Duration? = nil,
        slowCallRateThreshold: Double = 100,
        maxConcurrentProbes: Int = 1
    ) {
        self.failureThreshold = failureThreshold
        self.successThreshold = successThreshold
        self.timeout = timeout
        self.monitorWindow = monitorWindow
        self.failureRateThreshold = failureRateThreshold
        self.minimumNumberOfCalls = minimumNumberOfCalls
        self.slidingWindow = slidingWindow
        self.slowCallDurationThreshold = slowCallDurationThreshold
        self.slowCallRateThreshold = slowCallRateThreshold
        self.maxConcurrentProbes = maxConcurrentProbes
    }

    /// The old spelling, with the retries inside the breaker's configuration.
    @available(*, deprecated, message: "pass retry to ReliabilityConfiguration(retry:) instead")
    public init(
        failureThreshold: Int = 5,
        successThreshold: Int = 2,
        timeout: Duration = .seconds(60),
        monitorWindow: Duration = .seconds(60),
        failureRateThreshold: Double? = nil,
        minimumNumberOfCalls: Int = 10,
        slidingWindow: SlidingWindowKind? = nil,
        slowCallDurationThreshold: Duration? = nil,
        slowCallRateThreshold: Double = 100,
        maxConcurrentProbes: Int = 1,
        retry: RetryConfiguration
    ) {
        self.init(
            failureThreshold: failureThreshold,
            successThreshold: successThreshold,
            timeout: timeout,
            monitorWindow: monitorWindow,
            failureRateThreshold: failureRateThreshold,
            minimumNumberOfCalls: minimumNumberOfCalls,
            slidingWindow: slidingWindow,
            slowCallDurationThreshold: slowCallDurationThreshold,
            slowCallRateThreshold: slowCallRateThreshold,
            maxConcurrentProbes: maxConcurrentProbes
        )
        legacyRetry = retry
    }

    /// The largest count sliding window: its outcomes are kept in memory allocated up front.
    public static let maxCountWindow = 1_000_000

    /// The configuration problems, empty when valid.
    public var validationProblems: [String] {
        var problems: [String] = []
        if failureThreshold < 1 { problems.append("failureThreshold must be at least 1, got \(failureThreshold)") }
        if successThreshold < 1 { problems.append("successThreshold must be at least 1, got \(successThreshold)") }
        if timeout <= .zero { problems.append("timeout must be positive") }
        if monitorWindow <= .zero { problems.append("monitorWindow must be positive") }
        if let rate = failureRateThreshold, !(rate > 0 && rate <= 100) {
            problems.append("failureRateThreshold must be in (0, 100], got \(rate)")
        }
        if minimumNumberOfCalls < 1 { problems.append("minimumNumberOfCalls must be at least 1") }
        if case .count(let size) = slidingWindow, !(1...Self.maxCountWindow).contains(size) {
            problems.append("a count sliding window holds 1 to \(Self.maxCountWindow) calls, got \(size)")
        }
        if case .time(let span) = slidingWindow, span <= .zero {
            problems.append("a time sliding window must be positive")
        }
        if !(slowCallRateThreshold > 0 && slowCallRateThreshold <= 100) {
            problems.append("slowCallRateThreshold must be in (0, 100]")
        }
        if maxConcurrentProbes < 1 { problems.append("maxConcurrentProbes must be at least 1") }
        // Configurations that are valid field by field but can never open the breaker.
        if case .count(let size) = slidingWindow, size >= 1 {
            if failureRateThreshold == nil, failureThreshold > size {
                problems.append(
                    "failureThreshold \(failureThreshold) can never be reached in a sliding window of \(size) calls"
                )
            }
            if failureRateThreshold != nil || slowCallDurationThreshold != nil, minimumNumberOfCalls > size {
                problems.append(
                    "minimumNumberOfCalls \(minimumNumberOfCalls) can never be reached in a sliding window of \(size) calls"
                )
            }
        }
        return problems
    }
}

/// The span a breaker computes its counts and rates over.
public enum SlidingWindowKind: Sendable, Equatable {
    /// The last `n` recorded calls.
    case count(Int)
    /// The calls recorded within the last span of time.
    case time(Duration)
}
