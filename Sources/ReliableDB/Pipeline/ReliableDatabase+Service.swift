import ServiceLifecycle

extension ReliableDatabase: Service {
    /// Runs until a graceful shutdown (or cancellation), then closes the backend's connections.
    ///
    /// Put the database first in your `ServiceGroup`: services stop in reverse order, so the HTTP
    /// server and the health monitor finish their in-flight work before the connections close.
    /// Operations still running when it closes fail at once, and every call has returned by its
    /// deadline anyway (Sources/ReliableDB/Documentation.docc/Deadlines.md).
    public func run() async throws {
        try? await gracefulShutdown()
        try await shutdown()
    }
}
