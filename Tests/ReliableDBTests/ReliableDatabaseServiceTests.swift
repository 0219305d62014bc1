import Logging
import ReliableDB
import ServiceLifecycle
import Testing

@Suite("ReliableDatabase as a Service")
struct ReliableDatabaseServiceTests {
    @Test func aGracefulShutdownOfItsGroupClosesTheBackendOnce() async throws {
        let backend = TestBackend()
        let db = try ReliableDatabase(backend: backend)
        let group = ServiceGroup(
            configuration: .init(services: [.init(service: db)], logger: Logger(label: "test.service"))
        )
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            #expect(backend.shutdowns.count == 0, "running, not closed")
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(backend.shutdowns.count == 1)
    }

    @Test func cancellingItsGroupClosesTheBackendToo() async throws {
        let backend = TestBackend()
        let db = try ReliableDatabase(backend: backend)
        let group = ServiceGroup(
            configuration: .init(services: [.init(service: db)], logger: Logger(label: "test.service"))
        )
        let running = Task { try await group.run() }
        running.cancel()
        _ = try? await running.value
        #expect(backend.shutdowns.count == 1)
    }
}
