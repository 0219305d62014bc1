import Hummingbird
import ReliableDBHTTP
import ServiceLifecycle

extension HealthEndpoints {
    /// ReliableDB's services around a Hummingbird app, in the order its `ServiceGroup` needs:
    /// `[database, monitor, app, drain]`.
    ///
    /// Services hear of a graceful shutdown in reverse order, each after the one behind it has
    /// finished: readiness turns 503 first (``ReliableDBHTTP/ReadinessDrainService``, held for
    /// `drainFor` while the server still answers), then the server finishes its requests, then the
    /// monitor stops, and the database closes its connections last.
    ///
    /// ```swift
    /// let group = ServiceGroup(configuration: .init(
    ///     services: endpoints.services(database: database, around: app),
    ///     gracefulShutdownSignals: [.sigterm], logger: logger))
    /// ```
    public func services(
        database: some Service,
        around app: some ApplicationProtocol,
        drainFor: Duration = .seconds(2)
    ) -> [any Service] {
        [database, monitor, app, ReadinessDrainService(readiness: readiness, drainFor: drainFor)]
    }
}
