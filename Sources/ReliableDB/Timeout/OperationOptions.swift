/// What the pipeline needs to know about one operation (its name, table, timeout and whether the
/// breaker guards it), plus whether repeating it is safe.
public struct OperationOptions: Sendable, Equatable {
    /// A stable, low-cardinality name such as `get-users`: it labels metrics and logs.
    public var name: String
    public var table: String?
    public var kind: OperationKind
    /// Overrides the kind's default timeout.
    public var timeout: Duration?
    /// True when running the operation twice has the same effect as once. Only then is a
    /// connection failure that may have reached the server retried.
    public var idempotent: Bool
    public var useCircuitBreaker: Bool
    /// False turns retries off for this call.
    public var retries: Bool
    /// Records in a batch; scales the timeout.
    public var recordCount: Int?
    /// Only reads: may run on a standby when the backend reads from standbys (Sources/ReliableDBPostgres/Documentation.docc/Failover.md).
    /// `.read(...)` and `.complexQuery(...)` set it.
    public var readOnly = false

    public init(
        _ name: String,
        table: String? = nil,
        kind: OperationKind = .query,
        timeout: Duration? = nil,
        idempotent: Bool = false,
        useCircuitBreaker: Bool = true,
        retries: Bool = true,
        recordCount: Int? = nil
    ) {
        self.name = name
        self.table = table
        self.kind = kind
        self.timeout = timeout
        self.idempotent = idempotent
        self.useCircuitBreaker = useCircuitBreaker
        self.retries = retries
        self.recordCount = recordCount
    }

    /// A read that may always be repeated.
    public static func read(_ name: String, table: String? = nil, timeout: Duration? = nil) -> OperationOptions {
        var options = OperationOptions(name, table: table, kind: .query, timeout: timeout, idempotent: true)
        options.readOnly = true
        return options
    }

    /// A long analytical read with the complex-query timeout.
    public static func complexQuery(_ name: String, table: String? = nil) -> OperationOptions {
        var options = OperationOptions(name, table: table, kind: .complexQuery, idempotent: true)
        options.readOnly = true
        return options
    }

    /// A batch write whose timeout scales with `count`.
    public static func batchOperation(
        _ kind: BatchKind,
        count: Int,
        table: String,
        name: String? = nil
    ) -> OperationOptions {
        OperationOptions(
            name ?? "\(kind.rawValue)-\(table)",
            table: table,
            kind: kind.operationKind,
            recordCount: count
        )
    }

    /// The health probe's options: short timeout, retried never, outside the breaker so a probe
    /// can observe recovery while the breaker is open.
    public static let healthCheck = OperationOptions(
        "health-check",
        kind: .healthCheck,
        idempotent: true,
        useCircuitBreaker: false,
        retries: false
    )
}
