import FluentKit
import ReliableDB
import ReliableDBPostgres

extension DatabaseConfigurationFactory {
    /// Fluent on `database`: every query, save, transaction, raw SQL statement and migration runs
    /// through its pipeline on its pool.
    ///
    /// ```swift
    /// let database = try await ReliableDatabase.postgres(configuration: .fromEnvironment())
    /// app.databases.use(.reliable(database, models: [User.self, Order.self]), as: .reliable)
    /// ```
    ///
    /// - Parameters:
    ///   - database: the database whose pipeline and pool Fluent uses. The driver does not close
    ///     it: its owner does (`app.reliableDB.use(database)` closes it when the app stops).
    ///   - models: models whose type names label their operations (`User.read`); others are
    ///     labelled by their table (`users.read`).
    public static func reliable(
        _ database: ReliableDatabase<PostgresBackend>,
        models: [any Model.Type] = []
    ) -> DatabaseConfigurationFactory {
        let names = FluentOperationNames(models: models)
        return DatabaseConfigurationFactory { ReliableFluentConfiguration(database: database, names: names) }
    }
}

extension DatabaseID {
    /// The usual ID of a ReliableDB database in Fluent's `Databases`.
    public static var reliable: DatabaseID { DatabaseID(string: "reliable") }
}

extension Database {
    /// This database with per-call changes to how ReliableDB treats its operations, for example a
    /// write that is safe to repeat: `try await order.save(on: req.db.reliability(idempotent: true))`.
    /// A database that is not ReliableDB's is returned unchanged.
    public func reliability(
        name: String? = nil,
        timeout: Duration? = nil,
        idempotent: Bool? = nil,
        retries: Bool? = nil
    ) -> any Database {
        guard let database = self as? ReliableFluentDatabase else { return self }
        return database.with(
            FluentReliabilityOverrides(name: name, timeout: timeout, idempotent: idempotent, retries: retries)
        )
    }
}

struct ReliableFluentConfiguration: DatabaseConfiguration {
    var middleware: [any AnyModelMiddleware] = []
    let database: ReliableDatabase<PostgresBackend>
    let names: FluentOperationNames

    func makeDriver(for databases: Databases) -> any DatabaseDriver {
        ReliableFluentDriver(database: database, names: names)
    }
}

struct ReliableFluentDriver: DatabaseDriver {
    let database: ReliableDatabase<PostgresBackend>
    let names: FluentOperationNames

    func makeDatabase(with context: DatabaseContext) -> any Database {
        ReliableFluentDatabase(
            reliable: database,
            context: context,
            names: names,
            overrides: FluentReliabilityOverrides(),
            session: nil,
            inTransaction: false
        )
    }

    /// Nothing to close: the database belongs to whoever created it.
    func shutdown() {}
}
