/// Everything ``ReliableDatabase/metrics()`` reports. Query counters read through directly:
/// `db.metrics().successfulQueries`.
@dynamicMemberLookup
public struct MetricsSnapshot: Sendable, Equatable {
    public var queries: OperationMetricsSnapshot
    public var pool: PoolStatistics
    public var circuitBreaker: CircuitBreakerMetrics
    /// The breaker of reads on standbys; nil without one (``ReliableDatabase/standbyCircuitBreaker``).
    public var standbyCircuitBreaker: CircuitBreakerMetrics? = nil
    /// Nil when load shedding is off.
    public var loadShedding: LoadSheddingSnapshot? = nil
    /// The servers of a multi-host configuration; empty with one server.
    public var servers: [ServerHealth] = []

    public subscript<T>(dynamicMember keyPath: KeyPath<OperationMetricsSnapshot, T>) -> T {
        queries[keyPath: keyPath]
    }
}
