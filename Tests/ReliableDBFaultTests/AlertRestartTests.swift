import Foundation
import ReliableDB
import ReliableDBPostgres
import ReliableDBTestSupport
import Synchronization
import Testing

/// How many notifications one restart of a real PostgreSQL sends, per alert, with checks every
/// second under load: with every timing zero (how alerts behaved before `for` and
/// `keep_firing_for`) and with the defaults. The defaults must turn the restart into at most one
/// firing and one resolution per alert.
@Suite("Alert notifications through a restart", .serialized)
struct AlertRestartTests {
    final class Recorder: AlertSink {
        private let notifications = Mutex<[AlertNotification]>([])

        func deliver(_ notification: AlertNotification) {
            notifications.withLock { $0.append(notification) }
        }

        var all: [AlertNotification] { notifications.withLock { $0 } }

        /// Firings and resolutions per alert, repeats left out.
        var counts: [AlertKind: (fired: Int, resolved: Int)] {
            var counts: [AlertKind: (fired: Int, resolved: Int)] = [:]
            for notification in all where !notification.isRepeat {
                var count = counts[notification.kind] ?? (0, 0)
                if notification.status == .firing { count.fired += 1 } else { count.resolved += 1 }
                counts[notification.kind] = count
            }
            return counts
        }
    }

    /// Stops the fault server for `outage` under read load, starts it again, and returns what the
    /// monitor sent until every fired alert resolved (or `settle` passed).
    func restart(
        immediate: Bool,
        outage: Duration = .seconds(3),
        settle: Duration = .seconds(75)
    ) async throws -> Recorder {
        // Only the server and the interval: every other setting is the default a user gets.
        let environment = try await ReliableDBConfiguration.fromEnvironment(
            [
                "DATABASE_URL": try FaultServers.environment("RELIABLEDB_TEST_FAULT_POSTGRES_URL"),
                "DB_HEALTH_CHECK_INTERVAL": "1000",
            ],
            dotEnvPath: nil
        )
        let db = try ReliableDatabase.postgres(configuration: environment)
        var configuration = HealthMonitor.Configuration(environment)
        if immediate { configuration.alerts.timings = .immediate }
        let recorder = Recorder()
        let monitor = HealthMonitor(database: db, configuration: configuration, sinks: [recorder])
        let stop = Atomic<Bool>(false)
        let monitoring = Task { try await monitor.run() }
        let load = Task {
            while !stop.load(ordering: .acquiring) {
                _ = try? await db.query(.read("restart-read")) { connection in
                    _ = try await connection.query("SELECT 1", logger: .init(label: "test.alerts")).collect()
                }
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
        do {
            try await Task.sleep(for: .seconds(2))
            try await FaultServers.controlOutageServer("stop", "fast")
            try await Task.sleep(for: outage)
            try await FaultServers.controlOutageServer("start")
        } catch {
            try? await FaultServers.controlOutageServer("start")
            throw error
        }
        let started = ContinuousClock.now
        try await Task.sleep(for: .seconds(3))
        // Until every alert that fired has resolved.
        while ContinuousClock.now - started < settle,
            recorder.counts.values.contains(where: { $0.fired > $0.resolved })
        {
            try await Task.sleep(for: .milliseconds(250))
        }
        stop.store(true, ordering: .releasing)
        await load.value
        monitoring.cancel()
        _ = try? await monitoring.value
        try await db.shutdown()
        return recorder
    }

    static func describe(_ counts: [AlertKind: (fired: Int, resolved: Int)]) -> String {
        counts.sorted { $0.key.rawValue < $1.key.rawValue }
            .map { "\($0.key.rawValue) \($0.value.fired)/\($0.value.resolved)" }
            .joined(separator: ", ")
    }

    @Test(.timeLimit(.minutes(3)), arguments: [3, 10])
    func oneRestartPagesOncePerAlert(outageSeconds: Int) async throws {
        let outage = Duration.seconds(outageSeconds)
        let before = try await restart(immediate: true, outage: outage).counts
        let after = try await restart(immediate: false, outage: outage).counts
        print(
            "fault report: alerts for one \(outageSeconds) s restart, checks every 1 s, fired/resolved per alert:"
                + " every timing zero \(Self.describe(before)); the defaults \(Self.describe(after))"
        )
        #expect(after[.databaseUnreachable]?.fired == 1, "the restart paged: \(Self.describe(after))")
        for (kind, count) in after {
            #expect(count.fired <= 1 && count.resolved <= 1, "\(kind.rawValue) flapped: \(Self.describe(after))")
            #expect(count.fired == count.resolved, "\(kind.rawValue) did not resolve: \(Self.describe(after))")
        }
        for kind in AlertTimings.thresholdKinds {
            #expect(after[kind] == nil, "\(kind.rawValue) fired on a restart: \(Self.describe(after))")
        }
    }
}
