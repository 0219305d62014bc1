import Logging
import ReliableDB
import ReliableDBTesting
import ServiceLifecycle
import Testing

@Suite("ReliableDatabase as a Service")
struct ReliableDatabaseServiceTests {
    @Test func aGracefulShutdownOfItsGroupClosesTheBackendOnce() async throws {
        let backend = ScriptedBackend()
        let db = try ReliableDatabase(backend: backend)
        let group = ServiceGroup(
            configuration: .init(services: [.init(service: db)], logger: Logger(label: "test.service"))
        )
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            #expect(backend.shutdowns == 0, "running, not closed")
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(backend.shutdowns == 1)
    }

    @Test func cancellingItsGroupClosesTheBackendToo() async throws {
        let backend = ScriptedBackend()
        let db = try ReliableDatabase(backend: backend)
        let group = ServiceGroup(
            configuration: .init(services: [.init(service: db)], logger: Logger(label: "test.service"))
        )
        let running = Task { try await group.run() }
        running.cancel()
        _ = try? await running.value
        #expect(backend.shutdowns == 1)
    }
}
