import Hummingbird
import ReliableDBHTTP
import ServiceLifecycle

extension HealthEndpoints {
    /// ReliableDB's services around a Hummingbird app, in the order its `ServiceGroup` needs:
    /// `[database, alert sinks..., monitor, app, drain]`.
    ///
    /// Services hear of a graceful shutdown in reverse order, each after the one behind it has
    /// finished: readiness turns 503 first (``ReliableDBHTTP/ReadinessDrainService``, held for
    /// `drainFor` while the server still answers), then the server finishes its requests, then the
    /// monitor stops, then the alert sinks send what the monitor queued, and the database closes
    /// its connections last.
    ///
    /// A monitor whose configuration disables it (`DB_MONITORING=false`) is left out: its `run()`
    /// returns at once, and a service that returns ends the whole group.
    ///
    /// ```swift
    /// let group = ServiceGroup(configuration: .init(
    ///     services: endpoints.services(database: database, around: app),
    ///     gracefulShutdownSignals: [.sigterm], logger: logger))
    /// ```
    /// - Parameter alertSinks: the services that deliver the monitor's alerts, such as
    ///   `WebhookSinkService`.
    public func services(
        database: some Service,
        around app: some ApplicationProtocol,
        alertSinks: [any Service] = [],
        drainFor: Duration = .seconds(2)
    ) -> [any Service] {
        [database] + alertSinks + (monitor.configuration.enabled ? [monitor] : []) + [
            app, ReadinessDrainService(readiness: readiness, drainFor: drainFor),
        ]
    }
}
