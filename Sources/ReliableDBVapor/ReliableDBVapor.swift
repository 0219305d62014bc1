import Prometheus
import ReliableDB
import ReliableDBHTTP
import ReliableDBPrometheus
import Synchronization
import Vapor

extension Application {
    /// ReliableDB in a Vapor app: register the database once in `configure.swift`, then mount the
    /// health routes. The app's lifecycle runs the health monitor, turns readiness 503 on shutdown
    /// and closes the database's connections last.
    ///
    /// ```swift
    /// app.reliableDB.use(try await ReliableDatabase.postgres(configuration: .fromEnvironment()))
    /// app.reliableDB.mountHealthRoutes(at: "api", "health")
    /// ```
    public var reliableDB: ReliableDBApplication {
        ReliableDBApplication(application: self)
    }
}

/// The ReliableDB components stored in a Vapor `Application` (see ``Vapor/Application/reliableDB``).
public struct ReliableDBApplication: Sendable {
    let application: Application

    /// The registered database's health endpoints, monitor and database closing.
    final class Registration: Sendable {
        let endpoints: HealthEndpoints
        let monitor: HealthMonitor
        let close: @Sendable () async throws -> Void
        /// The monitor's checks while the app runs; Vapor has no `ServiceGroup` to run them in.
        let monitoring = Mutex<Task<Void, Never>?>(nil)

        init(endpoints: HealthEndpoints, monitor: HealthMonitor, close: @escaping @Sendable () async throws -> Void) {
            self.endpoints = endpoints
            self.monitor = monitor
            self.close = close
        }
    }

    struct Key: StorageKey {
        typealias Value = Registration
    }

    /// Registers `database` with this app: a health monitor on it (alerts to `sinks`), the four
    /// health endpoints, and a lifecycle handler that starts the monitor when the app boots and,
    /// on shutdown, marks readiness draining, stops the monitor and closes the database.
    ///
    /// - Parameters:
    ///   - monitor: the monitor's interval, thresholds and alert timings; by default those of the
    ///     environment's configuration `database` was built from
    ///     (``ReliableDB/ReliableDatabase/environmentConfiguration``), so `DB_HEALTH_CHECK_INTERVAL`,
    ///     the `DB_ALERT_*_THRESHOLD` variables, `DB_ALERT_FOR` and `DB_ALERT_KEEP_FIRING_FOR` apply
    ///     without being passed again. A webhook (`DB_ALERT_WEBHOOK_URL`) is a sink: pass
    ///     ReliableDBWebhook's `WebhookAlertSink` in `sinks`.
    ///   - exporter: the Prometheus exporter `/metrics` renders; pass the one your
    ///     `ReliabilityInstruments` record into.
    ///   - authToken: `DB_HEALTH_AUTH_TOKEN`: details of `/health` only for this bearer token; by
    ///     default the environment's configuration's (``ReliableDBHTTP/HealthEndpoints``).
    public func use<Backend: DatabaseBackend>(
        _ database: ReliableDatabase<Backend>,
        monitor configuration: HealthMonitor.Configuration? = nil,
        sinks: [any AlertSink] = [],
        exporter: PrometheusExporter = PrometheusExporter(registry: PrometheusCollectorRegistry()),
        authToken: Secret<String>? = nil
    ) {
        let monitor = HealthMonitor(
            database: database,
            configuration: configuration,
            sinks: sinks,
            logger: application.logger
        )
        let endpoints = HealthEndpoints(database: database, monitor: monitor, exporter: exporter, authToken: authToken)
        application.storage[Key.self] = Registration(endpoints: endpoints, monitor: monitor) {
            try await database.shutdown()
        }
        application.lifecycle.use(Lifecycle())
    }

    /// The health endpoints of the registered database. Call ``use(_:monitor:sinks:exporter:authToken:)`` first.
    public var endpoints: HealthEndpoints {
        registration.endpoints
    }

    /// The health monitor of the registered database.
    public var monitor: HealthMonitor {
        registration.monitor
    }

    /// Mounts `GET <path>`, `<path>/metrics`, `<path>/live` and `<path>/ready` (the
    /// `/api/health` family with `at: "api", "health"`).
    public func mountHealthRoutes(at path: PathComponent...) {
        let endpoints = self.endpoints
        let routes = application.grouped(path)
        routes.get { request in
            endpoints.health(
                authorization: request.headers.first(name: .authorization),
                accept: request.headers.first(name: .accept)
            ).response
        }
        routes.get("metrics") { _ in endpoints.metrics().response }
        routes.get("live") { _ in endpoints.live().response }
        routes.get("ready") { _ in endpoints.ready().response }
    }

    var registration: Registration {
        guard let registration = application.storage[Key.self] else {
            fatalError("app.reliableDB.use(_:) must be called before its endpoints are used")
        }
        return registration
    }
}

/// Starts the monitor when the app has booted (its loop checks at once, then every interval); on
/// shutdown turns readiness 503, stops the monitor and closes the database's connections.
struct Lifecycle: LifecycleHandler {
    /// Also what `didBootAsync` runs by default, so both of Vapor's boot paths start the monitor.
    func didBoot(_ application: Application) throws {
        let registration = application.reliableDB.registration
        let monitor = registration.monitor
        registration.monitoring.withLock { task in
            guard task == nil else { return }
            task = Task { try? await monitor.run() }
        }
    }

    func shutdownAsync(_ application: Application) async {
        let registration = application.reliableDB.registration
        registration.endpoints.readiness.beginDraining()
        let monitoring = registration.monitoring.withLock { task in
            defer { task = nil }
            return task
        }
        monitoring?.cancel()
        await monitoring?.value
        do {
            try await registration.close()
        } catch {
            application.logger.warning("closing the database failed: \(error)")
        }
    }
}

extension HealthEndpoints.Answer {
    var response: Response {
        Response(
            status: HTTPResponseStatus(statusCode: status),
            headers: ["Content-Type": contentType, "Cache-Control": cacheControl],
            body: .init(data: body)
        )
    }
}

/// A route can return a ``ReliableDB/ReliableDatabase/withFallback(_:_:)`` answer as is: the
/// value's response, with `X-ReliableDB-Degraded` when it is degraded, so clients and caches can
/// tell an answer from a standby or from the kept result.
extension Degradable: AsyncResponseEncodable where Value: AsyncResponseEncodable {
    public func encodeResponse(for request: Request) async throws -> Response {
        let response = try await value.encodeResponse(for: request)
        if let degradation {
            response.headers.replaceOrAdd(name: Degradation.headerName, value: degradation.headerValue)
        }
        return response
    }
}
