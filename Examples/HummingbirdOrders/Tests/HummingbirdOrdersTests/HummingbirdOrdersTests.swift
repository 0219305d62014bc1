import Foundation
import Hummingbird
import HummingbirdOrders
import HummingbirdTesting
import ReliableDB
import ReliableDBPostgres
import ReliableDBTestSupport
import Testing

extension ScratchDatabase {
    func configuration(_ extra: [String: String] = [:]) async throws -> ReliableDBConfiguration {
        var environment = ["DATABASE_URL": url, "DB_CONNECTION_LIMIT": "4", "DB_POOL_TIMEOUT": "5"]
        environment.merge(extra) { _, new in new }
        return try await ReliableDBConfiguration.fromEnvironment(environment, dotEnvPath: nil)
    }
}

/// Runs the example, served for real (`.live`) with the database and its monitor as services of
/// the application, on a scratch database.
func withOrdersApp(
    server: String = "RELIABLEDB_TEST_POSTGRES_URL",
    environment: [String: String] = [:],
    adjust: (inout ReliabilityConfiguration) -> Void = { _ in },
    _ body: @escaping @Sendable (OrdersApp, ScratchDatabase, any TestClientProtocol) async throws -> Void
) async throws {
    let scratch = try await ScratchDatabase.create(variable: server, prefix: "orders")
    do {
        let configuration = try await scratch.configuration(environment)
        var reliability = configuration.reliability
        adjust(&reliability)
        let orders = try OrdersApp(
            configuration: configuration,
            reliability: reliability,
            monitor: .init(interval: .milliseconds(250))
        )
        try await orders.migrate()
        let app = orders.application(port: 0, services: [orders.database, orders.endpoints.monitor])
        try await app.test(.live) { client in try await body(orders, scratch, client) }
    } catch {
        try? await scratch.drop()
        throw error
    }
    try await scratch.drop()
}

func status(_ client: any TestClientProtocol, _ uri: String, _ method: HTTPRequest.Method = .get) async -> Int? {
    try? await client.execute(uri: uri, method: method) { Int($0.status.code) }
}

/// Polls `condition` for up to five seconds.
func eventually(_ condition: () async throws -> Bool) async rethrows -> Bool {
    for _ in 0..<100 {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return false
}

@Suite("Hummingbird example through ReliableDB", .timeLimit(.minutes(1)))
struct HummingbirdOrdersTests {
    @Test func ordersAndHealthRoutesRunThroughThePipeline() async throws {
        try await withOrdersApp { orders, _, client in
            #expect(await status(client, "/api/orders/A-1?cents=500", .post) == 201)
            #expect(await status(client, "/api/orders/A-1?cents=500", .post) == 201, "placing it again is harmless")
            #expect(await status(client, "/api/orders/A-2?cents=700", .post) == 201)
            let count = try await client.execute(uri: "/api/orders/count", method: .get) {
                String(buffer: $0.body)
            }
            #expect(count == "2")
            #expect(await eventually { await status(client, "/api/health/ready") == 200 })
            let metrics = try await client.execute(uri: "/api/health/metrics", method: .get) {
                String(buffer: $0.body)
            }
            #expect(metrics.contains("operation=\"place-order\""))
            let operations = orders.database.metrics().queries.operations
            #expect(operations["place-order"]?.successes == 3)
            #expect(operations["count-orders"]?.successes == 1)
        }
    }

    @Test func aDeadlineStopsASlowQueryOnTheServer() async throws {
        try await withOrdersApp { orders, scratch, _ in
            let started = ContinuousClock.now
            await #expect(throws: DatabaseTimeoutError.self) {
                try await orders.database.query(.read("slow-report", timeout: .milliseconds(300))) { connection in
                    _ = try await connection.query("SELECT pg_sleep(30)", logger: .init(label: "test")).collect()
                }
            }
            #expect(ContinuousClock.now - started < .seconds(2))
            // The CancelRequest is on its way when the caller is released; the server acts on it at once.
            let cancelled = try await eventually { try await scratch.running("%pg_sleep(30)%") == 0 }
            #expect(cancelled, "cancelled on the server, not left running for 30 s")
        }
    }
}

/// The server stops under load: `/api/health/ready` turns 503 and back, and no request waits
/// past its deadline. Runs with the fault suite (scripts/test), which alone stops that server.
@Suite("Hummingbird example under faults", .serialized, .timeLimit(.minutes(2)))
struct HummingbirdExampleFaultTests {
    @Test func aStoppedServerTurnsReadinessOffAndBack() async throws {
        let deadline = Duration.seconds(1)
        try await withOrdersApp(
            server: FaultServer.urlVariable,
            environment: ["DB_CB_TIMEOUT": "1000"],
            adjust: { $0.timeouts.query = deadline }
        ) { _, _, client in
            #expect(await eventually { await status(client, "/api/health/ready") == 200 })
            #expect(await status(client, "/api/orders/B-1", .post) == 201)
            try await FaultServer.control("stop", "fast")
            let stopped = ContinuousClock.now
            var slowest = Duration.zero
            var unready: Duration?
            while ContinuousClock.now - stopped < .seconds(3) {
                let started = ContinuousClock.now
                _ = await status(client, "/api/orders/count")
                slowest = max(slowest, ContinuousClock.now - started)
                if unready == nil, await status(client, "/api/health/ready") == 503 {
                    unready = ContinuousClock.now - stopped
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            try await FaultServer.control("start")
            let restarted = ContinuousClock.now
            // No traffic now: readiness must come back on its own, or no traffic ever would.
            let back = await eventually { await status(client, "/api/health/ready") == 200 }
            let recovery = ContinuousClock.now - restarted
            print(
                "hummingbird example stopped server: readiness 503 after \(unready.map { "\($0)" } ?? "never"),"
                    + " 200 again \(back ? "\(recovery)" : "never") after the start; slowest request \(slowest)"
            )
            #expect(unready != nil, "/api/health/ready turned 503")
            #expect(back, "and 200 again")
            #expect(slowest < deadline + .seconds(1), "no request outlived its deadline: \(slowest)")
            #expect(await status(client, "/api/orders/B-2", .post) == 201, "orders are placed again")
        }
    }
}
