import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Prometheus
import ReliableDB
import ReliableDBHTTP
import ReliableDBHummingbird
import ReliableDBPrometheus
import ReliableDBTesting
import Testing

/// Readiness while the primary is gone: every replica of a service shares it, so taking them all
/// out of the load balancer would also stop the reads a standby serves.
@Suite("Readiness with a standby")
struct StandbyReadinessTests {
    @Test func readinessStaysUpWhileAStandbyServesReadsAndFollowsItsBreaker() async throws {
        let backend = ScriptedBackend()
        backend.standbyReads = .onFallback
        let db = try ReliableDatabase(backend: backend, clock: ManualClock())
        let monitor = HealthMonitor(database: db)
        let endpoints = HealthEndpoints(
            database: db,
            monitor: monitor,
            exporter: PrometheusExporter(registry: PrometheusCollectorRegistry())
        )
        endpoints.readiness.markServing()
        await monitor.checkNow()
        #expect(endpoints.isReady, "the primary answers")

        backend.reachable = false
        db.circuitBreaker.forceState(.open)
        await monitor.checkNow()
        #expect(!endpoints.isReady, "the primary is gone and no standby answers")
        #expect(endpoints.ready().status == 503)

        backend.standbyAnswers = true
        #expect(endpoints.isReady, "a standby answers reads")
        #expect(endpoints.ready().status == 200)
        #expect(endpoints.health().status == 503, "health still says the primary is gone")

        db.standbyCircuitBreaker?.forceState(.forcedOpen)
        #expect(!endpoints.isReady, "the standby's breaker rejects reads")

        endpoints.readiness.beginDraining()
        db.standbyCircuitBreaker?.forceState(.closed)
        #expect(!endpoints.isReady, "draining wins")
    }

    @Test func oneServerNeverCountsAStandby() async throws {
        let backend = ScriptedBackend()
        backend.standbyAnswers = true  // ignored: no standby breaker without standby reads
        let db = try ReliableDatabase(backend: backend, clock: ManualClock())
        #expect(!db.standbyServesReads)
    }
}

/// A Hummingbird route returns `withFallback`'s answer as is; a degraded one carries the header.
@Suite("Degraded answers over Hummingbird")
struct DegradedHummingbirdTests {
    @Test func aDegradedAnswerCarriesItsHeader() async throws {
        let clock = ManualClock()
        let database = try ReliableDatabase(backend: ScriptedBackend(), clock: clock)
        let fallback = ReadFallback(key: "orders", maxAge: .seconds(60))
        let router = Router()
        router.get("orders") { _, _ in
            try await database.withFallback(fallback) {
                try await database.execute(.read("orders")) { _ in "A-1, A-2" }
            }
        }
        try await Application(router: router).test(.router) { client in
            try await client.execute(uri: "/orders", method: .get) { response in
                #expect(String(buffer: response.body) == "A-1, A-2")
                #expect(response.headers[HTTPField.Name(Degradation.headerName)!] == nil)
            }
            database.circuitBreaker.forceState(.forcedOpen)
            clock.advance(by: .seconds(7))
            try await client.execute(uri: "/orders", method: .get) { response in
                #expect(response.status == .ok)
                #expect(String(buffer: response.body) == "A-1, A-2")
                #expect(response.headers[HTTPField.Name(Degradation.headerName)!] == "cached; age=7")
            }
        }
    }
}
