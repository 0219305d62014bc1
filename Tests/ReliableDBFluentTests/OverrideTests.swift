import FluentKit
import FluentSQL
import ReliableDB
import ReliableDBFluent
import SQLKit
import Testing

/// `db.reliability(name:timeout:idempotent:retries:)`: per-call changes to how the pipeline treats
/// the operations run on the returned database, and on it only.
@Suite("Fluent reliability overrides", .timeLimit(.minutes(1)))
struct OverrideTests {
    @Test func aRenamedOperationIsCountedUnderItsNewNameAndTheOriginalDatabaseKeepsItsNames() async throws {
        try await FluentScratch.with { scratch in
            try await FluentOnReliableDB.with(try scratch.url) { fluent in
                let db = fluent.db
                try await Person(name: "Ada", position: 1).save(on: db.reliability(name: "signup"))
                _ = try await Person.query(on: db.reliability(name: "people.list")).all()
                _ = try await (db.reliability(name: "people.sql") as! any SQLDatabase).raw("SELECT 1").all()
                try await db.reliability(name: "checkout").transaction { db in
                    try await Person(name: "Bo", position: 2).save(on: db)
                }
                try await db.reliability(name: "report").withConnection { db in
                    _ = try await Person.query(on: db).count()
                }
                _ = try await Person.query(on: db).all()

                let operations = fluent.reliable.metrics().queries.operations
                #expect(
                    operations.keys.sorted()
                        == ["Person.read", "checkout", "people.list", "people.sql", "report", "signup"]
                )
                #expect(operations.values.allSatisfy { $0.successes == 1 })
            }
        }
    }

    @Test func aTimeoutOverrideIsTheOperationsDeadlineAndStopsTheStatementOnTheServer() async throws {
        try await FluentScratch.with { scratch in
            try await scratch.insertPeople(1)
            try await FluentOnReliableDB.with(try scratch.url) { fluent in
                let short = fluent.db.reliability(timeout: .milliseconds(300))
                let error = await #expect(throws: DatabaseTimeoutError.self) {
                    _ = try await Person.query(on: short).filter(.sql(unsafeRaw: "pg_sleep(30) IS NOT NULL")).all()
                }
                #expect(error?.timeout == .milliseconds(300))
                #expect(error?.operation == "Person.read")
                #expect(error?.kind == .query)
                let sqlError = await #expect(throws: DatabaseTimeoutError.self) {
                    try await (short as! any SQLDatabase).raw("SELECT pg_sleep(30)").run()
                }
                #expect(sqlError?.timeout == .milliseconds(300))
                #expect(sqlError?.operation == "sql.select")
                let stopped = try await eventually { try await scratch.scratch.running("%pg_sleep(30)%") == 0 }
                #expect(stopped, "both statements were cancelled on the server")
                #expect(fluent.reliable.metrics().queries.timeouts == 2)
            }
        }
    }

    @Test func aTimeoutLongerThanTheBackstopRaisesTheServersTimeoutForThatOperation() async throws {
        try await FluentOnReliableDB.with(try TestServers.direct()) { fluent in
            let long = fluent.db.reliability(timeout: .seconds(400))
            let shown = try await FluentOnReliableDB.statementTimeout(on: long)
            let raised = try #require(parseStatementTimeout(shown), "\(shown)")
            #expect(raised > .seconds(400) && raised <= .seconds(405), "the deadline plus the margin: \(shown)")
            // The next operation's connection has the default again.
            #expect(try await FluentOnReliableDB.statementTimeout(on: fluent.db) == "305s")
        }
    }

    @Test func anIdempotentWriteIsRetriedAfterAFailureThatReachedTheServer() async throws {
        try await FluentScratch.with { scratch in
            try await scratch.insertPeople(3)
            try await FluentOnReliableDB.with(try scratch.url) { fluent in
                try await Person.query(on: fluent.db.reliability(idempotent: true))
                    .set(\.$name, to: "renamed")
                    .filter(.sql(unsafeRaw: "fail_once(position, 2)"))
                    .update()
                #expect(fluent.retries == 1)
                #expect(fluent.operation("Person.update")?.successes == 1)
                let renamed = try await scratch.side {
                    try await $0.int("SELECT count(*)::int FROM people WHERE name = 'renamed'")
                }
                #expect(renamed == 3)
            }
        }
    }

    @Test func retriesTurnedOffLeaveEvenAReadFailedAfterOneAttempt() async throws {
        try await FluentScratch.with { scratch in
            try await scratch.insertPeople(3)
            try await FluentOnReliableDB.with(try scratch.url) { fluent in
                await #expect(throws: (any Error).self) {
                    _ = try await Person.query(on: fluent.db.reliability(retries: false))
                        .filter(.sql(unsafeRaw: "fail_once(position, 2)"))
                        .all()
                }
                #expect(fluent.operation("Person.read")?.failures == 1)
                #expect(fluent.retries == 0)
            }
        }
    }
}
