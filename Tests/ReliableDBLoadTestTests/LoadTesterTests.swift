import Foundation
import ReliableDB
import Synchronization
import Testing

@testable import ReliableDBLoadTest

/// The tester's scheduling and bookkeeping, on scripted workloads. These use real time (a load
/// tester measures the wall clock), kept well under a second per test. Other tests share the
/// machine, so a task may wake late: the assertions are bounds that a late wake-up cannot break.
@Suite("DatabaseLoadTester")
struct LoadTesterTests {
    @Test func theOpenModelMeasuresFromEachOperationsIntendedStart() async throws {
        // 100 operations/s on one connection: operation k is due at k × 10 ms. The first one stalls
        // for 300 ms, so the next 19 all start late, after it ends.
        let workload = ScriptedWorkload(firstOperationStall: .milliseconds(300))
        let report = try await DatabaseLoadTester(workload).runLoadTest(
            LoadTestConfiguration(
                concurrentConnections: 1,
                operationsPerConnection: 20,
                operationType: .read,
                rate: 100
            )
        )
        #expect(report.totalOperations == 20)
        // Operation 19 was due at 190 ms and cannot have ended before 300 ms: every latency
        // includes its wait behind the stall.
        #expect(report.latency.min >= 109.9, "\(report.latency)")
        #expect(report.latency.p50 >= 190, "\(report.latency)")
        #expect(report.latency.max >= 300)
        #expect(report.serviceTime.max >= 300, "the stalled operation itself")
        // Operation k (k >= 1) started no earlier than 300 ms but was due at 10k ms: latency minus
        // service time is at least 300 - 10k ms for each, (19 × 300 - 10 × 190) / 20 = 190 ms on
        // average, however late any task woke.
        #expect(report.latency.mean - report.serviceTime.mean >= 189.9, "\(report.latency) \(report.serviceTime)")
    }

    @Test func theClosedModelMeasuresFromTheActualStart() async throws {
        // The same stall without a rate: the operations after it are not counted as waiting.
        let workload = ScriptedWorkload(firstOperationStall: .milliseconds(300))
        let report = try await DatabaseLoadTester(workload).runLoadTest(
            LoadTestConfiguration(concurrentConnections: 1, operationsPerConnection: 20, operationType: .read)
        )
        #expect(report.totalOperations == 20)
        #expect(report.latency.max >= 300)
        #expect(report.latency == report.serviceTime, "no intended start other than the actual one")
    }

    @Test func intendedStartsFollowTheRateExactly() {
        let start = ContinuousClock.now
        let plan = DatabaseLoadTester<ScriptedWorkload>.Plan(
            start: start,
            deadline: nil,
            operationsPerWorker: nil,
            totalOperations: 10,
            rate: 3,
            readRatio: 1
        )
        #expect(plan.intendedStart(ofTicket: 0, rate: 3) == start)
        #expect(plan.intendedStart(ofTicket: 1, rate: 3) == start + .nanoseconds(333_333_333))
        #expect(plan.intendedStart(ofTicket: 3, rate: 3) == start + .seconds(1), "no drift from rounding")
        #expect(plan.intendedStart(ofTicket: 3000, rate: 3) == start + .seconds(1000))
    }

    @Test func theOpenModelKeepsToTheRate() async throws {
        // 50 operations/s: the 12th is due at 220 ms, so the run cannot be shorter, even with
        // four connections idle most of the time.
        let workload = ScriptedWorkload()
        let report = try await DatabaseLoadTester(workload).runLoadTest(
            LoadTestConfiguration(concurrentConnections: 4, operationsPerConnection: 3, operationType: .read, rate: 50)
        )
        #expect(report.totalOperations == 12, "4 × 3 tickets in total")
        #expect(report.elapsedSeconds >= 0.22, "\(report.elapsedSeconds)")
        #expect(report.throughput <= 54.6, "\(report.throughput)")
    }

    @Test func aDurationRunsForThatLongAndIgnoresTheCount() async throws {
        let workload = ScriptedWorkload(operationTime: .milliseconds(2))
        let report = try await DatabaseLoadTester(workload).runLoadTest(
            LoadTestConfiguration(
                concurrentConnections: 2,
                operationsPerConnection: 1,
                operationType: .write,
                duration: .milliseconds(300)
            )
        )
        #expect(report.elapsedSeconds >= 0.3, "one operation per connection would take 2 ms")
        #expect(report.totalOperations <= 2 * 200, "each operation takes at least 2 ms")
        #expect(report.writes == report.totalOperations)
        #expect(report.configuration.duration == .milliseconds(300))
        #expect(report.configuration.plannedOperations == nil)
        #expect(report.perSecond.reduce(0) { $0 + $1.operations } == report.totalOperations)
    }

    @Test func theWarmupRunsButIsNotMeasured() async throws {
        let updates = Mutex<[LoadTestProgress]>([])
        let workload = ScriptedWorkload(operationTime: .milliseconds(1))
        let report = try await DatabaseLoadTester(workload).runLoadTest(
            LoadTestConfiguration(
                concurrentConnections: 2,
                operationsPerConnection: 5,
                operationType: .read,
                warmup: .milliseconds(100)
            )
        ) { progress in
            updates.withLock { $0.append(progress) }
        }
        let finals = updates.withLock { $0 }.filter(\.isFinal)
        #expect(finals.map(\.phase) == [.warmup, .measuring])
        let warmup = try #require(finals.first)
        #expect(warmup.elapsed >= .milliseconds(100))
        #expect(report.totalOperations == 10)
        #expect(
            workload.calls.load(ordering: .relaxed) == warmup.completedOperations + 10,
            "the warmup's operations ran but are not in the report"
        )
        #expect(report.configuration.warmup == .milliseconds(100))
    }

    @Test(arguments: [
        (LoadTestConfiguration.OperationType.read, 1.0), (.write, 0.0), (.mixed(readRatio: 0.5), 0.5),
        (.mixed(), 0.8),
    ])
    func theOperationTypeDecidesTheMix(_ type: LoadTestConfiguration.OperationType, _ ratio: Double) async throws {
        let report = try await DatabaseLoadTester(ScriptedWorkload()).runLoadTest(
            LoadTestConfiguration(concurrentConnections: 2, operationsPerConnection: 500, operationType: type)
        )
        #expect(report.totalOperations == 1000)
        let share = Double(report.reads) / 1000
        // 1,000 draws: a binomial share stays within ±0.08 of the ratio except with negligible odds.
        #expect(abs(share - ratio) <= 0.08, "\(report.reads) reads")
        if ratio == 1 { #expect(report.writes == 0) }
        if ratio == 0 { #expect(report.reads == 0) }
    }

    @Test func errorsAreClassifiedByTheWorkloadAndTheRunGoesOn() async throws {
        let workload = ScriptedWorkload(failure: { number, _ in
            switch number % 4 {
            case 1: CallerMistake()
            case 2: DatabasePoolTimeoutError(waited: .seconds(1), statistics: PoolStatistics())
            case 3: Unclassified()
            default: nil
            }
        })
        let report = try await DatabaseLoadTester(workload).runLoadTest(
            LoadTestConfiguration(concurrentConnections: 1, operationsPerConnection: 40, operationType: .read)
        )
        #expect(report.totalOperations == 40)
        #expect(report.failedOperations == 30)
        #expect(report.errors.ratePercent == 75)
        #expect(report.errors.byClass["caller"] == 10)
        #expect(report.errors.byClass["overload"] == 10)
        #expect(report.errors.byClass["other"] == 10)
        #expect(report.errors.samples["caller"] == "the caller's mistake")
        #expect(report.errors.samples["overload"]?.contains("No database connection") == true)
    }

    @Test func aFailedSetUpIsRethrownAfterTheTearDown() async throws {
        let workload = ScriptedWorkload(setUpError: CallerMistake())
        await #expect(throws: CallerMistake.self) {
            _ = try await DatabaseLoadTester(workload).runLoadTest(LoadTestConfiguration(operationsPerConnection: 1))
        }
        #expect(workload.tearDownCalls.load(ordering: .relaxed) == 1)
        #expect(workload.calls.load(ordering: .relaxed) == 0)
    }

    @Test func cancellingStopsTheRunAndStillTearsDown() async throws {
        let workload = ScriptedWorkload(operationTime: .milliseconds(1))
        let run = Task {
            try await DatabaseLoadTester(workload).runLoadTest(
                LoadTestConfiguration(concurrentConnections: 2, duration: .seconds(30))
            )
        }
        try await Task.sleep(for: .milliseconds(100))
        run.cancel()
        let start = ContinuousClock.now
        await #expect(throws: CancellationError.self) { _ = try await run.value }
        #expect(ContinuousClock.now - start < .seconds(5), "stopped long before the 30 s")
        #expect(workload.tearDownCalls.load(ordering: .relaxed) == 1)
        let tearDownWasCancelled = workload.tearDownSawCancellation.load(ordering: .relaxed)
        #expect(!tearDownWasCancelled, "tear-down runs in a task of its own")
    }

    @Test func anInvalidConfigurationIsRejectedBeforeTouchingTheDatabase() async throws {
        let workload = ScriptedWorkload()
        let configuration = LoadTestConfiguration(
            concurrentConnections: 0,
            operationsPerConnection: 0,
            operationType: .mixed(readRatio: 1.5),
            rate: -1
        )
        await #expect {
            _ = try await DatabaseLoadTester(workload).runLoadTest(configuration)
        } throws: { error in
            guard let error = error as? InvalidLoadTestConfiguration else { return false }
            return error.problems.count == 4 && error.description.contains("concurrentConnections")
        }
        #expect(workload.setUpCalls.load(ordering: .relaxed) == 0)
        #expect(workload.tearDownCalls.load(ordering: .relaxed) == 0)
    }

    @Test func progressIsReportedWhileRunningAndOnceAtTheEnd() async throws {
        let updates = Mutex<[LoadTestProgress]>([])
        // The one operation returns only after two progress updates (or 10 s, for a broken
        // reporter), so the reporter's timing cannot make this test flaky.
        let workload = ScriptedWorkload(gate: {
            let start = ContinuousClock.now
            while updates.withLock({ $0.count }) < 2, ContinuousClock.now - start < .seconds(10) {
                try? await Task.sleep(for: .milliseconds(5))
            }
        })
        let report = try await DatabaseLoadTester(workload, progressInterval: .milliseconds(20)).runLoadTest(
            LoadTestConfiguration(concurrentConnections: 1, operationsPerConnection: 1, operationType: .read)
        ) { progress in
            updates.withLock { $0.append(progress) }
        }
        let seen = updates.withLock { $0 }
        let running = seen.filter { !$0.isFinal }
        #expect(running.count >= 2, "\(seen.count) updates")
        // The first two came while the operation was held (later ones may see it done).
        #expect(running.prefix(2).allSatisfy { $0.completedOperations == 0 && $0.plannedOperations == 1 })
        #expect(running.first?.line.contains("measuring    0%") == true, "\(running.first?.line ?? "")")
        let finals = seen.filter(\.isFinal)
        #expect(finals.count == 1)
        #expect(finals.first?.completedOperations == report.totalOperations)
        #expect(finals.first?.fractionDone == 1)
        #expect(seen.last?.isFinal == true)
        #expect(seen.allSatisfy { $0.phase == .measuring })
        #expect(finals.first?.line.contains("measuring  100%") == true)
    }
}
