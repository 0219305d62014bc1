import Fluent
import ReliableDB
import Vapor
import VaporERP

// `swift run vapor-erp serve` (with DATABASE_URL set) and `swift run vapor-erp migrate`.
var environment = try Environment.detect()
try LoggingSystem.bootstrap(from: &environment)
let app = try await Application.make(environment)
do {
    let (database, exporter) = try makeDatabase(configuration: try await .fromEnvironment())
    try configure(app, database: database, exporter: exporter)
    try await app.execute()
} catch {
    app.logger.report(error: error)
    try? await app.asyncShutdown()
    throw error
}
try await app.asyncShutdown()
