// swift-format-ignore-file
// (the README's layout, aligned comments included, is kept verbatim)
// The README's Swift snippets, verbatim (ReadmeSnippetsTests checks they match), so CI compiles
// every one of them. They are compiled, not run: they read the environment and open servers.

import ReliableDB
import ReliableDBSQLite
import ReliableDBVapor
import Vapor

/// The Vapor wiring (top-level in the README, a declaration here as well).
func configure(_ app: Application) async throws {
    app.reliableDB.use(try ReliableDatabase.sqlite(configuration: .fromEnvironment()))
    app.reliableDB.mountHealthRoutes(at: "api", "health")   // the four endpoints
}
