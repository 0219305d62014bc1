import Foundation
import Logging
import PostgresNIO
import Prometheus
import ReliableDB
import ReliableDBPrometheus
import ReliableDBTestSupport
import ReliableDBTesting
import Testing

@testable import ReliableDBPostgres

/// `DB_LEAK_DETECTION_THRESHOLD` and the holders a pool timeout names.
@Suite("Leaks found, exhaustion explained")
struct LeakDetectionTests {
    /// On the manual clock: a lease is reported once, when it reaches the threshold and not
    /// before, in the order they were taken; its return is logged; nothing runs while nothing is
    /// leased long enough; a pool timeout's holders are bounded and longest first.
    @Test func aLeaseIsReportedOnceAtTheThresholdAndItsReturnLogged() {
        let clock = ManualClock()
        let logs = CapturedLogs()
        let registry = LeaseRegistry(threshold: .seconds(2), clock: clock, logger: logs.logger())
        let export = registry.leased(
            by: LeaseHolder(operation: "orders.export", file: "App/Orders.swift", line: 42),
            at: clock.now
        )
        clock.advance(by: .milliseconds(500))
        let list = registry.leased(
            by: LeaseHolder(operation: "orders.list", file: "App/Orders.swift", line: 7),
            at: clock.now
        )
        clock.advance(by: .milliseconds(1499))
        #expect(logs.records.isEmpty, "not yet at the threshold")
        clock.advance(by: .milliseconds(1))
        #expect(logs.lines.count == 1)
        #expect(
            logs.lines.first?.contains("held for 2000 ms by orders.export (App/Orders.swift:42)") == true,
            "\(logs.lines)"
        )
        clock.advance(by: .seconds(10))
        #expect(logs.lines.count == 2, "each lease once: \(logs.lines)")
        #expect(logs.lines.last?.contains("orders.list (App/Orders.swift:7)") == true)
        registry.returned(list)
        #expect(
            logs.lines.last?.contains("held by orders.list (App/Orders.swift:7) came back after 11.5 s") == true,
            "\(logs.lines)"
        )
        registry.returned(export)
        #expect(logs.lines.count == 4)
        // A short lease is never reported, and holders are bounded.
        var numbers: [UInt64] = []
        for n in 0..<8 {
            numbers.append(
                registry.leased(by: LeaseHolder(operation: "op\(n)", file: "F.swift", line: 1), at: clock.now)
            )
            clock.advance(by: .milliseconds(100))
        }
        let holders = registry.holders(at: clock.now)
        #expect(holders.count == LeaseRegistry.namedInErrors + 1)
        #expect(holders.first == "op0 (F.swift:1) for 800 ms" && holders.last == "3 more", "\(holders)")
        for number in numbers { registry.returned(number) }
        clock.advance(by: .seconds(5))
        #expect(logs.lines.count == 4, "\(logs.lines)")
        #expect(registry.holders(at: clock.now).isEmpty)
    }

    /// Against the real server, with one connection: a closure that holds it past the threshold
    /// logs one warning with its call site and counts a leak; a call that times out waiting for
    /// the pool meanwhile names it in its error; its return is logged.
    @Test(.timeLimit(.minutes(1)))
    func aHeldConnectionIsWarnedAboutAndNamedByAPoolTimeout() async throws {
        let logs = CapturedLogs()
        let exporter = PrometheusExporter(registry: PrometheusCollectorRegistry())
        let backend = try PostgresBackend(
            url: try TestServer.url(),
            connectionLimit: 1,
            poolTimeout: .milliseconds(500),
            leakDetectionThreshold: .milliseconds(300),
            logger: logs.logger(label: "test.leaks")
        )
        let db = try ReliableDatabase(
            backend: backend,
            instruments: ReliabilityInstruments(factory: exporter.metricsFactory)
        )
        for _ in 0..<20 { _ = try await db.query(.read("quick")) { _ in 1 } }
        #expect(!logs.lines.contains { $0.contains("held for") }, "short leases are not leaks")

        let holding = Task {
            let callLine = #line + 1
            return try await db.query(OperationOptions("orders.export")) { connection in
                _ = try await connection.query("SELECT 1", logger: Logger(label: "test")).collect()
                try await Task.sleep(for: .milliseconds(1200))
                return callLine
            }
        }
        try await Task.sleep(for: .milliseconds(500))
        let timeout = await #expect(throws: DatabasePoolTimeoutError.self) {
            try await db.query(OperationOptions("orders.list", retries: false)) { _ in () }
        }
        let callLine = try await holding.value
        let site = "orders.export (ReliableDBPostgresTests/LeakDetectionTests.swift:\(callLine))"
        let message = timeout.map { "\($0)" } ?? ""
        print("fault report: pool timeout while a lease was held: \(message)")
        #expect(message.contains("held by \(site) for "), "\(message)")
        let warnings = logs.records.filter { $0.level == .warning && $0.message.contains("held for") }
        #expect(warnings.count == 1, "\(logs.lines)")
        #expect(warnings.first?.message.contains(site) == true, "\(logs.lines)")
        #expect(logs.lines.contains { $0.contains("held by \(site) came back after") }, "\(logs.lines)")
        let text = exporter.render(metrics: db.metrics(), health: nil)
        #expect(text.contains("db_connection_leaks_total 1"), "\(text)")
        try await db.shutdown()
    }
}
