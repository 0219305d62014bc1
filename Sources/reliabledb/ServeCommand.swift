import ArgumentParser
import Foundation
import Hummingbird
import Logging
import Prometheus
import ReliableDB
import ReliableDBHTTP
import ReliableDBHummingbird
import ReliableDBPostgres
import ReliableDBPrometheus
import ReliableDBSQLite
import ReliableDBWebhook
import ServiceLifecycle

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the health endpoints (and optionally the Carmen demo) for the configured database.",
        discussion: """
            Endpoints: /api/health, /api/health/metrics, /api/health/live, /api/health/ready. \
            SIGTERM or SIGINT shuts down gracefully: readiness turns 503, then in-flight requests finish.
            """
    )

    @Option(help: "Address to listen on (default: HOST or 127.0.0.1).")
    var host: String?

    @Option(help: "Port to listen on; 0 picks a free one (default: PORT or 3000).")
    var port: Int?

    @Flag(help: "Also serve the Carmen demo API (/api/users, /api/orders).")
    var demo = false

    @Option(help: "Seconds to keep answering with ready=503 after SIGTERM before the server stops.")
    var drainSeconds: Double = 2

    @Option(
        name: .long,
        help:
            "Read variables from this .env file when it exists; it is watched, and live settings change without a restart."
    )
    var envFile = ".env"

    @Option(help: "Alert webhook body: slack or alertmanager (default: DB_ALERT_WEBHOOK_FORMAT or slack).")
    var alertFormat: String?

    func run() async throws {
        var logger = Logger(label: "reliabledb")
        logger.logLevel = .info
        let configuration: ReliableDBConfiguration
        let webhook: WebhookConfiguration?
        let address: (host: String, port: Int)
        do {
            (configuration, webhook) = try await readConfiguration()
            address = try listenAddress()
        } catch {
            printError("\(error)")
            throw ExitCode(2)
        }
        let registry = PrometheusCollectorRegistry()
        let exporter = PrometheusExporter(registry: registry)
        let instruments = ReliabilityInstruments(factory: exporter.metricsFactory)
        switch configuration.database {
        case .sqlite:
            let db = try ReliableDatabase.sqlite(configuration: configuration, instruments: instruments)
            let demoRoutes: DemoRoutes? =
                demo ? DemoRoutes(database: db, store: try await SQLiteDemoStore(database: db)) : nil
            try await serve(db, configuration, webhook, exporter, address, demoRoutes, logger)
        case .postgres:
            let db = try ReliableDatabase.postgres(
                configuration: configuration,
                instruments: instruments,
                logger: logger
            )
            let demoRoutes: DemoRoutes? =
                demo ? DemoRoutes(database: db, store: try await PostgresDemoStore(database: db)) : nil
            try await serve(db, configuration, webhook, exporter, address, demoRoutes, logger)
        }
    }

    /// The core settings and the webhook, with every problem of both (and of `--alert-format`)
    /// in one error.
    private func readConfiguration() async throws(ConfigurationError) -> (
        ReliableDBConfiguration, WebhookConfiguration?
    ) {
        var problems: [ConfigurationError.Problem] = []
        var configuration = ReliableDBConfiguration()
        var webhook: WebhookConfiguration?
        do {
            configuration = try await ReliableDBConfiguration.fromEnvironment(dotEnvPath: envFile)
        } catch {
            problems += error.problems
        }
        do {
            webhook = try await WebhookConfiguration.fromEnvironment(dotEnvPath: envFile)
        } catch {
            // Both read the URL and the `.env` file: report a shared problem once.
            problems += error.problems.filter { !problems.contains($0) }
        }
        if let alertFormat {
            switch WebhookFormat.named(alertFormat, in: "--alert-format") {
            case .success(let format): webhook?.format = format
            case .failure(let problem): problems.append(problem)
            }
        }
        guard problems.isEmpty else { throw ConfigurationError(problems: problems) }
        return (configuration, webhook)
    }

    private func listenAddress() throws(ConfigurationError) -> (host: String, port: Int) {
        let environment = ProcessInfo.processInfo.environment
        let host = host ?? environment["HOST"].flatMap { $0.isEmpty ? nil : $0 } ?? "127.0.0.1"
        if let port {
            guard (0...65535).contains(port) else {
                throw ConfigurationError(problems: [
                    .init(variable: "--port", value: "\(port)", expected: "a port from 0 to 65535")
                ])
            }
            return (host, port)
        }
        guard let raw = environment["PORT"], !raw.isEmpty else { return (host, 3000) }
        guard let parsed = Int(raw), (0...65535).contains(parsed) else {
            throw ConfigurationError(problems: [.init(variable: "PORT", value: raw, expected: "a port from 0 to 65535")]
            )
        }
        return (host, parsed)
    }

    private func serve<Backend: DatabaseBackend>(
        _ db: ReliableDatabase<Backend>,
        _ configuration: ReliableDBConfiguration,
        _ webhook: WebhookConfiguration?,
        _ exporter: PrometheusExporter,
        _ address: (host: String, port: Int),
        _ demoRoutes: DemoRoutes?,
        _ logger: Logger
    ) async throws {
        let webhook = webhook.map { webhook in
            WebhookAlertSink(
                url: webhook.url,
                format: webhook.format,
                metricsFactory: exporter.metricsFactory,
                logger: Logger(label: "reliabledb.webhook")
            )
        }
        let monitor = HealthMonitor(
            database: db,
            configuration: .init(configuration),
            sinks: webhook.map { [$0] } ?? [],
            logger: Logger(label: "reliabledb.monitor")
        )
        if !configuration.monitoringEnabled {
            await monitor.checkNow()  // one check so readiness and /api/health have a status
        }
        let endpoints = HealthEndpoints(
            database: db,
            monitor: monitor,
            exporter: exporter,
            authToken: configuration.healthAuthToken
        )
        let router = Router()
        router.addRoutes(endpoints.routes(), atPath: "/api/health")
        demoRoutes?.register(on: router)
        let readiness = endpoints.readiness
        let host = address.host
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(host, port: address.port), serverName: "reliabledb"),
            onServerRunning: { channel in
                readiness.markServing()
                let port = channel.localAddress?.port ?? address.port
                let line = "reliabledb listening on http://\(host):\(port) (database: \(configuration.database))\n"
                FileHandle.standardOutput.write(Data(line.utf8))
            },
            logger: Logger(label: "reliabledb.http")
        )
        // The helper orders the shutdown: readiness turns 503 while the server still answers, the
        // server finishes its requests, the monitor stops, the webhook sends what is queued, and
        // the connections close last.
        let services = endpoints.services(
            database: db,
            around: app,
            alertSinks: webhook.map { [WebhookSinkService($0)] } ?? [],
            drainFor: .milliseconds(Int64(drainSeconds * 1000))
        )
        // Live settings: the .env file is watched, and what may change without a restart does.
        let (_, watching) = try await LiveSettings.watchingEnvironmentFile(
            envFile,
            environment: ProcessInfo.processInfo.environment,
            database: db,
            monitor: monitor,
            logger: Logger(label: "reliabledb.settings")
        )
        let group = ServiceGroup(
            configuration: .init(
                services: (services + watching).map { .init(service: $0) },
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        try await group.run()
        logger.info("stopped")
    }
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}
