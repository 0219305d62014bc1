import ReliableDB
import ReliableDBHTTP
import ReliableDBTesting
import ReliableDBVapor
import Testing
import VaporTesting

/// `app.reliableDB` in a real Vapor application (VaporTesting, in memory): the four routes, the
/// monitor started by the app's boot, readiness following the database, and shutdown closing it.
@Suite("ReliableDB in a Vapor application")
struct ReliableDBVaporTests {
    @Test func theFourRoutesFollowTheDatabaseAndShutdownClosesIt() async throws {
        let backend = ScriptedBackend()
        let database = try ReliableDatabase(backend: backend)
        try await withApp { app in
            app.reliableDB.use(database, monitor: .init(interval: .seconds(60)))
            app.reliableDB.mountHealthRoutes(at: "api", "health")

            let tester = try app.testing()  // boots the app, which starts the monitor
            #expect(await eventually { app.reliableDB.monitor.hasChecked }, "the monitor ran its first check")
            try await tester.test(.GET, "api/health/ready") { response in
                #expect(response.status == .ok, "booted, checked, and the request proves the server is up")
            }
            try await tester.test(.GET, "api/health") { response in
                #expect(response.status == .ok)
                #expect(response.headers.first(name: "Content-Type") == "application/json")
                #expect(response.body.string.contains("\"status\":\"healthy\""))
            }
            try await tester.test(.GET, "api/health/live") { response in
                #expect(response.status == .ok)
            }
            try await tester.test(.GET, "api/health/metrics") { response in
                #expect(response.status == .ok)
                #expect(response.body.string.contains("db_health_score 100"))
            }

            backend.reachable = false
            await app.reliableDB.monitor.checkNow()
            try await tester.test(.GET, "api/health/ready") { response in
                #expect(response.status == .serviceUnavailable, "the database is unreachable")
            }
            try await tester.test(.GET, "api/health") { response in
                #expect(response.status == .serviceUnavailable)
            }
            backend.reachable = true
            await app.reliableDB.monitor.checkNow()
            try await tester.test(.GET, "api/health/ready") { response in
                #expect(response.status == .ok, "and back")
            }
            #expect(backend.shutdowns == 0, "running, not closed")
        }
        #expect(backend.shutdowns == 1, "the app's shutdown closed the database")
    }

    /// `app.reliableDB.use(database)` with nothing else: the monitor checks every
    /// `DB_HEALTH_CHECK_INTERVAL` with the environment's thresholds, as the database was built.
    @Test func theMonitorTakesTheEnvironmentTheDatabaseWasBuiltFrom() async throws {
        let environment = try await ReliableDBConfiguration.fromEnvironment(
            ["DB_HEALTH_CHECK_INTERVAL": "1500", "DB_ALERT_ERROR_RATE_THRESHOLD": "12"],
            dotEnvPath: nil
        )
        let database = try ReliableDatabase(
            backend: ScriptedBackend(),
            configuration: environment.reliability,
            environmentConfiguration: environment
        )
        try await withApp { app in
            app.reliableDB.use(database)
            #expect(app.reliableDB.monitor.configuration.interval == .milliseconds(1_500))
            #expect(app.reliableDB.monitor.configuration.thresholds.errorRate == 12)
        }
    }

    /// A route returns `withFallback`'s answer as is; a degraded one carries the header.
    @Test func aDegradedAnswerCarriesItsHeader() async throws {
        let clock = ManualClock()
        let database = try ReliableDatabase(backend: ScriptedBackend(), clock: clock)
        let fallback = ReadFallback(key: "orders", maxAge: .seconds(60))
        try await withApp { app in
            app.get("orders") { _ in
                try await database.withFallback(fallback) {
                    try await database.execute(.read("orders")) { _ in "A-1, A-2" }
                }
            }
            let tester = try app.testing()
            try await tester.test(.GET, "orders") { response in
                #expect(response.body.string == "A-1, A-2")
                #expect(response.headers.first(name: Degradation.headerName) == nil, "a fresh answer")
            }
            database.circuitBreaker.forceState(.forcedOpen)
            clock.advance(by: .seconds(7))
            try await tester.test(.GET, "orders") { response in
                #expect(response.status == .ok)
                #expect(response.body.string == "A-1, A-2")
                #expect(response.headers.first(name: Degradation.headerName) == "cached; age=7")
            }
        }
    }

    @Test func shutdownTurnsReadinessDraining() async throws {
        let database = try ReliableDatabase(backend: ScriptedBackend())
        var readiness: Readiness?
        try await withApp { app in
            app.reliableDB.use(database)
            app.reliableDB.mountHealthRoutes(at: "api", "health")
            readiness = app.reliableDB.endpoints.readiness
            let tester = try app.testing()
            #expect(await eventually { app.reliableDB.monitor.hasChecked })
            try await tester.test(.GET, "api/health/ready") { response in
                #expect(response.status == .ok)
            }
        }
        #expect(readiness?.phase == .draining)
    }
}

/// Polls `condition` for up to 5 s.
func eventually(_ condition: () -> Bool) async -> Bool {
    for _ in 0..<500 {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}
