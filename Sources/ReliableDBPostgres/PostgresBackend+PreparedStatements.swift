import Logging
import PostgresNIO
import ReliableDB

// MARK: - Prepared statements behind a pooler

extension PostgresBackend {
    /// Runs `statement` on `connection` and returns its rows: prepared by name once per connection
    /// on a direct server (PostgresNIO's `execute`), sent unnamed with its bindings behind a
    /// transaction-pooling PgBouncer (``behindPooler``), where a statement prepared on one server
    /// connection is missing on the next.
    ///
    /// A named statement that goes missing (26000) never ran: it shows a pooler that was not
    /// declared, so from then on statements are sent unnamed, and the pipeline runs the attempt
    /// again at once on a fresh connection (a lost-connection error, Breaker.md's rule).
    public func run<Statement: PostgresPreparedStatement>(
        _ statement: Statement,
        on connection: PostgresConnection,
        logger: Logger? = nil
    ) async throws -> [Statement.Row] {
        let logger = logger ?? self.logger
        var rows: [Statement.Row] = []
        if behindPooler {
            let query = PostgresQuery(unsafeSQL: Statement.sql, binds: try statement.makeBindings())
            for try await row in try await connection.query(query, logger: logger) {
                rows.append(try statement.decodeRow(row))
            }
            return rows
        }
        do {
            for try await row in try await connection.execute(statement, logger: logger) {
                rows.append(row)
            }
            return rows
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "26000" {
            backstop.pooler.found("a statement prepared by name went missing")
            throw error
        }
    }
}

extension ReliableDatabase where Backend == PostgresBackend {
    /// Runs a `PostgresPreparedStatement` through the pipeline and returns its rows, prepared by
    /// name where that is safe and sent unnamed behind PgBouncer (``PostgresBackend/run(_:on:logger:)``).
    /// Mark reads `idempotent` (or use `.read(...)`) so they are retried after a lost connection.
    public func run<Statement: PostgresPreparedStatement>(
        _ options: OperationOptions,
        _ statement: Statement,
        file: StaticString = #fileID,
        line: UInt = #line
    ) async throws -> [Statement.Row] where Statement.Row: Sendable {
        let backend = raw
        return try await query(options, file: file, line: line) { connection in
            try await backend.run(statement, on: connection)
        }
    }
}
