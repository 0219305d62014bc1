import ArgumentParser
import Foundation
import Logging
import ReliableDB
import ReliableDBPostgres
import ReliableDBSQLite

struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Test the configured database connection and the reliability features against it.",
        discussion: """
            With no flag: the basic connection test. --reliability adds the circuit-breaker, timeout, \
            performance and recovery scenarios; --health the monitoring checks and the HTTP endpoints; \
            --all runs everything. Exits non-zero when any check fails. Leaves no tables behind.
            """
    )

    @Flag(help: "Run the circuit breaker, timeout, performance and recovery scenarios.")
    var reliability = false

    @Flag(help: "Run the health check, metrics and HTTP endpoint checks.")
    var health = false

    @Flag(help: "Run every check.")
    var all = false

    @Flag(help: "Print the results as JSON.")
    var json = false

    @Option(name: .long, help: "Read variables from this .env file when it exists.")
    var envFile = ".env"

    func run() async throws {
        let configuration: ReliableDBConfiguration
        do {
            configuration = try await ReliableDBConfiguration.fromEnvironment(dotEnvPath: envFile)
        } catch {
            printError(error.description)
            throw ExitCode(2)
        }
        let results: [CheckResult]
        switch configuration.database {
        case .sqlite(let path):
            let backend = try SQLiteBackend(
                path: path,
                connectionLimit: configuration.connectionLimit,
                poolTimeout: configuration.poolTimeout
            )
            let db = try ReliableDatabase(backend: backend, configuration: configuration.reliability)
            results = await run(SQLiteCheckTarget(database: db))
            try? await db.shutdown()
        case .postgres:
            var quiet = Logger(label: "reliabledb.check")
            quiet.logLevel = .critical
            let db = try ReliableDatabase.postgres(configuration: configuration, logger: quiet)
            results = await run(PostgresCheckTarget(database: db))
            try? await db.shutdown()
        }
        let failed = results.filter { !$0.passed }.count
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let document = CheckReport(
                database: "\(configuration.database)",
                passed: results.count - failed,
                failed: failed,
                results: results
            )
            print(String(decoding: try encoder.encode(document), as: UTF8.self))
        } else {
            print(Self.table(results, database: "\(configuration.database)"))
        }
        if failed > 0 { throw ExitCode(1) }
    }

    private func run<Target: CheckTarget>(_ target: Target) async -> [CheckResult] {
        let runner = CheckRunner(target: target)
        await runner.runConnection()
        // Without a connection the other scenarios only repeat the same failure.
        guard runner.results.allSatisfy(\.passed) else { return runner.results }
        do {
            if reliability || all {
                try await runner.runReliability()
                try await runner.runDegradation()
                try await runner.runTimeouts()
            }
            if health || all { try await runner.runMonitoring() }
            if reliability || all {
                await runner.runPerformance()
                try await runner.runRecovery()
            }
        } catch {
            // A scenario's own configuration was refused: report it as a failed check.
            await runner.check("setup", "scenario configuration") { throw error }
        }
        return runner.results
    }

    static func table(_ results: [CheckResult], database: String) -> String {
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
        let failed = results.filter { !$0.passed }.count
        lines.append("")
        lines.append(
            failed == 0 ? "\(results.count) passed, 0 failed" : "\(results.count - failed) passed, \(failed) failed"
        )
        return lines.joined(separator: "\n")
    }
}

struct CheckReport: Codable {
    var database: String
    var passed: Int
    var failed: Int
    var results: [CheckResult]
}
