import ServiceLifecycle

/// Turns readiness to 503 when a graceful shutdown starts, and holds the shutdown for `drainFor`
/// while the server still answers, so a load balancer or Kubernetes stops sending traffic before
/// the server stops accepting it.
///
/// Put it **last** in your `ServiceGroup`, after the HTTP server: services hear of a graceful
/// shutdown in reverse order, each after the one behind it has finished, so readiness turns 503
/// first, the server then finishes in-flight requests, and the database (first in the group)
/// closes its connections last.
public struct ReadinessDrainService: Service {
    public let readiness: Readiness
    /// How long to answer not-ready before the server stops: at least the readiness probe's period.
    public let drainFor: Duration

    public init(readiness: Readiness, drainFor: Duration = .seconds(2)) {
        self.readiness = readiness
        self.drainFor = drainFor
    }

    public func run() async throws {
        try? await gracefulShutdown()
        readiness.beginDraining()
        try? await Task.sleep(for: drainFor)
    }
}
