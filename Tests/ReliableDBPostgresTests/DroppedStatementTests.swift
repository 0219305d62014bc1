import Logging
import PostgresNIO
import ReliableDB
import ReliableDBPostgres
import Synchronization
import Testing

/// Why each PostgreSQL statement body runs in a task of its own (Sources/ReliableDB/Documentation.docc/Deadlines.md, step 3), shown
/// against a real server: PostgresNIO 1.33.2 never answers a statement written after its connection
/// closed, and ReliableDB still answers its caller.
@Suite("A statement written after its connection closed", .serialized, .timeLimit(.minutes(1)))
struct DroppedStatementTests {
    /// How long a statement on a closed connection is given to answer. A failed write answers within
    /// one event-loop turn; on a loaded machine that is still well under this.
    static let answerWindow = Duration.milliseconds(500)
    /// How long ReliableDB may take to answer such a statement's caller before the test fails
    /// (it answers 10 ms after the close; the rest is room for the parallel test load).
    static let answerBound = Duration.seconds(5)

    /// The driver's behaviour this library works around. If this fails after a PostgresNIO update,
    /// the driver now answers such a statement, and the statement task (and its cost, see
    /// Sources/ReliableDB/Documentation.docc/Performance.md) can be reconsidered.
    @Test func thePlainDriverNeverAnswersIt() async throws {
        let observer = try await Observer.connect()
        let connection = observer.connection
        // Completes after the channel removed its handlers, so the next write finds none.
        try await connection.close()
        let answered = Box<String>()
        // Never resumed: the task stays suspended for good.
        Task {
            do {
                _ = try await connection.query("SELECT 1", logger: Logger(label: "test.dropped"))
                answered.set("rows")
            } catch {
                answered.set("\(error)")
            }
        }
        try await Task.sleep(for: Self.answerWindow)
        #expect(
            answered.value == nil,
            "PostgresNIO answered a statement written after its connection closed: \(answered.value ?? "")"
        )
    }

    /// The same statement through ReliableDB: its caller gets a clear error at once, the connection is
    /// thrown away and the next call works on a fresh one.
    @Test func throughReliableDBItsCallerIsAnsweredAndTheConnectionIsNotReused() async throws {
        let db = try TestServer.open(
            try TestServer.url(),
            connectionLimit: 2,
            reliability: .init(circuitBreaker: .init(failureThreshold: 100), retry: .init(attempts: 1))
        )
        // A connection open already, so the wait below is the statement's alone, not a connect's.
        #expect(try await db.selectInt(.read("before"), "SELECT 1") == 1)
        // Run in a task of its own and waited for with a bound, so a regression fails here instead
        // of hanging the test run.
        let outcome = Box<String>()
        let closed = Box<ContinuousClock.Instant>()
        let answeredAt = Box<ContinuousClock.Instant>()
        let call = Task {
            do {
                let rows = try await db.query(OperationOptions("close-then-query")) { connection in
                    try await connection.close()
                    closed.set(.now)
                    return try await connection.query("SELECT 1", logger: Logger(label: "test.dropped")).collect().count
                }
                outcome.set("returned \(rows) rows")
            } catch {
                outcome.set("\(error)")
            }
            answeredAt.set(.now)
        }
        // The caller is answered 10 ms after the close; the bound is generous for the parallel test load.
        let answered = try await eventually(within: Self.answerBound) { outcome.value != nil }
        try #require(answered, "the caller was not answered within \(Self.answerBound)")
        let closedAt = try #require(closed.value, "the body closed its connection")
        print("answered \((answeredAt.value ?? .now) - closedAt) after the close")
        let answer = try #require(outcome.value)
        #expect(answer.contains("the connection closed before the statement answered"), "answered: \(answer)")
        _ = await call.result
        #expect(try await eventually { db.metrics().pool.active == 0 && db.metrics().activeOperations == 0 })
        #expect(try await db.selectInt(.read("after"), "SELECT 41 + 1") == 42)
        let metrics = db.metrics()
        #expect(metrics.pool.closesByReason.values.reduce(0, +) >= 1, "the closed connection was discarded")
        #expect(metrics.pool.total <= 2)
        try await db.shutdown()
    }
}

/// A value one task sets and another reads: a statement's answer, the instant of a close.
private final class Box<Value: Sendable>: Sendable {
    private let state = Mutex<Value?>(nil)
    var value: Value? { state.withLock { $0 } }
    func set(_ value: Value) { state.withLock { $0 = value } }
}
