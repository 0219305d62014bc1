import Foundation
import Logging
import PostgresNIO
import ReliableDB
import ReliableDBPostgres
import ReliableDBTestSupport
import Testing

/// A server whose `max_connections` is used up by other clients, as when a fleet's pools together
/// outgrow it: an instance holding connections keeps serving and sees the fleet's use in its probe
/// (and alerts); an instance holding none is told at once that the server's limit is reached.
@Suite("The server's connection limit", .serialized)
struct ServerConnectionLimitTests {
    @Test(.timeLimit(.minutes(2)))
    func anInstanceWithoutAConnectionIsToldTheLimitAtOnceAndOneWithConnectionsServes() async throws {
        let logger = Logger(label: "test.limit")
        // The instance that holds connections, with its monitor (alerts at the first check here).
        let holding = try ReliableDatabase(
            backend: try PostgresBackend(url: try FaultServers.url(), connectionLimit: 2)
        )
        let monitor = HealthMonitor(
            database: holding,
            configuration: .init(alerts: .init(timings: AlertTimings(all: AlertTiming(for: .zero))))
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<2 {
                group.addTask {
                    _ = try await holding.query(.read("warm")) { _ in try await Task.sleep(for: .milliseconds(50)) }
                }
            }
            try await group.waitForAll()
        }
        let before = try #require(await monitor.checkNow().serverConnections)
        #expect(before.max == 200 && before.inUse >= 2, "\(before)")
        // An instance that probed the server (so knows its figures) and then lost its connection.
        let probedURL = try FaultServers.url()
        let probed = try ReliableDatabase(backend: try PostgresBackend(url: probedURL))
        _ = try await probed.raw.probe(within: .unbounded)
        _ = try await holding.query(.init("terminate")) { connection in
            try await connection.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = \(probedURL.applicationName)",
                logger: logger
            ).collect()
        }
        #expect(try await eventually { probed.metrics().pool.total == 0 })

        // Other clients take every slot left.
        var others: [Observer] = []
        var refusal = ""
        let url = try FaultServers.url()
        while others.count < 250 {
            do {
                others.append(try await Observer.connect(url))
            } catch let error as PSQLError {
                refusal = error.serverInfo?[.sqlState] ?? "\(error.code)"
                break
            }
        }
        #expect(refusal == "53300", "the server refused with 53300 after \(others.count) more connections")

        // An instance that holds no connection: an answer at once, naming the limit.
        let fresh = try ReliableDatabase(backend: try PostgresBackend(url: try FaultServers.url()))
        let start = ContinuousClock.now
        var answer = ""
        do {
            _ = try await fresh.query(.read("fresh")) { _ in 1 }
            Issue.record("a connection was made although the server was full")
        } catch {
            answer = "\(error)"
        }
        let waited = ContinuousClock.now - start
        #expect(waited < .seconds(2), "answered after \(waited), not at once (the pool timeout is 10 s)")
        #expect(answer.contains("connection limit is reached") && answer.contains("53300"), "\(answer)")

        // The instance that holds connections keeps serving, and its probe sees the full server.
        for _ in 0..<20 {
            #expect(try await holding.query(.read("still")) { _ in 1 } == 1)
        }
        let full = await monitor.checkNow()
        let connections = try #require(full.serverConnections)
        #expect(connections.utilization >= 100, "\(connections)")
        #expect(full.activeAlerts.contains { $0.kind == .serverConnections }, "\(full.activeAlerts.map(\.kind))")
        let report = String(decoding: HealthReport.json(full), as: UTF8.self)
        #expect(report.contains("\"serverConnections\""), "\(report)")

        // An instance that probed before names the figures its probe read.
        var named = ""
        do {
            _ = try await probed.query(.read("probed")) { _ in 1 }
            Issue.record("a connection was made although the server was full")
        } catch {
            named = "\(error)"
        }
        #expect(named.contains("max_connections = 200, 3 reserved for superusers"), "\(named)")
        print(
            "fault report: server connection limit: fresh instance answered in \(waited): \(answer); probed: \(named)"
        )

        for other in others { try? await other.close() }
        #expect(
            try await eventually { (try? await fresh.query(.read("again")) { _ in 1 }) == 1 },
            "the fresh instance connects once slots are free"
        )
        try await fresh.shutdown()
        try await probed.shutdown()
        try await holding.shutdown()
    }
}
