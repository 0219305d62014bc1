import Logging
import NIOCore
import PostgresNIO
import Synchronization

/// Opens pool connections with their cancel key. Behind a pooler that refuses startup parameters
/// (PgBouncer's `08P01 unsupported startup parameter`), it drops the backstop's settings and records
/// the pooler (``PoolerDetection``): that answer only ever comes from a pooler, so the detection
/// is reliable. With a credentials provider, each connect asks it (or its cache) for the
/// password, and asks again once when the server refuses it (28P01).
final class Connector: Sendable {
    private let configuration: Mutex<PostgresConnection.Configuration>
    private let pooler: PoolerDetection
    private let credentials: CredentialCache?
    private let logger: Logger

    init(
        configuration: PostgresConnection.Configuration,
        pooler: PoolerDetection,
        credentials: CredentialCache?,
        logger: Logger
    ) {
        self.configuration = Mutex(configuration)
        self.pooler = pooler
        self.credentials = credentials
        self.logger = logger
    }

    func connect(id: Int, on eventLoop: any EventLoop) -> EventLoopFuture<PooledPostgresConnection> {
        guard let credentials else { return connect(id: id, on: eventLoop, with: nil, askedAgain: false) }
        return eventLoop.makeFutureWithTask { try await credentials.current(refresh: false) }.flatMap { answer in
            self.connect(id: id, on: eventLoop, with: answer, askedAgain: false)
        }
    }

    private func connect(
        id: Int,
        on eventLoop: any EventLoop,
        with answer: PostgresCredentials?,
        askedAgain: Bool
    ) -> EventLoopFuture<PooledPostgresConnection> {
        var authenticated = self.configuration.withLock { $0 }
        if let answer {
            authenticated.username = answer.username ?? authenticated.username
            authenticated.password = answer.password.value
        }
        let configuration = authenticated
        let (connection, _) = PostgresConnection.startConnectWithBackendKey(
            on: eventLoop,
            configuration: configuration,
            id: id,
            logger: logger
        )
        return connection.map { connection, key in
            PooledPostgresConnection(id: id, underlying: connection, key: key)
        }.flatMapError { error in
            guard let error = error as? PSQLError else { return eventLoop.makeFailedFuture(error) }
            if let credentials = self.credentials, !askedAgain, Self.refusesPassword(error) {
                // A rotated password or an expired token: the provider's next answer may be newer.
                self.logger.notice("the server refused the password (28P01): asking \(credentials.provider.name) again")
                return eventLoop.makeFutureWithTask { try await credentials.current(refresh: true) }.flatMap {
                    self.connect(id: id, on: eventLoop, with: $0, askedAgain: true)
                }
            }
            guard Self.refusesStartupParameter(error) else { return eventLoop.makeFailedFuture(error) }
            // Connects that started together were all refused: each that sent the parameter
            // connects again without it, whichever of them removed it.
            let backstop = ServerBackstop.settings
            let sent = configuration.options.additionalStartupParameters.contains { backstop.contains($0.0) }
            guard sent else { return eventLoop.makeFailedFuture(error) }
            self.configuration.withLock { configuration in
                configuration.options.additionalStartupParameters.removeAll { backstop.contains($0.0) }
            }
            self.pooler.found("the server refused the backstop's startup parameters (statement_timeout)")
            return self.connect(id: id, on: eventLoop, with: answer, askedAgain: askedAgain)
        }
    }

    /// 28P01: password authentication failed.
    static func refusesPassword(_ error: PSQLError) -> Bool {
        error.serverInfo?[.sqlState] == "28P01"
    }

    static func refusesStartupParameter(_ error: PSQLError) -> Bool {
        error.serverInfo?[.sqlState] == "08P01"
            && (error.serverInfo?[.message]?.contains("unsupported startup parameter") ?? false)
    }
}
