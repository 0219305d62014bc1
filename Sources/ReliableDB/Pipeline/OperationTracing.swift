import Tracing

/// What a span says about the database an operation ran against, as the OpenTelemetry database
/// semantic conventions name it. Backends fill it in from their configuration; it never holds a
/// credential.
public struct DatabaseSpanTarget: Sendable, Equatable {
    /// `db.system.name`: `postgresql`, `sqlite`.
    public var system: String
    /// `db.namespace`: the database name (PostgreSQL) or file name (SQLite).
    public var namespace: String?
    /// `server.address` and `server.port`, for a database behind a network.
    public var serverAddress: String?
    public var serverPort: Int?

    public init(system: String, namespace: String? = nil, serverAddress: String? = nil, serverPort: Int? = nil) {
        self.system = system
        self.namespace = namespace
        self.serverAddress = serverAddress
        self.serverPort = serverPort
    }
}

/// The span of one operation (kind client), or nothing when no tracer is bootstrapped.
///
/// Attributes follow the OpenTelemetry database conventions: `db.system.name`, `db.namespace`,
/// `db.collection.name` (the operation's table), `db.operation.name` (its kind), `db.query.summary`
/// (its name), `server.address`, `server.port`; on failure `error.type` (the error class) and
/// `db.response.status_code` (the SQLSTATE). Retries and breaker rejections are span events. No
/// statement text, bound parameter or error message is recorded: those may carry user data.
struct OperationSpan {
    let span: (any Span)?

    static func attributes(for options: OperationOptions, target: DatabaseSpanTarget) -> SpanAttributes {
        var attributes = SpanAttributes()
        attributes["db.system.name"] = target.system
        if let namespace = target.namespace { attributes["db.namespace"] = namespace }
        if let table = options.table { attributes["db.collection.name"] = table }
        attributes["db.operation.name"] = options.kind.rawValue
        attributes["db.query.summary"] = options.name
        if let address = target.serverAddress { attributes["server.address"] = address }
        if let port = target.serverPort { attributes["server.port"] = port }
        return attributes
    }

    func retryScheduled(attempt: Int, delay: Duration, errorClass: ErrorClass) {
        span?.addEvent(
            SpanEvent(
                name: "retry",
                attributes: [
                    "db.reliable.attempt": .int64(Int64(attempt)),
                    "db.reliable.retry_delay_ms": .double(delay.milliseconds),
                    "error.type": .string(errorClass.rawValue),
                ]
            )
        )
    }

    func rejected(state: CircuitState) {
        span?.addEvent(
            SpanEvent(
                name: "circuit_breaker_rejected",
                attributes: ["db.reliable.breaker_state": .string(state.rawValue)]
            )
        )
        failed(errorType: ErrorClass.overload.rawValue, statusCode: nil)
    }

    func failed(errorType: String, statusCode: String?) {
        guard let span else { return }
        span.attributes["error.type"] = errorType
        if let statusCode { span.attributes["db.response.status_code"] = statusCode }
        span.setStatus(SpanStatus(code: .error))
    }
}
