import FluentKit
import FluentSQL
import InMemoryTracing
import ReliableDB
import ReliableDBFluent
import SQLKit
import Testing
import Tracing

/// How each Fluent call is named and treated by the pipeline (the table in
/// Sources/ReliableDBFluent/Documentation.docc/Fluent.md), on a real PostgreSQL.
@Suite("Fluent operation names and kinds", .timeLimit(.minutes(1)))
struct OperationNameTests {
    @Test func eachFluentCallIsOneOperationNamedAfterItsModelOrTableAndItsAction() async throws {
        let tracer = InMemoryTracer()
        try await FluentScratch.with(prepared: false) { scratch in
            try await FluentOnReliableDB.with(try scratch.url, tracer: tracer) { fluent in
                let db = fluent.db
                try await db.schema("people").id().field("name", .string, .required)
                    .field("position", .int, .required).field("padding", .string).create()
                try await db.schema("pets").id().field("name", .string, .required).create()
                _ = try await db.enum("mood").case("calm").create()

                let ada = Person(name: "Ada", position: 1)
                try await ada.save(on: db)
                try await [Person(name: "Bo", position: 2), Person(name: "Cy", position: 3)].create(on: db)
                #expect(try await Person.query(on: db).all().count == 3)
                #expect(try await Person.query(on: db).count() == 3)
                ada.name = "Ada L."
                try await ada.save(on: db)
                try await ada.delete(on: db)
                try await Pet(name: "Rex").save(on: db)
                #expect(try await Pet.query(on: db).all().map(\.name) == ["Rex"])

                let inside = try await db.transaction { db in try await Person.query(on: db).count() }
                #expect(inside == 2)
                try await db.withConnection { db in _ = try await Person.query(on: db).all() }

                let sql = fluent.sql
                _ = try await sql.raw("SELECT 1 AS one").all()
                _ = try await sql.raw("SHOW statement_timeout").all()
                try await sql.raw("INSERT INTO pets (id, name) VALUES (gen_random_uuid(), 'Tom')").run()
                try await sql.raw("UPDATE pets SET name = 'Tom' WHERE name = 'Tom'").run()
                try await sql.raw("DELETE FROM pets WHERE name = 'Tom'").run()
                _ = try await sql.raw("WITH n AS (SELECT 1) SELECT * FROM n").all()
                // A keyword outside the fixed set: the name stays bounded.
                _ = try await sql.raw("TABLE pets").all()

                let expected: [String: Int] = [
                    "Person.schema": 1, "pets.schema": 1, "mood.enum": 1,
                    "Person.create": 2, "Person.read": 1, "Person.aggregate": 1, "Person.update": 1,
                    "Person.delete": 1, "pets.create": 1, "pets.read": 1, "transaction": 1, "connection": 1,
                    "sql.select": 1, "sql.show": 1, "sql.insert": 1, "sql.update": 1, "sql.delete": 1,
                    "sql.with": 1, "sql.other": 1,
                ]
                // Fluent keeps the cases of an enum in a table of its own; its statements on it are
                // operations like any other (`_fluent_enums.create`).
                let operations = fluent.reliable.metrics().queries.operations
                    .filter { !$0.key.hasPrefix("_fluent_enums.") }
                #expect(operations.mapValues(\.successes) == expected, "\(operations.keys.sorted())")
                #expect(operations.values.allSatisfy { $0.failures == 0 })
            }
        }
        // The kind decides the timeout and retry rules; a span carries it as db.operation.name.
        let kinds = Dictionary(grouping: tracer.finishedSpans, by: \.operationName).mapValues { spans in
            Set(
                spans.compactMap { span -> String? in
                    guard case .string(let kind) = span.attributes["db.operation.name"]?.toSpanAttribute() else {
                        return nil
                    }
                    return kind
                }
            )
        }
        #expect(kinds["Person.schema"] == ["migration"])
        #expect(kinds["pets.schema"] == ["migration"])
        #expect(kinds["mood.enum"] == ["migration"])
        #expect(kinds["Person.create"] == ["query", "batchInsert"], "a save, and a create of two")
        for name in ["Person.read", "Person.aggregate", "Person.update", "Person.delete", "pets.read", "connection"] {
            #expect(kinds[name] == ["query"], "\(name)")
        }
        #expect(kinds["transaction"] == ["transaction"])
        #expect(kinds["sql.select"] == ["query"])
        let people = tracer.finishedSpans.first { $0.operationName == "Person.read" }
        #expect(people?.attributes["db.collection.name"]?.toSpanAttribute() == "people")
    }

    @Test func statementsInsideABlockAreNotOperationsOfTheirOwn() async throws {
        try await FluentScratch.with { scratch in
            try await FluentOnReliableDB.with(try scratch.url) { fluent in
                try await fluent.db.transaction { db in
                    try await Person(name: "Ada", position: 1).save(on: db)
                    _ = try await Person.query(on: db).all()
                    try await (db as! any SQLDatabase).raw("SELECT 1").run()
                }
                try await fluent.db.withConnection { db in
                    _ = try await Person.query(on: db).count()
                    // A transaction nested in the block is part of the block's operation.
                    try await db.transaction { db in try await Person(name: "Bo", position: 2).save(on: db) }
                }
                let operations = fluent.reliable.metrics().queries.operations
                #expect(operations.keys.sorted() == ["connection", "transaction"])
                #expect(operations["transaction"]?.successes == 1)
                #expect(operations["connection"]?.successes == 1)
                #expect(try await Person.query(on: fluent.db).count() == 2, "both blocks committed")
            }
        }
    }

    @Test func readsAreRetriedAfterAFailureThatReachedTheServerAndWritesAreNot() async throws {
        try await FluentScratch.with { scratch in
            try await scratch.insertPeople(3)
            try await FluentOnReliableDB.with(try scratch.url) { fluent in
                let db = fluent.db
                let failsOnce = DatabaseQuery.Filter.sql(unsafeRaw: "fail_once(position, 2)")

                #expect(try await Person.query(on: db).filter(failsOnce).all().count == 3)
                #expect(fluent.retries == 1)
                try await scratch.resetAttempts()
                #expect(try await Person.query(on: db).filter(failsOnce).count() == 3)
                #expect(fluent.retries == 2)
                try await scratch.resetAttempts()
                let selected = try await fluent.sql.raw("SELECT position FROM people WHERE fail_once(position, 2)")
                    .all()
                #expect(selected.count == 3)
                #expect(fluent.retries == 3)

                // A write that may have taken effect is never run again unless marked idempotent.
                try await scratch.resetAttempts()
                await #expect(throws: (any Error).self) {
                    try await Person.query(on: db).set(\.$name, to: "renamed").filter(failsOnce).update()
                }
                #expect(fluent.operation("Person.update")?.failures == 1)
                try await scratch.resetAttempts()
                await #expect(throws: (any Error).self) {
                    try await fluent.sql.raw("UPDATE people SET name = 'renamed' WHERE fail_once(position, 2)").run()
                }
                #expect(fluent.operation("sql.update")?.failures == 1)
                try await scratch.resetAttempts()
                await #expect(throws: (any Error).self) {
                    try await Person.query(on: db).filter(failsOnce).delete()
                }
                #expect(fluent.operation("Person.delete")?.failures == 1)
                #expect(fluent.retries == 3, "none of the writes was retried")
                let (people, renamed) = try await scratch.side {
                    (
                        try await $0.int("SELECT count(*)::int FROM people"),
                        try await $0.int("SELECT count(*)::int FROM people WHERE name = 'renamed'")
                    )
                }
                #expect(people == 3 && renamed == 0, "no failed write took effect")
            }
        }
    }
}
