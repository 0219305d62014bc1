import Foundation
import ReliableDB
import ReliableDBCheck
import ReliableDBPostgres
import ReliableDBSQLite
import ReliableDBTestSupport
import Testing

/// Each `reliabledb check` scenario called as a library, on a real SQLite file and on the real
/// PostgreSQL servers scripts/test starts: every scenario passes on a working database, and fails,
/// naming the reason, on one that cannot be reached or is busy. One at a time: the performance
/// checks measure time, which parallel scenarios would distort.
@Suite("The check scenarios, called as a library", .serialized, .timeLimit(.minutes(2)))
struct CheckScenarioTests {
    /// Runs `scenario` alone against `target` and returns its results.
    static func run<Target: CheckTarget>(_ scenario: Scenario, on target: Target) async throws -> [CheckResult] {
        let runner = CheckRunner(target: target)
        try await scenario.run(runner)
        return runner.results
    }

    // MARK: Passing

    @Test(arguments: Scenario.allCases)
    func passesOnSQLite(_ scenario: Scenario) async throws {
        let file = try SQLiteFile()
        let db = try ReliableDatabase.sqlite(configuration: try await file.configuration())
        let results = try await Self.run(scenario, on: SQLiteCheckTarget(database: db))
        try await db.shutdown()
        #expect(results.map(\.name) == scenario.checks)
        #expect(results.allSatisfy { $0.group == scenario.rawValue })
        for result in results where !result.passed { Issue.record("\(result.line)") }
        #expect(try file.tables().allSatisfy { !$0.hasPrefix("reliabledb_check") }, "no scratch table left")
    }

    @Test(arguments: Scenario.allCases)
    func passesOnPostgreSQL(_ scenario: Scenario) async throws {
        let scratch = try await ScratchDatabase.create(prefix: "check")
        do {
            let db = try ReliableDatabase.postgres(configuration: try await TestPostgres.configuration(scratch.url))
            let results = try await Self.run(scenario, on: PostgresCheckTarget(database: db))
            try await db.shutdown()
            #expect(results.map(\.name) == scenario.checks)
            #expect(results.allSatisfy { $0.group == scenario.rawValue })
            for result in results where !result.passed { Issue.record("\(result.line)") }
            var database = scratch.server
            database.path = "/\(scratch.name)"
            let leftovers = try await SideConnection.with(database) {
                try await $0.int("SELECT count(*)::int FROM pg_tables WHERE tablename LIKE 'reliabledb_check_%'")
            }
            #expect(leftovers == 0, "no scratch table left")
        } catch {
            try? await scratch.drop()
            throw error
        }
        try await scratch.drop()
    }

    // MARK: Failing

    /// Nothing listens on the port: every check that needs the database fails with the refusal.
    /// Two still pass, rightly: the breaker's own overhead never reaches the database, and the
    /// refusals themselves opened the breaker that "blocking while open" expects to reject.
    @Test(arguments: Scenario.allCases)
    func failsWhenNothingListensOnThePort(_ scenario: Scenario) async throws {
        let url = try TestPostgres.url { $0.port = 1 }
        let db = try ReliableDatabase.postgres(configuration: try await TestPostgres.configuration(url))
        let results = try await Self.run(scenario, on: PostgresCheckTarget(database: db))
        try await db.shutdown()
        // Without a connection the connection scenario stops after its first check.
        let expected = scenario == .connection ? ["connect and probe"] : scenario.checks
        #expect(results.map(\.name) == expected)
        let stillPassing: Set = ["circuit breaker overhead", "blocking while open"]
        // A 100 ms read against a refused port ends with the refusal or, when the retries' jittered
        // backoff outlasts its deadline, with the timeout that check asks for: either is right.
        let either: Set = ["no earlier result, no fallback"]
        for result in results where !either.contains(result.name) {
            #expect(result.passed == stillPassing.contains(result.name), "\(result.line)")
        }
        #expect(results.contains { $0.detail.contains("refused") }, "the reason is named: \(results.map(\.line))")
    }

    /// The server answers but refuses the connection, or nothing listens: the run stops after the
    /// probe, which names the reason, and never prints the password.
    @Test(
        arguments: [
            ("a wrong password", "password authentication failed"),
            ("a closed port", "refused"),
            ("an unknown database", "does not exist"),
        ]
    )
    func aConnectionThatCannotBeMadeEndsTheRunAtTheProbe(_ problem: String, reason: String) async throws {
        let url = try TestPostgres.url { url in
            switch problem {
            case "a wrong password": url.password = "not-the-password"
            case "a closed port": url.port = 1
            default: url.path = "/no_such_database_\(UUID().uuidString.prefix(8).lowercased())"
            }
        }
        let report = try await CheckSuite.run(
            configuration: try await TestPostgres.configuration(url),
            scenarios: .all
        )
        #expect(report.results.map(\.name) == ["connect and probe"], "\(report.results.map(\.line))")
        #expect(report.failed == 1)
        #expect(report.results.first?.detail.contains(reason) == true, "\(report.results.map(\.line))")
        #expect(!report.table.contains(try TestPostgres.password))
        #expect(!(try report.json()).contains(try TestPostgres.password))
    }

    /// A connection in use while the pool is inspected: the pool statistics check fails, the
    /// others pass.
    @Test func poolStatisticsFailWithAConnectionInUseOnSQLite() async throws {
        let file = try SQLiteFile()
        let db = try ReliableDatabase.sqlite(configuration: try await file.configuration())
        let gate = Gate()
        let holder = Task {
            try await db.query(.read("hold")) { _ in
                // Keeps a reader connection until the checks have looked at the pool.
                while !gate.isOpen { usleep(1000) }
            }
        }
        try await gate.waitUntil { db.metrics().pool.active == 1 }
        let results = try await Self.run(.connection, on: SQLiteCheckTarget(database: db))
        gate.open()
        try await holder.value
        try await db.shutdown()
        #expect(results.map(\.name) == Scenario.connection.checks)
        #expect(results.filter { !$0.passed }.map(\.name) == ["pool statistics"], "\(results.map(\.line))")
        #expect(results.last?.detail.contains("active=1") == true, "\(results.map(\.line))")
    }

    @Test func poolStatisticsFailWithAConnectionInUseOnPostgreSQL() async throws {
        let db = try ReliableDatabase.postgres(
            configuration: try await TestPostgres.configuration(try TestPostgres.url())
        )
        let gate = Gate()
        let holder = Task {
            try await db.query(.read("hold")) { _ in
                while !gate.isOpen { try await Task.sleep(for: .milliseconds(1)) }
            }
        }
        try await gate.waitUntil { db.metrics().pool.active == 1 }
        let results = try await Self.run(.connection, on: PostgresCheckTarget(database: db))
        gate.open()
        try await holder.value
        try await db.shutdown()
        #expect(results.map(\.name) == Scenario.connection.checks)
        #expect(results.filter { !$0.passed }.map(\.name) == ["pool statistics"], "\(results.map(\.line))")
        #expect(results.last?.detail.contains("active=1") == true, "\(results.map(\.line))")
    }
}
