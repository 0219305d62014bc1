import Foundation
import Logging
import PostgresNIO
import Prometheus
import ReliableDB
import ReliableDBHTTP
import ReliableDBPostgres
import ReliableDBPrometheus
import ReliableDBTestSupport
import Testing

/// `DB_MIN_IDLE_CONNECTIONS`: a scale-out, a new instance taking a burst of traffic, warm against
/// cold, over TLS with SCRAM authentication (what a connect costs in production).
@Suite("A warm pool")
struct WarmPoolTests {
    static let limit = 10
    static let minimumIdle = 8

    /// The database of a new instance, as `ReliableDatabase.postgres(configuration:)` builds it
    /// from the environment: `DB_MIN_IDLE_CONNECTIONS` and `DB_READY_AFTER_WARM_UP` when warm.
    static func instance(warm: Bool, applicationName: String) async throws -> ReliableDatabase<PostgresBackend> {
        let url = try TestServer.environment("RELIABLEDB_TEST_POSTGRES_URL")
        var environment = [
            "DATABASE_URL": "\(url)?sslmode=require&application_name=\(applicationName)",
            "DB_CONNECTION_LIMIT": "\(limit)",
        ]
        if warm {
            environment["DB_MIN_IDLE_CONNECTIONS"] = "\(minimumIdle)"
            environment["DB_READY_AFTER_WARM_UP"] = "true"
        }
        let configuration = try await ReliableDBConfiguration.fromEnvironment(environment, dotEnvPath: nil)
        return try ReliableDatabase.postgres(configuration: configuration)
    }

    /// 16 workers for one second, from `start`: every call's latency.
    static func burst(_ db: ReliableDatabase<PostgresBackend>) async throws -> [Duration] {
        let start = ContinuousClock.now
        return try await withThrowingTaskGroup(of: [Duration].self) { group in
            for _ in 0..<16 {
                group.addTask {
                    var latencies: [Duration] = []
                    while ContinuousClock.now - start < .seconds(1) {
                        let began = ContinuousClock.now
                        _ = try await db.query(.read("first-second")) { connection in
                            try await connection.query("SELECT 1", logger: Logger(label: "test")).collect()
                        }
                        latencies.append(ContinuousClock.now - began)
                    }
                    return latencies
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
    }

    static func percentile(_ values: [Duration], _ p: Double) -> Duration {
        let sorted = values.sorted()
        return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
    }

    /// The warm instance opens its minimum idle from the start, at most two connects at a time,
    /// and its readiness waits for them; then both instances take the same burst. The p99 of the
    /// first second and the connects per 100 ms are printed side by side (figures, not
    /// assertions: these machines are shared); the test checks what the pool must do.
    @Test(.timeLimit(.minutes(1)))
    func aWarmInstanceTakesItsFirstSecondWithoutConnecting() async throws {
        let warm = try await Self.instance(warm: true, applicationName: "rdb-warm")
        let monitor = HealthMonitor(database: warm, configuration: .init(interval: .milliseconds(100)))
        let endpoints = HealthEndpoints(
            database: warm,
            monitor: monitor,
            exporter: PrometheusExporter(registry: PrometheusCollectorRegistry())
        )
        endpoints.readiness.markServing()
        let runner = Task { try await monitor.run() }
        // Sampled every 10 ms from the instance's start until it is ready.
        var openedBy100ms: [Int] = []
        var mostConnecting = 0
        var readyAfter: Duration?
        let start = ContinuousClock.now
        var sample = 0
        while ContinuousClock.now - start < .seconds(10) {
            let pool = warm.raw.poolStatistics()
            mostConnecting = max(mostConnecting, warm.raw.connecting)
            if sample % 10 == 0 { openedBy100ms.append(pool.opened) }
            if endpoints.isReady {
                readyAfter = ContinuousClock.now - start
                break
            }
            sample += 1
            try await Task.sleep(for: .milliseconds(10))
        }
        let openedAtReady = warm.raw.poolStatistics().opened
        #expect(readyAfter != nil, "ready once warm")
        #expect(openedAtReady >= Self.minimumIdle, "ready only after the minimum idle was open: \(openedAtReady)")
        #expect(mostConnecting <= 2, "warm-up connects two at a time, not in a burst: \(mostConnecting)")
        var perInterval: [Int] = []
        for (index, opened) in openedBy100ms.enumerated() {
            perInterval.append(opened - (index == 0 ? 0 : openedBy100ms[index - 1]))
        }

        let warmLatencies = try await Self.burst(warm)
        let warmOpenedDuringBurst = warm.raw.poolStatistics().opened - openedAtReady
        runner.cancel()
        _ = await runner.result
        try await warm.shutdown()

        let cold = try await Self.instance(warm: false, applicationName: "rdb-cold")
        #expect(cold.raw.poolStatistics().total == 0, "a cold pool opens nothing before its first call")
        let coldLatencies = try await Self.burst(cold)
        let coldOpened = cold.raw.poolStatistics().opened
        try await cold.shutdown()

        print(
            """
            fault report: scale-out, first second of 16 workers over TLS + SCRAM: \
            warm (DB_MIN_IDLE_CONNECTIONS=\(Self.minimumIdle)) p50 \(Self.percentile(warmLatencies, 0.5)) \
            p99 \(Self.percentile(warmLatencies, 0.99)) max \(warmLatencies.max()!) over \(warmLatencies.count) calls, \
            \(warmOpenedDuringBurst) connects during the burst; cold p50 \(Self.percentile(coldLatencies, 0.5)) \
            p99 \(Self.percentile(coldLatencies, 0.99)) max \(coldLatencies.max()!) over \(coldLatencies.count) calls, \
            \(coldOpened) connects during the burst; warm-up: ready after \(readyAfter.map { "\($0)" } ?? "never"), \
            connects per 100 ms \(perInterval), at most \(mostConnecting) at once
            """
        )
        #expect(
            warmOpenedDuringBurst <= Self.limit - Self.minimumIdle,
            "the warm instance connected before its traffic"
        )
        #expect(coldOpened > warmOpenedDuringBurst, "the cold instance connected during its first second")
    }
}
