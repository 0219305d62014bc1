import InMemoryTracing
import ReliableDBTesting
import Testing
import Tracing

@testable import ReliableDB

/// One client span per operation, with the OpenTelemetry database attributes, under the caller's
/// span; retries and breaker rejections as events; nothing a statement or an error could leak.
@Suite("Operation spans (swift-distributed-tracing)")
struct TracingTests {
    /// Every attribute key a span may carry: anything else could be user data.
    static let allowedKeys: Set<String> = [
        "db.system.name", "db.namespace", "db.collection.name", "db.operation.name", "db.query.summary",
        "server.address", "server.port", "error.type", "db.response.status_code",
    ]

    func database(
        _ tracer: InMemoryTracer,
        breaker: CircuitBreakerConfiguration = .init(),
        retry: RetryConfiguration = .init(attempts: 3, initialDelay: .zero, maxDelay: .zero)
    ) throws -> ReliableDatabase<ScriptedBackend> {
        try ReliableDatabase(
            backend: ScriptedBackend(),
            configuration: .init(
                circuitBreaker: breaker,
                retry: retry,
                retryBudget: .unlimited,
                timeouts: .init(enabled: false)
            ),
            clock: ManualClock(),
            tracer: tracer
        )
    }

    func keys(_ span: FinishedInMemorySpan) -> Set<String> {
        var keys: Set<String> = []
        span.attributes.forEach { key, _ in keys.insert(key) }
        return keys
    }

    @Test func aSpanPerOperationUnderTheCallersSpanWithTheDatabaseAttributes() async throws {
        let tracer = InMemoryTracer()
        let db = try database(tracer)
        try await tracer.withSpan("GET /api/users", ofKind: .server) { _ in
            _ = try await db.execute(.read("get-users", table: "users")) { _ in 1 }
        }
        let spans = tracer.finishedSpans
        let request = try #require(spans.first { $0.operationName == "GET /api/users" })
        let operation = try #require(spans.first { $0.operationName == "get-users" })
        #expect(operation.kind == .client)
        #expect(operation.parentSpanID == request.spanID, "nested under the caller's span")
        #expect(operation.traceID == request.traceID)
        #expect(operation.attributes["db.system.name"]?.toSpanAttribute() == "test")
        #expect(operation.attributes["db.collection.name"]?.toSpanAttribute() == "users")
        #expect(operation.attributes["db.query.summary"]?.toSpanAttribute() == "get-users")
        #expect(operation.attributes["db.operation.name"]?.toSpanAttribute() == "query")
        #expect(operation.attributes["error.type"] == nil)
        #expect(operation.status == nil)
        #expect(keys(operation).isSubset(of: Self.allowedKeys))
    }

    @Test func retriesAreEventsAndOnlyTheFinalFailureMarksTheSpan() async throws {
        let tracer = InMemoryTracer()
        let db = try database(tracer)
        let script = Script([
            .failure(.init(errorClass: .connection)), .failure(.init(errorClass: .connection)), .success(7),
        ])
        #expect(try await db.execute(.read("flaky")) { _ in try script.next() } == 7)
        let recovered = try #require(tracer.finishedSpans.last)
        #expect(recovered.events.map(\.name) == ["retry", "retry"])
        #expect(recovered.events.first?.attributes["error.type"]?.toSpanAttribute() == "connection")
        #expect(recovered.attributes["error.type"] == nil, "it succeeded in the end")
        #expect(recovered.status == nil)

        let failing = Script([.failure(.init(errorClass: .caller))])
        await #expect(throws: ClassifiedError.self) {
            try await db.execute(.read("bad-input")) { _ in try failing.next() }
        }
        let failed = try #require(tracer.finishedSpans.last)
        #expect(failed.attributes["error.type"]?.toSpanAttribute() == "caller")
        #expect(failed.status?.code == .error)
        #expect(failed.status?.message == nil, "no error message: it may carry user data")
        #expect(failed.errors.isEmpty, "the error itself is not recorded")
        #expect(keys(failed).isSubset(of: Self.allowedKeys))
    }

    @Test func aBreakerRejectionIsAnEventOnAFailedSpan() async throws {
        let tracer = InMemoryTracer()
        let db = try database(tracer)
        db.circuitBreaker.forceState(.forcedOpen)
        await #expect(throws: DatabaseCircuitBreakerError.self) { try await db.execute(.read("blocked")) { _ in 1 } }
        let span = try #require(tracer.finishedSpans.last)
        #expect(span.events.map(\.name) == ["circuit_breaker_rejected"])
        #expect(span.attributes["error.type"]?.toSpanAttribute() == "overload")
    }

    @Test func withoutABootstrappedTracerNoSpanIsStarted() async throws {
        // The global tracer is the no-op one in tests: execute takes the untraced path.
        let db = try ReliableDatabase(backend: ScriptedBackend(), clock: ManualClock())
        #expect(try await db.execute(.read("plain")) { _ in 1 } == 1)
    }
}
