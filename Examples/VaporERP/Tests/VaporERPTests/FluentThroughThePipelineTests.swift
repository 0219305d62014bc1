import Fluent
import InMemoryTracing
import ReliableDB
import ReliableDBFluent
import ReliableDBTestSupport
import SQLKit
import Synchronization
import Testing
import Tracing
import VaporERP
import VaporTesting

struct UserBody: Content {
    var email: String
    var name: String
    var title: String?
}

struct OrderBody: Content {
    var userID: UUID
    var number: String
    var totalCents: Int
}

/// The example Vapor + Fluent app on a real PostgreSQL: its unchanged Fluent code runs through
/// ReliableDB's pipeline, which the metrics and spans show.
@Suite("Vapor + Fluent example through ReliableDB", .timeLimit(.minutes(1)))
struct FluentThroughThePipelineTests {
    @Test func queriesSavesTransactionsRawSQLAndMigrationsAreOperations() async throws {
        try await withERPApp { app, database, _ in
            let tester = try app.testing()
            var created: User?
            try await tester.test(
                .POST,
                "api/users",
                beforeRequest: { try $0.content.encode(UserBody(email: "ada@example.com", name: "Ada", title: "CFO")) }
            ) { response in
                #expect(response.status == .ok)
                created = try response.content.decode(User.self)
            }
            let userID = try #require(created?.id)
            for number in ["A-1", "A-2"] {
                try await tester.test(
                    .POST,
                    "api/orders",
                    beforeRequest: {
                        try $0.content.encode(OrderBody(userID: userID, number: number, totalCents: 1250))
                    }
                ) { response in
                    #expect(response.status == .ok)
                }
            }
            try await tester.test(.GET, "api/users") { response in
                #expect(response.status == .ok)
                let users = try response.content.decode([User].self)
                #expect(users.map(\.email) == ["ada@example.com"])
            }
            try await tester.test(.GET, "api/users/\(userID)") { response in
                #expect(response.status == .ok)
                #expect(response.body.string.contains("\"title\":\"CFO\""))
                #expect(response.body.string.contains("A-2"))
                #expect(response.body.string.contains("\"orderCount\":2"))
            }
            try await tester.test(.GET, "api/orders/count") { response in
                #expect(response.body.string == "{\"orders\":2}")
            }
            // SQLKit on the same database: also an operation.
            let sql = try #require(app.db as? any SQLDatabase)
            let row = try #require(try await sql.raw("SELECT count(*)::int AS n FROM users").first())
            #expect(try row.decode(column: "n", as: Int.self) == 1)
            try await Order.query(on: app.db).filter(\.$number == "A-2").delete()

            let operations = database.metrics().queries.operations
            #expect(operations["User.read"]?.successes ?? 0 >= 2, "\(operations.keys.sorted())")
            #expect(operations["Profile.read"]?.successes == 1)
            #expect(operations["Order.read"]?.successes == 1)
            #expect(operations["Order.aggregate"]?.successes == 1)
            #expect(operations["Order.delete"]?.successes == 1)
            #expect(operations["transaction"]?.successes == 3, "two orders and the user with a profile")
            #expect(operations["sql.select"]?.successes == 1)
            #expect(operations["User.schema"]?.successes == 1, "the migrations too")
            #expect(operations["Order.schema"]?.successes == 1)
            #expect(database.metrics().queries.failedQueries == 0)

            try await tester.test(.GET, "api/health/metrics") { response in
                #expect(response.status == .ok)
                #expect(response.body.string.contains("operation=\"User.read\""))
                #expect(response.body.string.contains("operation=\"transaction\""))
            }
        }
    }

    @Test func aConstraintViolationIsTheCallersErrorNotRetriedAndNotAnOutage() async throws {
        try await withERPApp { app, database, _ in
            try await User(email: "bob@example.com", name: "Bob").save(on: app.db)
            await #expect(throws: (any Error).self) {
                try await User(email: "bob@example.com", name: "Bob again").save(on: app.db)
            }
            let metrics = database.metrics()
            #expect(metrics.queries.operations["User.create"]?.failures == 1)
            #expect(metrics.queries.retries == 0, "a caller error is never retried")
            #expect(metrics.queries.errorsByClass[.caller] == 1)
            #expect(metrics.circuitBreaker.totalFailures == 0, "and does not count against the breaker")
            #expect(try await User.query(on: app.db).count() == 1)
        }
    }

    @Test func aTransactionIsRetriedWholeAfterASerializationFailure() async throws {
        try await withERPApp { app, database, _ in
            let runs = Counter()
            try await app.db.transaction { db in
                let run = runs.increment()
                try await User(email: "run\(run)@example.com", name: "Run \(run)").save(on: db)
                if run == 1 {
                    // What PostgreSQL answers when a serializable transaction loses a conflict.
                    try await (db as! any SQLDatabase).raw(
                        "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$"
                    ).run()
                }
            }
            #expect(runs.value == 2, "the whole block ran again")
            let emails = try await User.query(on: app.db).all().map(\.email)
            #expect(emails == ["run2@example.com"], "the first run rolled back, the second committed")
            #expect(database.metrics().queries.retries == 1, "one retry of the whole transaction")
        }
    }

    @Test func aDeadlineStopsASlowFluentQueryOnTheServer() async throws {
        try await withERPApp { app, database, scratch in
            try await User(email: "eve@example.com", name: "Eve").save(on: app.db)
            let started = ContinuousClock.now
            await #expect(throws: DatabaseTimeoutError.self) {
                _ = try await User.query(on: app.db.reliability(timeout: .milliseconds(300)))
                    .filter(.sql(unsafeRaw: "pg_sleep(30) IS NOT NULL"))
                    .all()
            }
            let elapsed = ContinuousClock.now - started
            #expect(elapsed < .seconds(2), "released by its deadline (300 ms) plus the cancel's grace: \(elapsed)")
            // The CancelRequest is on its way when the caller is released; the server acts on it at once.
            let cancelled = try await eventually { try await scratch.running("%pg_sleep(30)%") == 0 }
            #expect(cancelled, "the statement was cancelled on the server, not left running for 30 s")
            #expect(database.metrics().queries.timeouts == 1)
            #expect(try await User.query(on: app.db).count() == 1, "and the pool serves the next query")
        }
    }

    @Test func anIdempotentWriteCanBeMarkedAndRenamed() async throws {
        try await withERPApp { app, database, _ in
            let user = User(email: "cy@example.com", name: "Cy")
            try await user.save(on: app.db.reliability(name: "signup", idempotent: true))
            #expect(database.metrics().queries.operations["signup"]?.successes == 1)
            #expect(database.metrics().queries.operations["User.create"] == nil)
        }
    }

    @Test func spansNestUnderTheRequestWithTheDatabaseAttributesAndNoValues() async throws {
        let tracer = InMemoryTracer()
        try await withERPApp(tracer: tracer) { app, _, scratch in
            let secretEmail = "s3cret-\(UUID().uuidString)@example.com"
            try await tracer.withSpan("GET /api/users", ofKind: .server) { _ in
                try await User(email: secretEmail, name: "Dee").save(on: app.db)
                _ = try await User.query(on: app.db).filter(\.$email == secretEmail).first()
            }
            let spans = tracer.finishedSpans
            let request = try #require(spans.first { $0.operationName == "GET /api/users" })
            let read = try #require(spans.first { $0.operationName == "User.read" })
            let create = try #require(spans.first { $0.operationName == "User.create" })
            for span in [read, create] {
                #expect(span.kind == .client)
                #expect(span.traceID == request.traceID)
                #expect(span.parentSpanID == request.spanID, "a child of the request's span")
                #expect(span.attributes["db.system.name"]?.toSpanAttribute() == "postgresql")
                #expect(span.attributes["db.namespace"]?.toSpanAttribute() == .string(scratch.name))
                #expect(span.attributes["db.collection.name"]?.toSpanAttribute() == "users")
                #expect(span.attributes["server.address"] != nil)
                #expect(span.attributes["server.port"] != nil)
            }
            #expect(read.attributes["db.query.summary"]?.toSpanAttribute() == "User.read")
            let password = try #require(ScratchDatabase.serverURL().password)
            for span in spans {
                var values: [String] = []
                span.attributes.forEach { _, value in values.append("\(value)") }
                for event in span.events { event.attributes.forEach { _, value in values.append("\(value)") } }
                #expect(!values.contains { $0.contains(secretEmail) }, "no bound value in \(span.operationName)")
                #expect(!values.contains { $0.contains(password) }, "no password in \(span.operationName)")
            }
        }
    }
}

final class Counter: Sendable {
    private let count = Mutex(0)
    var value: Int { count.withLock { $0 } }
    func increment() -> Int {
        count.withLock {
            $0 += 1; return $0
        }
    }
}
