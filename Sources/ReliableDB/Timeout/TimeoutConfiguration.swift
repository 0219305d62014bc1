/// Default timeouts per operation kind, and how batch timeouts grow with the batch.
///
/// A batch of `count` records gets `base + perRecord × count`, capped at ``batchCap`` (and never
/// below the base): a 1,000-row insert with the defaults gets 60 s + 10 s = 70 s, and no batch
/// waits more than five minutes. `DB_TIMEOUTS=false` sets ``enabled`` to false, which switches
/// every deadline off, explicit per-call ones included.
public struct TimeoutConfiguration: Sendable, Equatable {
    public var enabled: Bool
    public var query: Duration
    public var transaction: Duration
    public var batchInsert: Duration
    public var batchUpdate: Duration
    public var batchDelete: Duration
    public var healthCheck: Duration
    public var complexQuery: Duration
    public var migration: Duration
    /// Extra time per record in a batch.
    public var perRecord: Duration
    /// The longest timeout batch scaling can produce.
    public var batchCap: Duration

    public init(
        enabled: Bool = true,
        query: Duration = .seconds(10),
        transaction: Duration = .seconds(30),
        batchInsert: Duration = .seconds(60),
        batchUpdate: Duration = .seconds(60),
        batchDelete: Duration = .seconds(60),
        healthCheck: Duration = .seconds(3),
        complexQuery: Duration = .seconds(45),
        migration: Duration = .seconds(300),
        perRecord: Duration = .milliseconds(10),
        batchCap: Duration = .seconds(300)
    ) {
        self.enabled = enabled
        self.query = query
        self.transaction = transaction
        self.batchInsert = batchInsert
        self.batchUpdate = batchUpdate
        self.batchDelete = batchDelete
        self.healthCheck = healthCheck
        self.complexQuery = complexQuery
        self.migration = migration
        self.perRecord = perRecord
        self.batchCap = batchCap
    }

    public subscript(kind: OperationKind) -> Duration {
        get {
            switch kind {
            case .query: query
            case .transaction: transaction
            case .batchInsert: batchInsert
            case .batchUpdate: batchUpdate
            case .batchDelete: batchDelete
            case .healthCheck: healthCheck
            case .complexQuery: complexQuery
            case .migration: migration
            }
        }
        set {
            switch kind {
            case .query: query = newValue
            case .transaction: transaction = newValue
            case .batchInsert: batchInsert = newValue
            case .batchUpdate: batchUpdate = newValue
            case .batchDelete: batchDelete = newValue
            case .healthCheck: healthCheck = newValue
            case .complexQuery: complexQuery = newValue
            case .migration: migration = newValue
            }
        }
    }

    /// The timeout for a batch of `count` records of `kind`.
    public func batchTimeout(for kind: OperationKind, count: Int) -> Duration {
        let base = self[kind]
        let scaled = base + perRecord * max(0, count)
        return max(base, min(scaled, batchCap))
    }

    /// The deadline length for `options`, or nil when timeouts are off.
    public func timeout(for options: OperationOptions) -> Duration? {
        guard enabled else { return nil }
        if let explicit = options.timeout { return explicit }
        if let count = options.recordCount { return batchTimeout(for: options.kind, count: count) }
        return self[options.kind]
    }

    public var validationProblems: [String] {
        var problems: [String] = []
        for kind in OperationKind.allCases where self[kind] <= .zero {
            problems.append("the \(kind.rawValue) timeout must be positive")
        }
        if perRecord < .zero { problems.append("perRecord must not be negative") }
        if batchCap <= .zero { problems.append("batchCap must be positive") }
        return problems
    }
}
