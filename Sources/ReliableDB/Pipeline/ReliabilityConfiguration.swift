/// The pipeline's settings: breaker, retries, timeouts and what counts as slow.
///
/// ``ReliableDBConfiguration/reliability`` builds one from the environment; tests and embedding
/// applications can also build one directly.
public struct ReliabilityConfiguration: Sendable, Equatable {
    /// `DB_CIRCUIT_BREAKER`: false lets every call through and counts nothing.
    public var circuitBreakerEnabled: Bool
    public var circuitBreaker: CircuitBreakerConfiguration
    /// How failed operations are retried: attempts and backoff. A strategy of its own beside the
    /// breaker, as in Resilience4j and Polly; the breaker counts each attempt.
    public var retry: RetryConfiguration
    public var retryBudget: RetryBudget.Configuration
    public var timeouts: TimeoutConfiguration
    /// `DB_ALERT_QUERY_TIME_THRESHOLD`: operations slower than this count as slow queries.
    public var slowQueryThreshold: Duration
    /// How many distinct operation names get their own metrics.
    public var maxOperationNames: Int
    /// The bulkhead and adaptive concurrency limit in front of the database; off by default.
    public var loadShedding: LoadSheddingConfiguration

    public init(
        circuitBreakerEnabled: Bool = true,
        circuitBreaker: CircuitBreakerConfiguration = .init(),
        retry: RetryConfiguration = .init(),
        retryBudget: RetryBudget.Configuration = .init(),
        timeouts: TimeoutConfiguration = .init(),
        slowQueryThreshold: Duration = .seconds(1),
        maxOperationNames: Int = 50,
        loadShedding: LoadSheddingConfiguration = .disabled
    ) {
        self.circuitBreakerEnabled = circuitBreakerEnabled
        self.circuitBreaker = circuitBreaker
        // The deprecated spelling inside the breaker's configuration, while it exists, is what its
        // user meant: it wins.
        self.retry = circuitBreaker.legacyRetry ?? retry
        self.retryBudget = retryBudget
        self.timeouts = timeouts
        self.slowQueryThreshold = slowQueryThreshold
        self.maxOperationNames = maxOperationNames
        self.loadShedding = loadShedding
    }

    public var validationProblems: [String] {
        circuitBreaker.validationProblems + retry.validationProblems + retryBudget.validationProblems
            + timeouts.validationProblems
            + loadShedding.validationProblems
    }
}

/// Things the pipeline reports as they happen, for logs and tests.
public enum PipelineEvent: Sendable, Equatable {
    /// A failed attempt will be retried after `delay`.
    case retryScheduled(operation: String, attempt: Int, delay: Duration, errorClass: ErrorClass)
    /// An operation hit its deadline; its work was cancelled.
    case timedOut(operation: String, elapsed: Duration)
}
