import FluentKit
import FluentSQL
import Logging
import NIOCore
import PostgresKit
import PostgresNIO
import ReliableDB
import ReliableDBPostgres
import SQLKit
import Synchronization

/// A Fluent `Database` whose every operation runs through a ``ReliableDB/ReliableDatabase``'s
/// pipeline on ReliableDB's own PostgreSQL pool: breaker, retries, the deadline that stops the
/// statement on the server, metrics and a span per operation (Sources/ReliableDBFluent/Documentation.docc/Fluent.md).
///
/// Outside a `transaction` or `withConnection` block each query, save or raw SQL statement is one
/// operation. Inside one, the whole block is the operation: its statements run on the block's
/// connection, a transaction is retried whole after 40001 or 40P01, and the block's deadline
/// cancels whichever statement is running when it passes.
struct ReliableFluentDatabase: Sendable {
    let reliable: ReliableDatabase<PostgresBackend>
    let context: DatabaseContext
    let names: FluentOperationNames
    let overrides: FluentReliabilityOverrides
    /// The connection of the enclosing `transaction` or `withConnection` block and the attempt it
    /// runs in; nil outside one, where every operation leases its own.
    let session: Session?
    let inTransaction: Bool

    struct Session: Sendable {
        let connection: PostgresConnection
        let attempt: AttemptContext
    }

    func with(_ overrides: FluentReliabilityOverrides) -> ReliableFluentDatabase {
        ReliableFluentDatabase(
            reliable: reliable,
            context: context,
            names: names,
            overrides: overrides,
            session: session,
            inTransaction: inTransaction
        )
    }

    private func onSession(
        _ connection: PostgresConnection,
        _ attempt: AttemptContext,
        inTransaction: Bool
    ) -> ReliableFluentDatabase {
        ReliableFluentDatabase(
            reliable: reliable,
            context: context,
            names: names,
            overrides: overrides,
            session: Session(connection: connection, attempt: attempt),
            inTransaction: inTransaction
        )
    }

    /// Runs `expression` as one operation, or on the block's connection inside a block. Rows reach
    /// `onRow` only once the operation has succeeded, so a retried attempt never delivers a row twice.
    private func run(
        _ expression: any SQLExpression,
        _ options: @autoclosure () -> OperationOptions,
        _ onRow: @escaping @Sendable (any SQLRow) -> Void
    ) -> EventLoopFuture<Void> {
        if let session {
            return session.connection.sql(queryLogLevel: nil).execute(sql: expression, onRow).hop(
                to: context.eventLoop
            )
        }
        let options = options()
        return onEventLoop { try await self.runPooled(expression, options, onRow) }
    }

    /// Runs `body` in a task on the context's event loop, whose connections the pool then prefers:
    /// the statement's replies resume it without a thread hop (Sources/ReliableDBFluent/Documentation.docc/Fluent.md, "What it costs").
    private func onEventLoop<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) -> EventLoopFuture<T> {
        let promise = context.eventLoop.makePromise(of: T.self)
        Task(executorPreference: EventLoopExecutor.shared(for: context.eventLoop)) {
            do {
                promise.succeed(try await body())
            } catch {
                promise.fail(error)
            }
        }
        return promise.futureResult
    }

    private func runPooled(
        _ expression: any SQLExpression,
        _ options: OperationOptions,
        _ onRow: @escaping @Sendable (any SQLRow) -> Void
    ) async throws {
        let rows = try await reliable.query(options) { connection in
            let collected = Mutex<[any SQLRow]>([])
            try await connection.sql(queryLogLevel: nil).execute(sql: expression) { row in
                collected.withLock { $0.append(row) }
            }
            return collected.withLock { $0 }
        }
        for row in rows { onRow(row) }
    }
}

extension ReliableFluentDatabase: Database {
    func execute(
        query: DatabaseQuery,
        onOutput: @escaping @Sendable (any DatabaseOutput) -> Void
    ) -> EventLoopFuture<Void> {
        var expression = SQLQueryConverter(delegate: PostgresConverterDelegate()).convert(query)
        // Fluent reads a created model's generated id from RETURNING, as fluent-postgres-driver
        // does; an empty custom id key is Fluent's signal for a composite id, which returns nothing.
        if case .create = query.action, query.customIDKey != .some(.string("")) {
            expression = SQLKit.SQLList(
                [expression, SQLReturning(SQLColumn((query.customIDKey ?? .id).description))],
                separator: SQLRaw(" ")
            )
        }
        return run(expression, names.options(for: query, overrides)) { onOutput($0.databaseOutput()) }
    }

    func execute(schema: DatabaseSchema) -> EventLoopFuture<Void> {
        let expression = SQLSchemaConverter(delegate: PostgresConverterDelegate()).convert(schema)
        let logger = context.logger
        return run(expression, names.options(for: schema, overrides)) { row in
            logger.debug("unexpected row from a schema statement: \(row.allColumns)")
        }
    }

    func execute(enum: DatabaseEnum) -> EventLoopFuture<Void> {
        // The enum's statements go through SQLKit's builders; they carry the enum's name and run
        // as a migration, as a schema change does.
        var named = overrides
        named.name = named.name ?? "\(`enum`.name).enum"
        named.kind = .migration
        let database = with(named)
        switch `enum`.action {
        case .create:
            return `enum`.createCases.reduce(database.create(enum: `enum`.name)) { $0.value($1) }.run()
        case .update:
            if !`enum`.deleteCases.isEmpty {
                context.logger.debug("PostgreSQL cannot delete the cases of an enum; kept: \(`enum`.deleteCases)")
            }
            let additions = `enum`.createCases.map { database.alter(enum: `enum`.name).add(value: $0).run() }
            return .andAllSucceed(additions, on: context.eventLoop)
        case .delete:
            return database.drop(enum: `enum`.name).run()
        }
    }

    func transaction<T>(_ closure: @escaping @Sendable (any Database) -> EventLoopFuture<T>) -> EventLoopFuture<T> {
        if inTransaction { return closure(self) }
        if let session {
            // Inside withConnection: a transaction on that connection, as one statement sequence.
            return transaction(on: session, closure)
        }
        let options = overrides.apply(to: OperationOptions("transaction", kind: .transaction))
        return onEventLoop {
            try await self.reliable.transaction(options) { connection in
                // The pipeline's transaction sets its own backstop.
                try await closure(self.onSession(connection, .unbounded, inTransaction: true)).map(Unchecked.init).get()
            }
        }.map(\.value)
    }

    /// A transaction on the connection of a `withConnection` block, which is already the operation;
    /// with the server-side backstop a transaction of that attempt needs.
    private func transaction<T>(
        on session: Session,
        _ closure: @escaping @Sendable (any Database) -> EventLoopFuture<T>
    ) -> EventLoopFuture<T> {
        let inner = onSession(session.connection, session.attempt, inTransaction: true)
        let backstop = reliable.raw.transactionBackstop(within: session.attempt)
        return onEventLoop {
            try await inner.raw("BEGIN").run()
            do {
                if let backstop { _ = try await session.connection.query(backstop, logger: inner.logger).collect() }
                let result = try await closure(inner).map(Unchecked.init).get()
                try await inner.raw("COMMIT").run()
                return result
            } catch {
                try? await inner.raw("ROLLBACK").run()
                throw error
            }
        }.map(\.value)
    }

    func withConnection<T>(_ closure: @escaping @Sendable (any Database) -> EventLoopFuture<T>) -> EventLoopFuture<T> {
        if session != nil { return closure(self) }
        let options = overrides.apply(to: OperationOptions("connection"))
        return onEventLoop {
            try await self.reliable.session(options) { connection, attempt in
                try await closure(self.onSession(connection, attempt, inTransaction: false)).map(Unchecked.init).get()
            }
        }.map(\.value)
    }
}

extension ReliableFluentDatabase: SQLDatabase {
    var logger: Logger { context.logger }
    var eventLoop: any EventLoop { context.eventLoop }
    var version: (any SQLDatabaseReportedVersion)? { nil }
    var dialect: any SQLDialect { PostgresDialect() }
    /// Statements are not logged with their bound values, which may hold user data or secrets.
    var queryLogLevel: Logger.Level? { nil }

    func execute(
        sql query: any SQLExpression,
        _ onRow: @escaping @Sendable (any SQLRow) -> Void
    ) -> EventLoopFuture<
        Void
    > {
        run(query, names.options(forSQL: serialize(query).sql, overrides), onRow)
    }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) async throws {
        if let session {
            try await session.connection.sql(queryLogLevel: nil).execute(sql: query, onRow)
        } else {
            try await runPooled(query, names.options(forSQL: serialize(query).sql, overrides), onRow)
        }
    }

    func withSession<R>(_ closure: @escaping @Sendable (any SQLDatabase) async throws -> R) async throws -> R {
        if session != nil { return try await closure(self) }
        let options = overrides.apply(to: OperationOptions("connection"))
        return try await reliable.session(options) { connection, attempt in
            try await Unchecked(closure(self.onSession(connection, attempt, inTransaction: false)))
        }.value
    }
}

/// Carries a value of Fluent's unconstrained generic result across the pipeline, which requires
/// `Sendable`: the value is handed over once, from the operation's task to its caller.
private struct Unchecked<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
