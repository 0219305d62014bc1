import Logging
import NIOCore
import PostgresNIO
import Synchronization

/// Opens pool connections with their cancel key. Behind a pooler that refuses startup parameters
/// (PgBouncer's `08P01 unsupported startup parameter`), it drops `statement_timeout` and records
/// the pooler (``PoolerDetection``): that answer only ever comes from a pooler, so the detection
/// is reliable.
final class Connector: Sendable {
    private let configuration: Mutex<PostgresConnection.Configuration>
    private let pooler: PoolerDetection
    private let logger: Logger

    init(configuration: PostgresConnection.Configuration, pooler: PoolerDetection, logger: Logger) {
        self.configuration = Mutex(configuration)
        self.pooler = pooler
        self.logger = logger
    }

    func connect(id: Int, on eventLoop: any EventLoop) -> EventLoopFuture<PooledPostgresConnection> {
        let configuration = self.configuration.withLock { $0 }
        let (connection, _) = PostgresConnection.startConnectWithBackendKey(
            on: eventLoop,
            configuration: configuration,
            id: id,
            logger: logger
        )
        return connection.map { connection, key in
            PooledPostgresConnection(id: id, underlying: connection, key: key)
        }.flatMapError { error in
            guard let error = error as? PSQLError, Self.refusesStartupParameter(error) else {
                return eventLoop.makeFailedFuture(error)
            }
            // Connects that started together were all refused: each that sent the parameter
            // connects again without it, whichever of them removed it.
            let sent = configuration.options.additionalStartupParameters.contains { $0.0 == "statement_timeout" }
            guard sent else { return eventLoop.makeFailedFuture(error) }
            self.configuration.withLock { configuration in
                configuration.options.additionalStartupParameters.removeAll { $0.0 == "statement_timeout" }
            }
            self.pooler.found("the server refused the statement_timeout startup parameter")
            return self.connect(id: id, on: eventLoop)
        }
    }

    static func refusesStartupParameter(_ error: PSQLError) -> Bool {
        error.serverInfo?[.sqlState] == "08P01"
            && (error.serverInfo?[.message]?.contains("unsupported startup parameter") ?? false)
    }
}
