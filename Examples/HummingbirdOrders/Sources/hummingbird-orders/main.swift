import HummingbirdOrders
import Logging
import ReliableDB
import ServiceLifecycle

// `swift run hummingbird-orders` with DATABASE_URL set: the orders service on port 8080.
let logger = Logger(label: "orders")
let orders = try OrdersApp(configuration: try await .fromEnvironment(), logger: logger)
try await orders.migrate()
let group = ServiceGroup(
    configuration: .init(
        services: orders.endpoints.services(database: orders.database, around: orders.application()),
        gracefulShutdownSignals: [.sigterm, .sigint],
        logger: logger
    )
)
try await group.run()
