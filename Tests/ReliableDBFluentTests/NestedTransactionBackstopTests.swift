import FluentKit
import ReliableDB
import ReliableDBFluent
import SQLKit
import Testing

/// The server-side `statement_timeout` a transaction's statements run under when Fluent opens the
/// transaction itself on the connection of a `withConnection` block. Behind PgBouncer in
/// transaction pooling (`pgbouncer=true`) a connection has no backstop of its own, so the
/// transaction sets one with `SET LOCAL`; on the server itself the lease's setting covers it.
@Suite("Fluent's nested transaction backstop", .timeLimit(.minutes(1)))
struct NestedTransactionBackstopTests {
    /// Timeouts whose longest is 37 s: a backstop of 42 s, which no default gives.
    static let configured = ReliabilityConfiguration(
        timeouts: TimeoutConfiguration(
            query: .seconds(7),
            transaction: .seconds(37),
            batchInsert: .seconds(20),
            batchUpdate: .seconds(20),
            batchDelete: .seconds(20),
            healthCheck: .seconds(3),
            complexQuery: .seconds(30),
            migration: .seconds(37),
            batchCap: .seconds(37)
        )
    )

    /// `SHOW statement_timeout` in a `withConnection` block, outside and inside a transaction
    /// nested in it.
    static func shownInBlock(_ db: any Database) async throws -> (outside: String, inside: String) {
        try await db.withConnection { db in
            let outside = try await FluentOnReliableDB.statementTimeout(on: db)
            let inside = try await db.transaction { db in try await FluentOnReliableDB.statementTimeout(on: db) }
            return (outside, inside)
        }
    }

    static func shownInTransaction(_ db: any Database) async throws -> String {
        try await db.transaction { db in try await FluentOnReliableDB.statementTimeout(on: db) }
    }

    @Test func behindPgBouncerATransactionNestedInWithConnectionRunsUnderTheDefaultBackstop() async throws {
        try await FluentOnReliableDB.with(try TestServers.behindPgBouncer()) { fluent in
            let shown = try await Self.shownInBlock(fluent.db)
            #expect(shown.inside == "305s", "the longest default timeout plus 5 s, set for the transaction")
            #expect(shown.outside != "305s", "and never for the session, which other clients share")
            let operations = fluent.reliable.metrics().queries.operations
            #expect(operations["connection"]?.successes == 1)
            #expect(operations["transaction"] == nil, "the nested transaction is part of the block")
        }
    }

    @Test func behindPgBouncerANestedTransactionsBackstopFollowsTheConfiguredTimeouts() async throws {
        try await FluentOnReliableDB.with(try TestServers.behindPgBouncer(), reliability: Self.configured) { fluent in
            let shown = try await Self.shownInBlock(fluent.db)
            #expect(shown.inside == "42s")
            #expect(shown.outside != "42s")
        }
    }

    @Test func behindPgBouncerANestedTransactionOfALongerBlockGetsTheBlocksDeadlinePlusTheMargin() async throws {
        try await FluentOnReliableDB.with(try TestServers.behindPgBouncer(), reliability: Self.configured) { fluent in
            let shown = try await Self.shownInBlock(fluent.db.reliability(timeout: .seconds(60)))
            let inside = try #require(parseStatementTimeout(shown.inside), "\(shown.inside)")
            #expect(inside > .seconds(60) && inside <= .seconds(65), "\(shown.inside)")
        }
    }

    @Test func behindPgBouncerATopLevelTransactionRunsUnderItsSetLocalBackstop() async throws {
        try await FluentOnReliableDB.with(try TestServers.behindPgBouncer()) { fluent in
            let shown = try await Self.shownInTransaction(fluent.db)
            #expect(shown == "305s")
        }
        try await FluentOnReliableDB.with(try TestServers.behindPgBouncer(), reliability: Self.configured) { fluent in
            let shown = try await Self.shownInTransaction(fluent.db)
            #expect(shown == "42s")
        }
    }

    @Test func onTheServerItselfTheConnectionsOwnSettingCoversANestedTransaction() async throws {
        try await FluentOnReliableDB.with(try TestServers.direct()) { fluent in
            let shown = try await Self.shownInBlock(fluent.db)
            #expect(shown.outside == "305s", "every connection starts with the backstop")
            #expect(shown.inside == shown.outside)
            #expect(try await Self.shownInTransaction(fluent.db) == "305s")
        }
        try await FluentOnReliableDB.with(try TestServers.direct(), reliability: Self.configured) { fluent in
            let shown = try await Self.shownInBlock(fluent.db)
            #expect(shown.outside == "42s")
            #expect(shown.inside == "42s")
            #expect(try await Self.shownInTransaction(fluent.db) == "42s")
        }
    }

    @Test func onTheServerItselfALongerBlocksRaisedSettingCoversItsNestedTransaction() async throws {
        try await FluentOnReliableDB.with(try TestServers.direct()) { fluent in
            let shown = try await Self.shownInBlock(fluent.db.reliability(timeout: .seconds(400)))
            let outside = try #require(parseStatementTimeout(shown.outside), "\(shown.outside)")
            #expect(outside > .seconds(400) && outside <= .seconds(405), "raised for the lease: \(shown.outside)")
            #expect(shown.inside == shown.outside, "the transaction runs under the lease's setting")
            // The raised setting ends with the lease.
            #expect(try await FluentOnReliableDB.statementTimeout(on: fluent.db) == "305s")
        }
    }
}
