import ReliableDB
import Testing

@testable import ReliableDBPool

/// Thousands of random event sequences on a simulated clock, with every invariant checked after
/// every event (see ``PoolSimulation``). A failure message starts with the seed that replays it.
/// The batches run one at a time: in parallel they took both cores for about 3 s at the start of
/// a test run, long enough for another suite's 3 s deadline to pass before its statement started.
@Suite("Pool state machine: randomized event sequences", .serialized)
struct PoolRandomizedTests {
    static let batches = 8
    static let sequencesPerBatch = 250
    static let eventsPerSequence = 200

    @Test(arguments: 0..<batches)
    func randomSequencesKeepEveryInvariant(batch: Int) async {
        var coverage = PoolSimulation.Coverage()
        for index in 0..<Self.sequencesPerBatch {
            // About 5 ms of CPU each in a debug build: between them, the cooperative thread goes
            // to whatever else waits for it (other suites' real deadlines, 3 s for a SQLite probe).
            await Task.yield()
            let seed = UInt64(batch * Self.sequencesPerBatch + index)
            var simulation = PoolSimulation(seed: seed)
            simulation.run(events: Self.eventsPerSequence)
            #expect(simulation.violations.isEmpty, "\(simulation.violations.joined(separator: "\n"))")
            guard simulation.violations.isEmpty else { return }
            coverage.add(simulation.coverage)
        }
        // The runs must reach every path, or passing says little.
        #expect(coverage.grants > 1_000 && coverage.queuedGrants > 100)
        #expect(coverage.timeouts > 100 && coverage.deadlines > 100)
        #expect(coverage.cancels > 100 && coverage.failFast > 10)
        #expect(coverage.keepAlives > 10 && coverage.shutdowns > 10 && coverage.fullPool > 100)
        #expect(coverage.warmUps > 100, "minimum idle connections opened: \(coverage.warmUps)")
        #expect(coverage.shrinks > 10, "maximums lowered below the open connections: \(coverage.shrinks)")
        #expect(PoolCloseReason.allCases.allSatisfy { coverage.closes[$0, default: 0] > 0 }, "\(coverage.closes)")
    }

    @Test func theSameSeedReplaysTheSameRun() {
        var first = PoolSimulation(seed: 42)
        var second = PoolSimulation(seed: 42)
        first.run(events: 200)
        second.run(events: 200)
        #expect(first.machine.statistics == second.machine.statistics)
        #expect(first.now == second.now && first.requestsMade == second.requestsMade)
    }
}

extension PoolSimulation.Coverage {
    mutating func add(_ other: Self) {
        grants += other.grants
        queuedGrants += other.queuedGrants
        timeouts += other.timeouts
        deadlines += other.deadlines
        cancels += other.cancels
        failFast += other.failFast
        shutdowns += other.shutdowns
        keepAlives += other.keepAlives
        closes.merge(other.closes, uniquingKeysWith: +)
        maxWaiting = Swift.max(maxWaiting, other.maxWaiting)
        fullPool += other.fullPool
        warmUps += other.warmUps
        shrinks += other.shrinks
    }
}
