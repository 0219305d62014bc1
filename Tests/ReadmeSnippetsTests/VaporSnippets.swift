// swift-format-ignore-file
// (the README's layout, aligned comments included, is kept verbatim)
// The README's Swift snippets, verbatim (ReadmeSnippetsTests checks they match), so CI compiles
// every one of them. They are compiled, not run: they read the environment and open servers.

import Fluent
import ReliableDB
import ReliableDBFluent
import ReliableDBPostgres
import ReliableDBSQLite
import ReliableDBVapor
import Vapor

/// The Vapor wiring (top-level in the README, a declaration here as well).
func configure(_ app: Application) async throws {
    app.reliableDB.use(try await ReliableDatabase.sqlite(configuration: .fromEnvironment()))
    app.reliableDB.mountHealthRoutes(at: "api", "health")   // the four endpoints
}

/// The README's model, as the Fluent snippet uses it.
final class User: Model, Content, @unchecked Sendable {
    static let schema = "users"
    @ID(key: .id) var id: UUID?
    @Field(key: "active") var active: Bool
    init() {}
}

func configureFluent(_ app: Application) async throws {
    let database = try await ReliableDatabase.postgres(configuration: .fromEnvironment())
    app.databases.use(.reliable(database, models: [User.self]), as: .reliable)   // was .postgres(...)
    app.reliableDB.use(database)                        // the health routes and readiness, same pool
    app.reliableDB.mountHealthRoutes(at: "api", "health")
}

func activeUsers(_ req: Request) async throws -> [User] {
    try await User.query(on: req.db).filter(\.$active == true).all()   // the operation `User.read`
}
