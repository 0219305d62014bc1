import Logging
import ReliableDBHTTP
import ServiceLifecycle
import Synchronization
import Testing

/// `ReadinessDrainService` last in a real `ServiceGroup`: readiness is draining before the service
/// in front of it (the HTTP server) hears of the shutdown, and stays so for the drain period.
@Suite("Readiness drain in a ServiceGroup")
struct ReadinessDrainServiceTests {
    /// Stands in for the HTTP server: records the readiness phase when its graceful shutdown begins.
    final class Server: Service {
        let readiness: Readiness
        let seen = Mutex<(phase: Readiness.Phase?, at: ContinuousClock.Instant?)>((nil, nil))

        init(readiness: Readiness) {
            self.readiness = readiness
        }

        func run() async throws {
            try? await gracefulShutdown()
            let phase = readiness.phase
            seen.withLock { $0 = (phase, .now) }
        }
    }

    /// The time limit stands for "the group stops": a wall-clock bound on it failed under load.
    @Test(.timeLimit(.minutes(1)))
    func readinessDrainsBeforeTheServerStops() async throws {
        let readiness = Readiness()
        readiness.markServing()
        let server = Server(readiness: readiness)
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: server),
                    .init(service: ReadinessDrainService(readiness: readiness, drainFor: .milliseconds(300))),
                ],
                logger: Logger(label: "test.drain") { _ in SwiftLogNoOpLogHandler() }
            )
        )
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            try await Task.sleep(for: .milliseconds(50))
            #expect(readiness.phase == .serving)
            let signalled = ContinuousClock.now
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
            let (phase, at) = server.seen.withLock { $0 }
            #expect(phase == .draining, "the server heard of the shutdown after readiness turned 503")
            #expect(at.map { $0 - signalled >= .milliseconds(300) } == true, "and after the drain period")
        }
    }
}
