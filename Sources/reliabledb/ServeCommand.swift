import ArgumentParser
import Foundation
import Logging
import ReliableDB
import ReliableDBPostgres
import ReliableDBSQLite

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Open the configured database and keep checking its health until SIGINT or SIGTERM."
    )

    @Option(name: .long, help: "Read variables from this .env file when it exists.")
    var envFile = ".env"

    func run() async throws {
        let logger = Logger(label: "reliabledb.serve")
        let configuration: ReliableDBConfiguration
        do {
            configuration = try ReliableDBConfiguration.fromEnvironment(dotEnvPath: envFile)
        } catch {
            printError(error.description)
            throw ExitCode(2)
        }
        switch configuration.database {
        case .sqlite:
            try await serve(ReliableDatabase.sqlite(configuration: configuration), configuration, logger)
        case .postgres:
            try await serve(ReliableDatabase.postgres(configuration: configuration), configuration, logger)
        }
    }

    private func serve<Backend: DatabaseBackend>(
        _ db: ReliableDatabase<Backend>,
        _ configuration: ReliableDBConfiguration,
        _ logger: Logger
    ) async throws {
        logger.info("database opened", metadata: ["database": "\(configuration.database)"])
        let signals = SignalWatcher(signals: [SIGINT, SIGTERM])
        let checker = Task {
            while !Task.isCancelled {
                switch await db.probe() {
                case .success(let probe):
                    logger.info(
                        "healthy",
                        metadata: [
                            "server": "\(probe.serverVersion)",
                            "roundTripMs": "\(String(format: "%.2f", probe.roundTrip.milliseconds))",
                            "pool": "\(db.metrics().pool)",
                            "breaker": "\(db.circuitBreaker.state.rawValue)",
                        ]
                    )
                case .failure(let error):
                    logger.error("unhealthy", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: configuration.healthCheckInterval)
            }
        }
        let signal = await signals.next()
        logger.info("shutting down", metadata: ["signal": "\(signal)"])
        checker.cancel()
        _ = await checker.value
        try await db.shutdown()
    }
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}
