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

    /// Backends are killed while the app places orders from 8 concurrent clients: an order the
    /// app acknowledged is in the database exactly once, a user's order count matches its orders
    /// (each transaction all or nothing), and no request outlives the transaction deadline.
    @Test func backendsKilledMidTransactionLoseNoAcknowledgedOrder() async throws {
        let deadline = Duration.seconds(2)
        // The kills are the test's, not an outage: a breaker that opened would only stop the load.
        try await withERPApp(
            server: Self.server,
            environment: ["DB_CB_FAILURE_THRESHOLD": "10000"],
            adjust: { $0.timeouts.transaction = deadline }
        ) { app, database, scratch in
            let tester = try app.testing()
            let user = User(email: "buyer@example.com", name: "Buyer")
            try await user.save(on: app.db)
            let userID = try user.requireID()

            let acknowledged = Shared<[String]>([])
            let failed = Shared(0)
            let slowest = Shared(Duration.zero)
            let stop = Shared(false)
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
                    try await Task.sleep(for: .milliseconds(300))
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
            print(
                "example kill mid-transaction: \(acked.count) acknowledged, \(failed.withLock { $0 }) failed,"
                    + " \(numbers.count) written, \(lost.count) lost, slowest \(worst),"
                    + " retries \(database.metrics().queries.retries)"
            )
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

    /// The server stops under read load: reads fail fast (no request outlives its deadline),
    /// `/api/health/ready` turns 503, and both come back when the server does.
    @Test func aStoppedServerTurnsReadinessOffAndBack() async throws {
        let deadline = Duration.seconds(1)
        try await withERPApp(
            server: Self.server,
            // The breaker opens in the outage and lets a probe through 1 s later.
            environment: ["DB_CB_TIMEOUT": "1000"],
            monitor: .init(interval: .milliseconds(250)),
            adjust: { $0.timeouts.query = deadline }
        ) { app, database, _ in
            let tester = try app.testing()
            try await User(email: "reader@example.com", name: "Reader").save(on: app.db)
            #expect(await eventually { await status(tester, "api/health/ready") == .ok })

            let slowest = Shared(Duration.zero)
            let served = Shared(0)
            let refused = Shared(0)
            let stop = Shared(false)
            var marks: (unready: Duration?, ready: Duration?) = (nil, nil)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        while !stop.value {
                            let started = ContinuousClock.now
                            let status = await status(tester, "api/users")
                            slowest.withLock { $0 = max($0, ContinuousClock.now - started) }
                            if status == .ok { served.withLock { $0 += 1 } } else { refused.withLock { $0 += 1 } }
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
                if await eventually({ await status(tester, "api/health/ready") == .ok }) {
                    marks.ready = ContinuousClock.now - started
                }
                note("readiness back: \(marks.ready.map { "\($0)" } ?? "no")")
                try await Task.sleep(for: .milliseconds(500))
                stop.withLock { $0 = true }
                try await group.waitForAll()
            }
            let worst = slowest.withLock { $0 }
            print(
                "example stopped server: readiness 503 after \(marks.unready.map { "\($0)" } ?? "never"),"
                    + " 200 again \(marks.ready.map { "\($0)" } ?? "never") after the start;"
                    + " reads served \(served.withLock { $0 }), refused \(refused.withLock { $0 }), slowest \(worst)"
            )
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
