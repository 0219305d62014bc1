import Foundation
import Hummingbird
import HummingbirdTesting
import Prometheus
import ReliableDB
import ReliableDBHTTP
import ReliableDBHummingbird
import ReliableDBPostgres
import ReliableDBPrometheus
import Testing

extension PostgresBackendTests {
    @Test func aStoppedServerFlipsReadyAndHealthWhileLiveStays200() async throws {
        let db = try TestServer.open(try TestServer.outageURL(), connectionLimit: 2, poolTimeout: .seconds(1))
        let monitor = HealthMonitor(database: db, configuration: .init(interval: .milliseconds(200)))
        let endpoints = HealthEndpoints(
            database: db,
            monitor: monitor,
            exporter: PrometheusExporter(registry: PrometheusCollectorRegistry())
        )
        endpoints.readiness.markServing()
        let runner = Task { try await monitor.run() }
        let router = Router()
        router.addRoutes(endpoints.routes(), atPath: "/api/health")
        try await Application(router: router).test(.router) { client in
            func status(_ path: String) async throws -> Int {
                try await client.execute(uri: path, method: .get) { Int($0.status.code) }
            }
            #expect(try await eventually { try await status("/api/health/ready") == 200 })
            #expect(try await status("/api/health") == 200)

            try await TestServer.control("stop")
            #expect(try await eventually { try await status("/api/health/ready") == 503 })
            #expect(try await status("/api/health") == 503)
            #expect(try await status("/api/health/live") == 200, "a database outage must not fail liveness")
            #expect(try await status("/api/health/metrics") == 200)

            try await TestServer.control("start")
            #expect(try await eventually(within: .seconds(30)) { try await status("/api/health/ready") == 200 })
            #expect(try await status("/api/health") == 200)
        }
        runner.cancel()
        try await runner.value
        try await db.shutdown()
    }
}
