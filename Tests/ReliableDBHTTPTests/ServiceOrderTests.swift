import Foundation
import Hummingbird
import Prometheus
import ReliableDB
import ReliableDBHTTP
import ReliableDBHummingbird
import ReliableDBPrometheus
import ReliableDBSQLite
import ServiceLifecycle
import Testing

/// The order `endpoints.services(database:around:)` gives a `ServiceGroup`, which shuts down in
/// reverse: the drain first, the database last, the alert sinks after the monitor that feeds them.
@Suite("The services around an app")
struct ServiceOrderTests {
    /// A stand-in alert sink service; only its place in the list matters here.
    struct Sink: Service {
        func run() async throws {}
    }

    static func services(monitoring: Bool) async throws -> (services: [any Service], monitor: HealthMonitor) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rdb-order-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let db = try ReliableDatabase(
            backend: try SQLiteBackend(path: directory.appendingPathComponent("db.sqlite").path)
        )
        let monitor = HealthMonitor(database: db, configuration: .init(enabled: monitoring))
        let endpoints = HealthEndpoints(
            database: db,
            monitor: monitor,
            exporter: PrometheusExporter(registry: PrometheusCollectorRegistry())
        )
        let services = endpoints.services(database: db, around: Application(router: Router()), alertSinks: [Sink()])
        try await db.shutdown()
        return (services, monitor)
    }

    @Test func theDatabaseFirstThenTheSinksTheMonitorTheAppAndTheDrainLast() async throws {
        let (services, monitor) = try await Self.services(monitoring: true)
        try #require(services.count == 5)
        #expect(services[0] is ReliableDatabase<SQLiteBackend>)
        #expect(services[1] is Sink)
        #expect((services[2] as? HealthMonitor) === monitor)
        #expect(services[3] is any ApplicationProtocol)
        #expect(services[4] is ReadinessDrainService)
    }

    /// A disabled monitor's `run()` returns at once, and a service that returns ends its group.
    @Test func aDisabledMonitorIsLeftOut() async throws {
        let (services, _) = try await Self.services(monitoring: false)
        #expect(services.count == 4)
        #expect(!services.contains { $0 is HealthMonitor })
    }
}
