import Synchronization

/// The pipeline settings that change without a restart (``ReliableDatabase/reconfigure(_:)``):
/// each kind's timeout, the retries and the slow-query threshold. What every operation reads is
/// kept in atomics, so the read costs a load each and takes no lock; the whole configuration,
/// for everything else, is behind a lock.
final class LivePipelineSettings: Sendable {
    /// Whether deadlines apply at all (`DB_TIMEOUTS`): fixed at start.
    private let timeoutsEnabled: Bool
    private let query: Atomic<Int64>
    private let transaction: Atomic<Int64>
    private let batchInsert: Atomic<Int64>
    private let batchUpdate: Atomic<Int64>
    private let batchDelete: Atomic<Int64>
    private let healthCheck: Atomic<Int64>
    private let complexQuery: Atomic<Int64>
    private let migration: Atomic<Int64>
    private let perRecord: Atomic<Int64>
    private let batchCap: Atomic<Int64>
    private let attempts: Atomic<Int>
    private let slowQuery: Atomic<Int64>
    private let whole: Mutex<ReliabilityConfiguration>

    init(_ configuration: ReliabilityConfiguration) {
        let timeouts = configuration.timeouts
        timeoutsEnabled = timeouts.enabled
        query = Atomic(timeouts.query.nanosecondsClamped)
        transaction = Atomic(timeouts.transaction.nanosecondsClamped)
        batchInsert = Atomic(timeouts.batchInsert.nanosecondsClamped)
        batchUpdate = Atomic(timeouts.batchUpdate.nanosecondsClamped)
        batchDelete = Atomic(timeouts.batchDelete.nanosecondsClamped)
        healthCheck = Atomic(timeouts.healthCheck.nanosecondsClamped)
        complexQuery = Atomic(timeouts.complexQuery.nanosecondsClamped)
        migration = Atomic(timeouts.migration.nanosecondsClamped)
        perRecord = Atomic(timeouts.perRecord.nanosecondsClamped)
        batchCap = Atomic(timeouts.batchCap.nanosecondsClamped)
        attempts = Atomic(configuration.retry.attempts)
        slowQuery = Atomic(configuration.slowQueryThreshold.nanosecondsClamped)
        whole = Mutex(configuration)
    }

    /// The configuration in force.
    var configuration: ReliabilityConfiguration { whole.withLock { $0 } }

    /// Puts `new`'s timeouts, retries and slow-query threshold in force, and records its breaker
    /// settings (which the breakers themselves take, `CircuitBreaker.reconfigure(_:)`); the other
    /// fields of the configuration in force stay (they need a restart). `new` was validated by
    /// the caller.
    func store(_ new: ReliabilityConfiguration) {
        whole.withLock { current in
            current.timeouts = new.timeouts
            current.timeouts.enabled = timeoutsEnabled
            current.retry = new.retry
            current.slowQueryThreshold = new.slowQueryThreshold
            current.circuitBreaker = new.circuitBreaker
        }
        let timeouts = new.timeouts
        for kind in OperationKind.allCases {
            store(kind, timeouts[kind].nanosecondsClamped)
        }
        perRecord.store(timeouts.perRecord.nanosecondsClamped, ordering: .relaxed)
        batchCap.store(timeouts.batchCap.nanosecondsClamped, ordering: .relaxed)
        attempts.store(new.retry.attempts, ordering: .relaxed)
        slowQuery.store(new.slowQueryThreshold.nanosecondsClamped, ordering: .relaxed)
    }

    @inline(__always)
    private func load(_ kind: OperationKind) -> Int64 {
        switch kind {
        case .query: query.load(ordering: .relaxed)
        case .transaction: transaction.load(ordering: .relaxed)
        case .batchInsert: batchInsert.load(ordering: .relaxed)
        case .batchUpdate: batchUpdate.load(ordering: .relaxed)
        case .batchDelete: batchDelete.load(ordering: .relaxed)
        case .healthCheck: healthCheck.load(ordering: .relaxed)
        case .complexQuery: complexQuery.load(ordering: .relaxed)
        case .migration: migration.load(ordering: .relaxed)
        }
    }

    private func store(_ kind: OperationKind, _ nanoseconds: Int64) {
        switch kind {
        case .query: query.store(nanoseconds, ordering: .relaxed)
        case .transaction: transaction.store(nanoseconds, ordering: .relaxed)
        case .batchInsert: batchInsert.store(nanoseconds, ordering: .relaxed)
        case .batchUpdate: batchUpdate.store(nanoseconds, ordering: .relaxed)
        case .batchDelete: batchDelete.store(nanoseconds, ordering: .relaxed)
        case .healthCheck: healthCheck.store(nanoseconds, ordering: .relaxed)
        case .complexQuery: complexQuery.store(nanoseconds, ordering: .relaxed)
        case .migration: migration.store(nanoseconds, ordering: .relaxed)
        }
    }

    /// As ``TimeoutConfiguration/timeout(for:)`` with the values in force.
    @inline(__always)
    func timeout(for options: OperationOptions) -> Duration? {
        guard timeoutsEnabled else { return nil }
        if let explicit = options.timeout { return explicit }
        let base = Duration.nanoseconds(load(options.kind))
        guard let count = options.recordCount else { return base }
        let scaled = base + .nanoseconds(perRecord.load(ordering: .relaxed)) * max(0, count)
        return max(base, min(scaled, .nanoseconds(batchCap.load(ordering: .relaxed))))
    }

    /// The retry settings in force, for a retry's delay (off the fast path).
    var retry: RetryConfiguration { whole.withLock { $0.retry } }

    /// Attempts in all, the first included.
    var retryAttempts: Int { attempts.load(ordering: .relaxed) }

    var slowQueryThreshold: Duration { .nanoseconds(slowQuery.load(ordering: .relaxed)) }
}
