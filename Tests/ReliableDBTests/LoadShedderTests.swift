import ReliableDBTesting
import Synchronization
import Testing

@testable import ReliableDB

/// The load shedder in the pipeline, on a manual clock: a full bulkhead sheds at once and says so,
/// a waiter gets the next free slot or is shed when its wait ends, health probes are never shed.
@Suite("Load shedding in the pipeline")
struct LoadShedderTests {
    /// Holds operations until opened.
    final class Gate: Sendable {
        private let state = Mutex<(open: Bool, waiting: [CheckedContinuation<Void, Never>])>((false, []))

        func wait() async {
            await withCheckedContinuation { continuation in
                let open = state.withLock { state -> Bool in
                    if !state.open { state.waiting.append(continuation) }
                    return state.open
                }
                if open { continuation.resume() }
            }
        }

        func open() {
            let waiting = state.withLock { state in
                state.open = true
                defer { state.waiting = [] }
                return state.waiting
            }
            for continuation in waiting { continuation.resume() }
        }
    }

    func database(
        _ clock: ManualClock,
        maxConcurrent: Int = 2,
        maxWaiting: Int = 0,
        maxWait: Duration = .zero
    ) throws -> ReliableDatabase<ScriptedBackend> {
        try ReliableDatabase(
            backend: ScriptedBackend(),
            configuration: .init(
                timeouts: .init(enabled: false),
                loadShedding: .init(
                    enabled: true,
                    maxConcurrent: maxConcurrent,
                    maxWaiting: maxWaiting,
                    maxWait: maxWait,
                    adaptive: nil
                )
            ),
            clock: clock
        )
    }

    /// Yields until `condition` holds (the tasks under test run on other threads).
    func until(_ condition: () -> Bool) async {
        for _ in 0..<100_000 where !condition() { await Task.yield() }
    }

    @Test func aFullBulkheadShedsAtOnceAndCountsIt() async throws {
        let db = try database(ManualClock())
        let gate = Gate()
        async let first: Void = db.execute(.read("held")) { _ in await gate.wait() }
        async let second: Void = db.execute(.read("held")) { _ in await gate.wait() }
        await until { db.loadShedding?.inFlight == 2 }
        do {
            try await db.execute(.read("one-too-many")) { _ in }
            Issue.record("admitted past the limit")
        } catch let error as DatabaseOverloadedError {
            #expect(error.limit == 2 && error.inFlight == 2 && error.waited == .zero)
            #expect(error.description.contains("'one-too-many' was shed"))
            #expect(error.description.contains("not sent"))
        }
        #expect(db.metrics().queries.shedByLoadLimit == 1)
        #expect(db.metrics().queries.operations["one-too-many"]?.shed == 1)
        #expect(await db.healthCheck(), "health probes are never shed")
        gate.open()
        _ = try await (first, second)
        try await db.execute(.read("after")) { _ in }
        #expect(db.loadShedding == LoadSheddingSnapshot(limit: 2, inFlight: 0, waiting: 0, admitted: 3, shed: 1))
    }

    @Test func aWaiterGetsTheNextFreeSlotOrIsShedWhenItsWaitEnds() async throws {
        let clock = ManualClock()
        let db = try database(clock, maxConcurrent: 1, maxWaiting: 1, maxWait: .milliseconds(100))
        let gate = Gate()
        async let holder: Void = db.execute(.read("held")) { _ in await gate.wait() }
        await until { db.loadShedding?.inFlight == 1 }
        async let waiter: Int = db.execute(.read("waits")) { _ in 42 }
        await until { db.loadShedding?.waiting == 1 }
        await #expect(throws: DatabaseOverloadedError.self, "the queue holds one") {
            try await db.execute(.read("queue-full")) { _ in }
        }
        gate.open()
        try await holder
        #expect(try await waiter == 42, "admitted when the slot freed")

        let second = Gate()
        async let holder2: Void = db.execute(.read("held")) { _ in await second.wait() }
        await until { db.loadShedding?.inFlight == 1 }
        async let shed: Void = db.execute(.read("waits-too-long")) { _ in }
        await until { db.loadShedding?.waiting == 1 }
        clock.advance(by: .milliseconds(100))
        do {
            try await shed
            Issue.record("admitted although its wait ended")
        } catch let error as DatabaseOverloadedError {
            #expect(error.waited == .milliseconds(100))
        }
        second.open()
        try await holder2
        #expect(db.loadShedding?.waiting == 0)
    }

    @Test func aCancelledWaiterLeavesTheQueue() async throws {
        let db = try database(ManualClock(), maxConcurrent: 1, maxWaiting: 1, maxWait: .seconds(10))
        let gate = Gate()
        async let holder: Void = db.execute(.read("held")) { _ in await gate.wait() }
        await until { db.loadShedding?.inFlight == 1 }
        let waiter = Task { try await db.execute(.read("waits")) { _ in } }
        await until { db.loadShedding?.waiting == 1 }
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        #expect(db.loadShedding?.waiting == 0)
        gate.open()
        try await holder
    }

    @Test func aLimitBelowOneIsAConfigurationError() {
        #expect(throws: ConfigurationError.self) {
            try ReliableDatabase(
                backend: ScriptedBackend(),
                configuration: .init(loadShedding: .init(enabled: true, maxConcurrent: 0))
            )
        }
        #expect(LoadSheddingConfiguration(enabled: true, maxConcurrent: 0).validationProblems.count == 1)
        #expect(LoadSheddingConfiguration(enabled: false, maxConcurrent: 0).validationProblems.isEmpty)
    }
}
