import AsyncHTTPClient
import Foundation
import ReliableDB
import ReliableDBTestSupport
import Testing

/// `reliabledb serve --alert-format alertmanager` feeding a real Alertmanager (started by
/// scripts/test with `resolve_timeout: 10s`) through a real outage: the server stopped for longer
/// than the resolve timeout. `database_unreachable` fires at once and resolves
/// `DB_ALERT_KEEP_FIRING_FOR` after the server answers again.
@Suite("Alerts in a real Alertmanager")
struct AlertmanagerTests {
    @Test(.timeLimit(.minutes(2)))
    func anOutageStaysActiveWithItsCauseForAsLongAsItLastsThenResolves() async throws {
        let alertmanager = try FaultServers.environment("RELIABLEDB_TEST_ALERTMANAGER_URL")
        let url = try FaultServers.url("RELIABLEDB_TEST_FAULT_POSTGRES_URL")
        let password = try FaultServers.environment("RELIABLEDB_TEST_POSTGRES_PASSWORD")
        let server = try ServerProcess(
            binary: reliabledbBinary,
            arguments: ["serve", "--port", "0", "--env-file", "/nonexistent.env", "--alert-format", "alertmanager"],
            environment: [
                "DATABASE_URL":
                    "postgres://\(url.username):\(password)@\(url.host):\(url.port)/\(url.database)?sslmode=disable",
                "DB_HEALTH_CHECK_INTERVAL": "500",
                "DB_ALERT_WEBHOOK_URL": "\(alertmanager)/api/v2/alerts",
                // Shorter than the 30 s default, so the resolution lands within this test's wait.
                "DB_ALERT_KEEP_FIRING_FOR": "3000",
            ]
        )
        let port = try await server.waitForPort()
        #expect(try await eventually { try await fetch("http://127.0.0.1:\(port)/api/health/live").status == 200 })
        #expect(try await unreachableAlerts(alertmanager, port: url.port).isEmpty, "nothing fires while it is up")

        try await FaultServers.controlOutageServer("stop", "fast")
        let stopped = ContinuousClock.now
        var alert: [String: Any]?
        do {
            #expect(try await eventually { try await !unreachableAlerts(alertmanager, port: url.port).isEmpty })
            alert = try await unreachableAlerts(alertmanager, port: url.port).first
            let firedAfter = ContinuousClock.now - stopped
            // Past Alertmanager's 10 s resolve_timeout: the alert must still be active throughout.
            var checks = 0
            var missing = 0
            while ContinuousClock.now - stopped < .seconds(16) {
                try await Task.sleep(for: .milliseconds(500))
                checks += 1
                if try await unreachableAlerts(alertmanager, port: url.port).isEmpty { missing += 1 }
            }
            print(
                "fault report: alertmanager: database_unreachable active \(firedAfter) after the stop;",
                "missing in \(missing) of \(checks) checks over 16 s"
            )
            #expect(missing == 0, "the alert stays active for as long as the database is down")
        }
        try await FaultServers.controlOutageServer("start")
        let started = ContinuousClock.now
        #expect(try await eventually { try await unreachableAlerts(alertmanager, port: url.port).isEmpty })
        let resolvedAfter = ContinuousClock.now - started
        print("fault report: alertmanager: resolved \(resolvedAfter) after the restart")
        #expect(resolvedAfter >= .seconds(3), "kept firing for DB_ALERT_KEEP_FIRING_FOR once the server answered")

        let labels = alert?["labels"] as? [String: String] ?? [:]
        let annotations = alert?["annotations"] as? [String: String] ?? [:]
        #expect(labels["severity"] == "critical")
        #expect(labels["db_host"] == url.host)
        #expect(labels["db_name"] == url.database)
        #expect(labels["service"] != nil && labels["instance"] != nil && labels["backend"] == "postgresql")
        let cause = annotations["cause"] ?? ""
        print("fault report: alertmanager: cause annotation: \(cause)")
        #expect(cause.lowercased().contains("refused"), "the cause is named: \(cause)")
        #expect(!"\(alert ?? [:])".contains(password), "no credential in the alert")

        server.signal(SIGTERM)
        _ = await server.exitStatus()
        #expect(!server.standardError.contains(password))
    }

    /// The active `database_unreachable` alerts for the server on `port`.
    private func unreachableAlerts(_ alertmanager: String, port: Int) async throws -> [[String: Any]] {
        let response = try await fetch("\(alertmanager)/api/v2/alerts?active=true")
        let alerts = try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [[String: Any]] ?? []
        return alerts.filter { alert in
            let labels = alert["labels"] as? [String: String] ?? [:]
            return labels["alertname"] == "database_unreachable" && labels["db_port"] == String(port)
        }
    }
}
