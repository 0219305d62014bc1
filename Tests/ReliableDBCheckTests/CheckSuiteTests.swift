import Foundation
import ReliableDB
import ReliableDBCheck
import ReliableDBPostgres
import ReliableDBSQLite
import ReliableDBTestSupport
import Testing

/// What `check`'s flags choose, and the checks only a multi-host URL adds, on real databases.
@Suite("The check suite", .serialized, .timeLimit(.minutes(2)))
struct CheckSuiteTests {
    /// No flag: the connection checks; `--health` adds monitoring; `--reliability` the breaker,
    /// degradation, timeouts, performance and recovery; `--all` both, in that order.
    @Test func theScenariosChooseTheGroupsAndKeepTheirOrder() async throws {
        let file = try SQLiteFile()
        let configuration = try await file.configuration()
        let cases: [(CheckScenarios, [String])] = [
            (CheckScenarios(), ["connection"]),
            (CheckScenarios(health: true), ["connection", "monitoring"]),
            (
                CheckScenarios(reliability: true),
                ["connection", "circuit breaker", "degradation", "timeouts", "performance", "recovery"]
            ),
            (
                .all,
                [
                    "connection", "circuit breaker", "degradation", "timeouts", "monitoring", "performance",
                    "recovery",
                ]
            ),
        ]
        for (scenarios, groups) in cases {
            let report = try await CheckSuite.run(configuration: configuration, scenarios: scenarios)
            var seen: [String] = []
            for result in report.results where seen.last != result.group { seen.append(result.group) }
            #expect(seen == groups)
            #expect(report.failed == 0, "\(report.results.filter { !$0.passed }.map(\.line))")
            #expect(report.database == "sqlite:\(file.path)")
        }
        #expect(try file.tables().allSatisfy { !$0.hasPrefix("reliabledb_check") }, "no scratch table left")
    }

    /// Each server of a multi-host URL on a line of its own: why one cannot be reached, the
    /// standby's replay lag, the primary.
    @Test func aMultiHostURLReportsEveryServer() async throws {
        let url = try TestPostgres.multiHost(["closed", "standby", "primary"])
        let db = try ReliableDatabase.postgres(configuration: try await TestPostgres.configuration(url))
        let runner = CheckRunner(target: PostgresCheckTarget(database: db))
        await runner.runConnection()
        try await db.shutdown()
        let topology = try #require(runner.results.first { $0.name == "topology" })
        #expect(topology.passed, "\(topology.line)")
        let standby = try ScratchDatabase.serverURL("RELIABLEDB_TEST_HA_STANDBY_URL")
        let primary = try ScratchDatabase.serverURL("RELIABLEDB_TEST_HA_PRIMARY_URL")
        #expect(topology.detail.contains("127.0.0.1:1 unreachable"), "\(topology.line)")
        #expect(topology.detail.contains("\(standby.port!) standby, replay lag"), "\(topology.line)")
        #expect(topology.detail.contains("\(primary.port!) primary"), "\(topology.line)")
        #expect(runner.results.allSatisfy { $0.passed }, "\(runner.results.map(\.line))")
    }

    /// A topology in which no server serves the URL's `target_session_attrs` fails the check.
    @Test func aTopologyNoServerServesFails() async throws {
        let file = try SQLiteFile()
        let db = try ReliableDatabase.sqlite(configuration: try await file.configuration())
        let reported = Topology(
            lines: ["a:5432 standby", "b:5432 unreachable: refused"],
            served: false,
            hasStandby: true
        )
        let runner = CheckRunner(target: ReportedTopology(inner: SQLiteCheckTarget(database: db), reported: reported))
        await runner.runConnection()
        try await db.shutdown()
        let topology = try #require(runner.results.first { $0.name == "topology" })
        #expect(!topology.passed)
        #expect(
            topology.detail
                == "no server serves the URL's target_session_attrs: a:5432 standby; b:5432 unreachable: refused"
        )
    }

    /// With a standby in the URL, degradation proves for real that a standby answers a read the
    /// primary cannot (its breaker held open).
    @Test func theStandbyAnswersWhenThePrimaryCannot() async throws {
        let url = try TestPostgres.multiHost(["primary", "standby"])
        let db = try ReliableDatabase.postgres(configuration: try await TestPostgres.configuration(url))
        let runner = CheckRunner(target: PostgresCheckTarget(database: db))
        await runner.runConnection()
        try await runner.runDegradation()
        try await db.shutdown()
        let standby = try #require(runner.results.first { $0.name == "a standby answers when the primary cannot" })
        #expect(standby.passed, "\(standby.line)")
        #expect(standby.detail.contains("answered, standby; age="), "\(standby.line)")
        #expect(runner.results.allSatisfy { $0.passed }, "\(runner.results.map(\.line))")
    }
}
