import Foundation
import ReliableDBCheck
import Testing

/// The report `check` prints: scripts read its JSON and people its table, so both keep their form.
@Suite("The check report")
struct CheckReportTests {
    static let results = [
        CheckResult(group: "connection", name: "connect and probe", passed: true, durationMs: 1.5, detail: "ok"),
        CheckResult(group: "timeouts", name: "within limit", passed: false, durationMs: 12, detail: "too slow"),
    ]

    @Test func countsThePassedAndFailedChecks() {
        let report = CheckReport(database: "sqlite:x.sqlite", results: Self.results)
        #expect(report.passed == 1)
        #expect(report.failed == 1)
        #expect(CheckReport(database: "sqlite:x.sqlite", results: []).failed == 0)
    }

    @Test func theTableAlignsItsColumnsAndEndsWithTheTotals() {
        let table = CheckReport(database: "sqlite:x.sqlite", results: Self.results).table
        #expect(
            table == """
                ReliableDB check against sqlite:x.sqlite

                GROUP       CHECK              RESULT      TIME  DETAIL
                connection  connect and probe  PASS      1.5 ms  ok
                timeouts    within limit       FAIL     12.0 ms  too slow

                1 passed, 1 failed
                """
        )
    }

    @Test func theJSONHasSortedKeysAndTheTotals() throws {
        let json = try CheckReport(database: "sqlite:x.sqlite", results: Array(Self.results.prefix(1))).json()
        #expect(
            json == """
                {
                  "database" : "sqlite:x.sqlite",
                  "failed" : 0,
                  "passed" : 1,
                  "results" : [
                    {
                      "detail" : "ok",
                      "durationMs" : 1.5,
                      "group" : "connection",
                      "name" : "connect and probe",
                      "passed" : true
                    }
                  ]
                }
                """
        )
    }
}
