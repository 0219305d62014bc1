import ServiceLifecycle

/// Runs a ``WebhookAlertSink`` in a swift-service-lifecycle `ServiceGroup`. On graceful shutdown
/// the sink stops accepting alerts and sends what is queued, so a deploy does not lose the alert
/// that explains it.
public struct WebhookSinkService: Service {
    public let sink: WebhookAlertSink

    public init(_ sink: WebhookAlertSink) {
        self.sink = sink
    }

    public func run() async throws {
        await withGracefulShutdownHandler {
            await sink.run()
        } onGracefulShutdown: {
            sink.finish()
        }
    }
}
