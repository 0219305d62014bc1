import Foundation
import ReliableDB
import ReliableDBTestSupport
import Synchronization
import Testing
import VaporERP
import VaporTesting

/// Real faults under the example app's own routes, on the fault suite's server (which only fault
/// suites stop). scripts/test runs these with the fault suite, one at a time, after the rest.
@Suite("Vapor + Fluent example under faults", .serialized, .timeLimit(.minutes(2)))
struct ExampleFaultTests {
    static let server = FaultServer.urlVariable

    /// Backends are killed while the app places orders from 8 concurrent clients, with only
    /// `DATABASE_URL` set (every other setting the default a user gets): an order the app
    /// acknowledged is in the database exactly once, a user's order count matches its orders (each
    /// transaction all or nothing), no request outlives the transaction deadline, and the kills,
    /// the connections' failures on a healthy server, open no breaker: every order placed after
    /// the last kill succeeds.
    @Test func backendsKilledMidTransactionLoseNoAcknowledgedOrder() async throws {
        let deadline = ReliableDBConfiguration().reliability.timeouts.transaction
        try await withERPApp(server: Self.server, monitor: nil) { app, database, scratch in
            let tester = try app.testing()
            let user = User(email: "buyer@example.com", name: "Buyer")
            try await user.save(on: app.db)
            let userID = try user.requireID()

            let acknowledged = Shared<[String]>([])
            let failed = Shared(0)
            let slowest = Shared(Duration.zero)
            let stop = Shared(false)
            let lastKill = Shared<ContinuousClock.Instant?>(nil)
            let afterLastKill = Shared((ok: 0, failed: 0))
            try await withThrowingTaskGroup(of: Void.self) { group in
                for client in 0..<8 {
                    group.addTask {
                        var sequence = 0
                        while !stop.value {
                            sequence += 1
                            let number = "C\(client)-\(sequence)"
                            let started = ContinuousClock.now
                            let response = try await tester.performTest(
                                request: TestingHTTPRequest(
                                    method: .POST,
                                    url: "/api/orders",
                                    headers: ["Content-Type": "application/json"],
                                    body: ByteBuffer(
                                        string: #"{"userID":"\#(userID)","number":"\#(number)","totalCents":100}"#
                                    )
                                )
                            )
                            let took = ContinuousClock.now - started
                            slowest.withLock { $0 = max($0, took) }
                            if response.status == .ok {
                                acknowledged.withLock { $0.append(number) }
                            } else {
                                failed.withLock { $0 += 1 }
                            }
                            if let killed = lastKill.value, started > killed {
                                afterLastKill.withLock {
                                    if response.status == .ok { $0.ok += 1 } else { $0.failed += 1 }
                                }
                            }
                        }
                    }
                }
                group.addTask {
                    // 25 rounds of killing the app's backends that are inside a statement or a transaction.
                    try await SideConnection.with(scratch.server) { observer in
                        for _ in 0..<25 {
                            try await Task.sleep(for: .milliseconds(120))
                            try await observer.execute(
                                """
                                SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                                WHERE application_name = '\(scratch.applicationName)'
                                  AND state IN ('active', 'idle in transaction')
                                """
                            )
                        }
                    }
                    lastKill.withLock { $0 = ContinuousClock.now }
                    try await Task.sleep(for: .milliseconds(600))
                    stop.withLock { $0 = true }
                }
                try await group.waitForAll()
            }

            let written = try await Order.query(on: app.db).all()
            let numbers = written.map(\.number)
            let acked = acknowledged.withLock { $0 }
            let lost = Set(acked).subtracting(numbers)
            let counted = try #require(try await User.find(userID, on: app.db)).orderCount
            let worst = slowest.withLock { $0 }
            let after = afterLastKill.value
            let breaker = database.metrics().circuitBreaker
            print(
                "example kill mid-transaction (defaults): \(acked.count) acknowledged, \(failed.withLock { $0 }) failed,"
                    + " \(numbers.count) written, \(lost.count) lost, slowest \(worst),"
                    + " retries \(database.metrics().queries.retries); after the last kill \(after.ok) ok,"
                    + " \(after.failed) failed; breaker \(breaker.state.rawValue), \(breaker.transitions) transitions,"
                    + " \(breaker.ignored) lost connections ignored, \(breaker.rejected) rejected"
            )
            #expect(breaker.transitions == 0, "killed sessions on a healthy server opened the breaker")
            #expect(breaker.rejected == 0, "no request was refused by the breaker")
            #expect(after.ok > 0 && after.failed == 0, "every order after the last kill succeeded: \(after)")
            #expect(acked.count > 20, "the app kept placing orders between the kills")
            #expect(failed.withLock { $0 } > 0 || database.metrics().queries.retries > 0, "the kills landed")
            #expect(lost.isEmpty, "acknowledged orders lost: \(lost.sorted())")
            #expect(Set(numbers).count == numbers.count, "no order written twice")
            #expect(
                counted == numbers.count,
                "each transaction all or nothing: count \(counted), orders \(numbers.count)"
            )
            #expect(worst < deadline + .seconds(1), "no request outlived its deadline: \(worst)")
        }
    }

    /// The server stops under read load, with only `DATABASE_URL` set (`DB_CB_TIMEOUT=60000`, a
    /// check every 30 s): reads fail fast (no request outlives its deadline), `/api/health/ready`
    /// turns 503, and both come back within 2 s of the server accepting connections again: the
    /// breaker's own probe finds the server, not its 60 s timeout.
    @Test func aStoppedServerTurnsReadinessOffAndBack() async throws {
        let deadline = ReliableDBConfiguration().reliability.timeouts.query
        try await withERPApp(server: Self.server, monitor: nil) { app, database, _ in
            let tester = try app.testing()
            try await User(email: "reader@example.com", name: "Reader").save(on: app.db)
            #expect(await eventually { await status(tester, "api/health/ready") == .ok })

            let slowest = Shared(Duration.zero)
            let served = Shared(0)
            let refused = Shared(0)
            let stop = Shared(false)
            let serverStarted = Shared<ContinuousClock.Instant?>(nil)
            // After the start: the first read served, and the end of the last one refused.
            let recovery = Shared<(first: Duration?, lastRefused: Duration?)>((nil, nil))
            var marks: (unready: Duration?, ready: Duration?) = (nil, nil)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        while !stop.value {
                            let started = ContinuousClock.now
                            let status = await status(tester, "api/users")
                            let end = ContinuousClock.now
                            slowest.withLock { $0 = max($0, end - started) }
                            if status == .ok { served.withLock { $0 += 1 } } else { refused.withLock { $0 += 1 } }
                            if let back = serverStarted.value, started >= back {
                                recovery.withLock {
                                    if status == .ok, $0.first == nil { $0.first = end - back }
                                    if status != .ok { $0.lastRefused = end - back }
                                }
                            }
                            try await Task.sleep(for: .milliseconds(20))
                        }
                    }
                }
                try await Task.sleep(for: .milliseconds(300))
                note("stopping the server")
                try await FaultServer.control("stop", "fast")
                note("stopped")
                let stopped = ContinuousClock.now
                if await eventually({ await status(tester, "api/health/ready") == .serviceUnavailable }) {
                    marks.unready = ContinuousClock.now - stopped
                }
                try await Task.sleep(for: .seconds(1))
                try await FaultServer.control("start")
                note("started")
                let started = ContinuousClock.now
                serverStarted.withLock { $0 = started }
                if await eventually({ await status(tester, "api/health/ready") == .ok }) {
                    marks.ready = ContinuousClock.now - started
                }
                note("readiness back: \(marks.ready.map { "\($0)" } ?? "no")")
                try await Task.sleep(for: .seconds(1))
                stop.withLock { $0 = true }
                try await group.waitForAll()
            }
            let worst = slowest.withLock { $0 }
            let back = recovery.value
            print(
                "example stopped server (defaults): readiness 503 after \(marks.unready.map { "\($0)" } ?? "never"),"
                    + " 200 again \(marks.ready.map { "\($0)" } ?? "never") after the start;"
                    + " reads served \(served.withLock { $0 }), refused \(refused.withLock { $0 }), slowest \(worst);"
                    + " first read served \(back.first.map { "\($0)" } ?? "never") after the start, last refused"
                    + " \(back.lastRefused.map { "\($0)" } ?? "none"); breaker \(database.metrics().circuitBreaker.state.rawValue)"
            )
            let goal = Duration.seconds(2)
            #expect(back.first.map { $0 <= goal } == true, "reads served again within \(goal) of the start")
            #expect((back.lastRefused ?? .zero) <= goal, "and steadily after that")
            #expect(marks.ready.map { $0 <= goal } == true, "readiness back within \(goal) of the start")
            #expect(marks.unready != nil, "/api/health/ready turned 503 during the outage")
            #expect(marks.ready != nil, "and 200 after it")
            #expect(refused.withLock { $0 } > 0, "reads failed while the server was down")
            #expect(worst < deadline + .seconds(1), "no read outlived its deadline: \(worst)")
            #expect(await status(tester, "api/users") == .ok, "reads are served again")
            _ = database
        }
    }
}

func status(_ tester: any TestingApplicationTester, _ path: String) async -> HTTPResponseStatus? {
    try? await tester.performTest(
        request: TestingHTTPRequest(method: .GET, url: .init(path: path), headers: [:], body: ByteBuffer())
    )
    .status
}

/// A value tasks share.
final class Shared<Value: Sendable>: Sendable {
    private let state: Mutex<Value>
    init(_ value: Value) { state = Mutex(value) }
    var value: Value { state.withLock { $0 } }
    func withLock<R>(_ body: (inout Value) -> R) -> R { state.withLock { body(&$0) } }
}

func note(_ message: String) {
    FileHandle.standardError.write(Data("[\(Date())] \(message)\n".utf8))
}
