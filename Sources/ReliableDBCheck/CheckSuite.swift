import Foundation
import Logging
import ReliableDB
import ReliableDBPostgres
import ReliableDBSQLite

/// Which scenarios a run adds to the connection checks every run starts with.
package struct CheckScenarios: Sendable {
    /// Circuit breaker, degradation, timeouts, performance and recovery.
    package var reliability: Bool
    /// The health monitor, the metrics and the HTTP endpoints.
    package var health: Bool

    package init(reliability: Bool = false, health: Bool = false) {
        self.reliability = reliability
        self.health = health
    }

    /// Every scenario, as `check --all` runs them.
    package static let all = CheckScenarios(reliability: true, health: true)
}

/// `reliabledb check` without its command line: opens the configured database, runs the chosen
/// scenarios against it and closes it again.
package enum CheckSuite {
    /// Opens the database `configuration` names through the public factories, as an application
    /// would, so the check proves the same wiring.
    /// - Throws: when the database cannot be opened at all (an unusable SQLite path, an invalid
    ///   pipeline configuration); a server that does not answer is a failed check instead.
    package static func run(
        configuration: ReliableDBConfiguration,
        scenarios: CheckScenarios
    ) async throws -> CheckReport {
        let results: [CheckResult]
        switch configuration.database {
        case .sqlite:
            let db = try ReliableDatabase.sqlite(configuration: configuration)
            results = await run(SQLiteCheckTarget(database: db), scenarios: scenarios)
            try? await db.shutdown()
        case .postgres:
            // The checks report every failure themselves; the driver's log would only repeat them.
            var quiet = Logger(label: "reliabledb.check")
            quiet.logLevel = .critical
            let db = try ReliableDatabase.postgres(configuration: configuration, logger: quiet)
            results = await run(PostgresCheckTarget(database: db), scenarios: scenarios)
            try? await db.shutdown()
        }
        return CheckReport(database: "\(configuration.database)", results: results)
    }

    /// Runs the connection checks, then `scenarios` in a fixed order: the breaker, degradation
    /// and timeouts first, then monitoring, then the performance and recovery measurements, which
    /// a struggling database would distort.
    package static func run<Target: CheckTarget>(_ target: Target, scenarios: CheckScenarios) async -> [CheckResult] {
        let runner = CheckRunner(target: target)
        await runner.runConnection()
        // Without a connection the other scenarios only repeat the same failure.
        guard runner.results.allSatisfy(\.passed) else { return runner.results }
        do {
            if scenarios.reliability {
                try await runner.runReliability()
                try await runner.runDegradation()
                try await runner.runTimeouts()
            }
            if scenarios.health { try await runner.runMonitoring() }
            if scenarios.reliability {
                await runner.runPerformance()
                try await runner.runRecovery()
            }
        } catch {
            // A scenario's own configuration was refused: report it as a failed check.
            await runner.check("setup", "scenario configuration") { throw error }
        }
        return runner.results
    }
}

/// A run's results as `check --json` prints them, and as the table `check` prints otherwise.
package struct CheckReport: Codable, Sendable {
    /// The database checked, as its configuration describes it (without a password).
    package var database: String
    package var passed: Int
    package var failed: Int
    package var results: [CheckResult]

    package init(database: String, results: [CheckResult]) {
        self.database = database
        failed = results.filter { !$0.passed }.count
        passed = results.count - failed
        self.results = results
    }

    /// Pretty-printed with sorted keys, so the output is stable for scripts that compare it.
    package func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    /// One line per check, its columns as wide as their longest entry, then the totals.
    package var table: String {
        let groupWidth = max(5, results.map(\.group.count).max() ?? 0)
        let nameWidth = max(5, results.map(\.name.count).max() ?? 0)
        func pad(_ text: String, _ width: Int) -> String { text.padding(toLength: width, withPad: " ", startingAt: 0) }
        var lines = ["ReliableDB check against \(database)", ""]
        lines.append("\(pad("GROUP", groupWidth))  \(pad("CHECK", nameWidth))  RESULT      TIME  DETAIL")
        for result in results {
            let time = String(format: "%7.1f ms", result.durationMs)
            lines.append(
                "\(pad(result.group, groupWidth))  \(pad(result.name, nameWidth))  \(result.passed ? "PASS" : "FAIL")  \(time)  \(result.detail)"
            )
        }
        lines.append("")
        lines.append(
            failed == 0 ? "\(results.count) passed, 0 failed" : "\(results.count - failed) passed, \(failed) failed"
        )
        return lines.joined(separator: "\n")
    }
}
