import Logging
import PostgresNIO

/// Stops running statements on the server with `pg_cancel_backend`, over a small connection of
/// its own.
///
/// Cancelling a Swift task does not stop a PostgreSQL query (measured: a 5 s `pg_sleep` still runs
/// 5 s), and PostgresNIO exposes no cancel request, so a deadline is enforced by asking the server
/// from a second connection. The statement then fails with SQLSTATE 57014 within milliseconds and
/// its connection is reusable at once. Cancels are serialized; the connection is opened on first
/// use and reopened after a failure.
actor QueryCanceller {
    private let configuration: PostgresConnection.Configuration
    private let logger: Logger
    private var connection: PostgresConnection?
    private var nextID = -1

    init(configuration: PostgresConnection.Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Asks the server to cancel what `backendPID` is running. Failures are logged, not thrown:
    /// the caller's deadline error stands either way, and the watchdog closes the connection if
    /// the statement does not stop.
    func cancel(backendPID: Int32) async {
        for attempt in 1...2 {
            do {
                let connection = try await openConnection()
                _ = try await connection.query("SELECT pg_cancel_backend(\(backendPID))", logger: logger).collect()
                return
            } catch {
                logger.warning(
                    "pg_cancel_backend failed",
                    metadata: [
                        "backendPID": "\(backendPID)", "attempt": "\(attempt)",
                        "error": "\(describePostgresError(error))",
                    ]
                )
                if let connection {
                    self.connection = nil
                    try? await connection.close()
                }
            }
        }
    }

    func close() async {
        if let connection {
            self.connection = nil
            try? await connection.close()
        }
    }

    private func openConnection() async throws -> PostgresConnection {
        if let connection, !connection.isClosed { return connection }
        nextID -= 1
        let opened = try await PostgresConnection.connect(configuration: configuration, id: nextID, logger: logger)
        connection = opened
        return opened
    }
}
