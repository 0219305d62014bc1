import FluentKit
import FluentSQL
import ReliableDB
import ReliableDBFluent
import SQLKit
import Synchronization
import Testing

/// Rows reach Fluent only once the operation has succeeded, so an attempt that fails after the
/// server sent part of its result never delivers a row twice. The rows are about 2 kB each, so the
/// server sends the first ones before it reaches the failing row.
@Suite("Fluent row delivery", .timeLimit(.minutes(1)))
struct RowDeliveryTests {
    static let rows = 200
    static let failingRow = 150

    @Test func aReadRetriedAfterItsConnectionWasLostMidResultDeliversEachRowOnce() async throws {
        try await FluentScratch.with { scratch in
            try await scratch.insertPeople(Self.rows)
            try await FluentOnReliableDB.with(try scratch.url) { fluent in
                let db = fluent.db
                async let read = Person.query(on: db)
                    .filter(.sql(unsafeRaw: "pause_once(position, \(Self.failingRow))"))
                    .all()
                // The first attempt has sent the rows before `failingRow` and sleeps there.
                #expect(try await scratch.terminatePausedBackend(), "the read never reached its pause")
                let people = try await read
                #expect(people.count == Self.rows)
                #expect(Set(people.map(\.position)) == Set(1...Self.rows))
                #expect(fluent.retries == 1, "read again on a new connection")
                #expect(fluent.operation("Person.read")?.successes == 1)
            }
        }
    }

    @Test func aReadRetriedAfterAFailureMidResultDeliversEachRowOnce() async throws {
        try await FluentScratch.with { scratch in
            try await scratch.insertPeople(Self.rows)
            try await FluentOnReliableDB.with(try scratch.url) { fluent in
                let people = try await Person.query(on: fluent.db)
                    .filter(.sql(unsafeRaw: "fail_once(position, \(Self.failingRow))"))
                    .all()
                #expect(people.count == Self.rows)
                #expect(Set(people.map(\.position)) == Set(1...Self.rows))
                #expect(fluent.retries == 1)
            }
        }
    }

    @Test func sqlKitRowsOfARetriedReadAreDeliveredOnceOnEveryPath() async throws {
        try await FluentScratch.with { scratch in
            try await scratch.insertPeople(Self.rows)
            try await FluentOnReliableDB.with(try scratch.url) { fluent in
                let select = SQLQueryString(
                    "SELECT position, padding FROM people WHERE fail_once(position, \(unsafeRaw: String(Self.failingRow)))"
                )
                // The async path (SQLDatabase.execute(sql:_:) async).
                let all = try await fluent.sql.raw(select).all()
                #expect(
                    try all.map { try $0.decode(column: "position", as: Int.self) }.sorted() == Array(1...Self.rows)
                )

                // The EventLoopFuture path, row by row.
                try await scratch.resetAttempts()
                let positions = Mutex<[Int]>([])
                try await fluent.sql.raw(select).run { row in
                    let position = try? row.decode(column: "position", as: Int.self)
                    positions.withLock { $0.append(position ?? -1) }
                }.get()
                #expect(positions.withLock { $0 }.sorted() == Array(1...Self.rows))
                #expect(fluent.retries == 2, "one retry for each read")
            }
        }
    }
}
