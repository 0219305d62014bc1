import Foundation
import ReliableDB
import Synchronization

// MARK: - The tester

/// Runs a ``LoadWorkload`` under concurrent load and measures it.
///
/// ```swift
/// let tester = DatabaseLoadTester(workload)
/// let report = try await tester.runLoadTest(
///     LoadTestConfiguration(concurrentConnections: 10, operationsPerConnection: 100, operationType: .mixed())
/// )
/// print(report.textSummary())
/// ```
///
/// Each worker records into its own histograms and counters; nothing is shared per operation but
/// two relaxed atomic counters for the progress line (and, in the open model, the ticket counter
/// that hands out intended start times). The per-second series takes a lock once per worker per
/// second. Tallies are merged into one HdrHistogram when the run ends.
///
/// Real time (`ContinuousClock`) drives the run: a load tester measures the wall clock.
public struct DatabaseLoadTester<Workload: LoadWorkload>: Sendable {
    public let workload: Workload
    /// How often the progress callback is called.
    public var progressInterval: Duration

    public init(_ workload: Workload, progressInterval: Duration = .milliseconds(500)) {
        self.workload = workload
        self.progressInterval = progressInterval
    }

    /// Sets the workload up, runs the warmup and the measured phase, and tears the workload down,
    /// also when anything fails or the task is cancelled.
    ///
    /// - Parameter progress: called about every ``progressInterval`` while a phase runs, and once
    ///   when it ends (``LoadTestProgress/isFinal``).
    /// - Throws: ``InvalidLoadTestConfiguration`` before touching the database; the workload's
    ///   set-up error; `CancellationError`; ``LoadTestTearDownError`` (carrying the report) when
    ///   only the tear-down failed.
    public func runLoadTest(
        _ configuration: LoadTestConfiguration,
        progress: (@Sendable (LoadTestProgress) -> Void)? = nil
    ) async throws -> LoadTestReport {
        let problems = configuration.problems
        guard problems.isEmpty else { throw InvalidLoadTestConfiguration(problems: problems) }
        let report: LoadTestReport
        do {
            try await workload.setUp()
            report = try await measure(configuration, progress: progress)
        } catch {
            try? await tearDown()
            throw error
        }
        do {
            try await tearDown()
        } catch {
            throw LoadTestTearDownError(report: report, underlying: error)
        }
        return report
    }

    /// Runs the workload's tear-down in a task of its own, so it runs even when ours is cancelled.
    private func tearDown() async throws {
        let workload = self.workload
        try await Task { try await workload.tearDown() }.value
    }

    private func measure(
        _ configuration: LoadTestConfiguration,
        progress: (@Sendable (LoadTestProgress) -> Void)?
    ) async throws -> LoadTestReport {
        if configuration.warmup > .zero {
            _ = try await runPhase(.warmup, configuration, duration: configuration.warmup, progress: progress)
            try Task.checkCancellation()
        }
        let before = workload.pipelineMetrics
        let startedAt = Date()
        let result = try await runPhase(.measuring, configuration, duration: configuration.duration, progress: progress)
        try Task.checkCancellation()
        return LoadTestAggregation.report(
            workload: workload.name,
            configuration: configuration,
            tallies: result.tallies,
            seconds: result.seconds,
            startedAt: startedAt,
            elapsed: result.elapsed,
            pipelineBefore: before,
            pipelineAfter: workload.pipelineMetrics
        )
    }

    struct PhaseResult {
        var tallies: [WorkerTally]
        var seconds: [Int: SecondBucket]
        var elapsed: Duration
    }

    /// What a phase runs: how many operations or for how long, and at which rate.
    struct Plan: Sendable {
        var start: ContinuousClock.Instant
        var deadline: ContinuousClock.Instant?
        /// Per worker in the closed model; in total in the open model. Nil: until the deadline.
        var operationsPerWorker: Int?
        var totalOperations: Int?
        var rate: Double?
        var readRatio: Double

        /// The intended start of the open model's `ticket`th operation.
        func intendedStart(ofTicket ticket: Int, rate: Double) -> ContinuousClock.Instant {
            start + .nanoseconds(Int64((Double(ticket) * 1e9 / rate).rounded()))
        }
    }

    // MARK: - Phases and workers

    private func runPhase(
        _ phase: LoadTestProgress.Phase,
        _ configuration: LoadTestConfiguration,
        duration: Duration?,
        progress: (@Sendable (LoadTestProgress) -> Void)?
    ) async throws -> PhaseResult {
        let clock = ContinuousClock()
        let counters = PhaseCounters()
        let series = SecondSeries()
        let start = clock.now
        let plan = Plan(
            start: start,
            deadline: duration.map { start + $0 },
            operationsPerWorker: duration == nil ? configuration.operationsPerConnection : nil,
            totalOperations: duration == nil ? configuration.plannedOperations : nil,
            rate: configuration.rate,
            readRatio: configuration.operationType.readRatio
        )
        let planned = plan.totalOperations
        let snapshot: @Sendable (Double, Bool) -> LoadTestProgress = { recentThroughput, isFinal in
            LoadTestProgress(
                phase: phase,
                elapsed: clock.now - start,
                completedOperations: counters.completed.load(ordering: .relaxed),
                failedOperations: counters.failed.load(ordering: .relaxed),
                plannedOperations: planned,
                plannedDuration: duration,
                recentThroughput: recentThroughput,
                isFinal: isFinal
            )
        }
        let interval = progressInterval
        let workload = self.workload
        let recording = phase == .measuring
        // The workers and the progress reporter are children of one group: the reporter is
        // cancelled once the workers are done, and nothing outlives the phase.
        let tallies = try await withThrowingTaskGroup(of: [WorkerTally]?.self) { phaseGroup in
            if let callback = progress {
                phaseGroup.addTask {
                    var lastCount = 0
                    var lastTime = start
                    while !Task.isCancelled {
                        do { try await Task.sleep(for: interval) } catch { break }
                        let now = clock.now
                        let count = counters.completed.load(ordering: .relaxed)
                        let seconds = (now - lastTime).seconds
                        callback(snapshot(seconds > 0 ? Double(count - lastCount) / seconds : 0, false))
                        lastCount = count
                        lastTime = now
                    }
                    return nil
                }
            }
            phaseGroup.addTask {
                try await withThrowingTaskGroup(of: WorkerTally.self) { group in
                    for index in 0..<configuration.concurrentConnections {
                        group.addTask(executorPreference: workload.executor(forWorker: index)) {
                            await Self.runWorker(
                                workload,
                                plan: plan,
                                counters: counters,
                                series: recording ? series : nil
                            )
                        }
                    }
                    var tallies: [WorkerTally] = []
                    for try await tally in group {
                        tallies.append(tally)
                    }
                    return tallies
                }
            }
            while let finished = try await phaseGroup.next() {
                if let tallies = finished {
                    phaseGroup.cancelAll()
                    return tallies
                }
            }
            return []
        }
        let elapsed = clock.now - start
        if let progress {
            let completed = counters.completed.load(ordering: .relaxed)
            progress(snapshot(elapsed > .zero ? Double(completed) / elapsed.seconds : 0, true))
        }
        return PhaseResult(tallies: tallies, seconds: series.snapshot, elapsed: elapsed)
    }

    /// One worker: runs operations until the plan says stop, recording into its own tally.
    /// `series` nil runs unmeasured (warmup).
    static func runWorker(
        _ workload: Workload,
        plan: Plan,
        counters: PhaseCounters,
        series: SecondSeries?
    ) async -> WorkerTally {
        let clock = ContinuousClock()
        var tally = WorkerTally()
        var random = SplitMix64(seed: UInt64.random(in: .min ... .max))
        var done = 0
        while !Task.isCancelled {
            let intended: ContinuousClock.Instant
            if let rate = plan.rate {
                let ticket = counters.tickets.add(1, ordering: .relaxed).oldValue
                if let total = plan.totalOperations, ticket >= total { break }
                intended = plan.intendedStart(ofTicket: ticket, rate: rate)
                if let deadline = plan.deadline, intended >= deadline { break }
                if intended > clock.now {
                    do { try await clock.sleep(until: intended, tolerance: .zero) } catch { break }
                }
            } else {
                if let perWorker = plan.operationsPerWorker {
                    if done >= perWorker { break }
                } else if let deadline = plan.deadline, clock.now >= deadline {
                    break
                }
                intended = clock.now
            }

            let operation: LoadOperation =
                plan.readRatio >= 1 || (plan.readRatio > 0 && random.nextUnitInterval() < plan.readRatio)
                ? .read : .write
            // In the closed model the intended start is the actual one: read the clock once.
            let began = plan.rate == nil ? intended : clock.now
            var failure: (any Error)?
            do {
                switch operation {
                case .read: try await workload.read()
                case .write: try await workload.write()
                }
            } catch {
                failure = error
            }
            let ended = clock.now
            done += 1
            counters.completed.add(1, ordering: .relaxed)
            if failure != nil {
                counters.failed.add(1, ordering: .relaxed)
            }
            if let series {
                tally.record(
                    operation,
                    latency: ended - intended,
                    serviceTime: ended - began,
                    completedAfter: ended - plan.start,
                    failure: failure.map {
                        (workload.classify($0)?.rawValue ?? LoadTestErrorClassification.otherClass, $0)
                    },
                    series: series
                )
            }
        }
        if let series {
            tally.flush(into: series)
        }
        return tally
    }
}

// MARK: - Progress

/// Counters the workers share: relaxed atomics, no locks.
final class PhaseCounters: Sendable {
    /// The open model's next operation number.
    let tickets = Atomic<Int>(0)
    let completed = Atomic<Int>(0)
    let failed = Atomic<Int>(0)
}

/// Where a running load test is, for a progress line.
public struct LoadTestProgress: Sendable, Equatable {
    public enum Phase: String, Sendable {
        case warmup
        case measuring
    }

    public var phase: Phase
    public var elapsed: Duration
    public var completedOperations: Int
    public var failedOperations: Int
    /// The phase's operation count, or nil when it runs for ``plannedDuration``.
    public var plannedOperations: Int?
    public var plannedDuration: Duration?
    /// Operations per second since the last update (for the final update: over the whole phase).
    public var recentThroughput: Double
    /// True for the one update sent when the phase has ended.
    public var isFinal: Bool

    public init(
        phase: Phase,
        elapsed: Duration,
        completedOperations: Int,
        failedOperations: Int,
        plannedOperations: Int?,
        plannedDuration: Duration?,
        recentThroughput: Double,
        isFinal: Bool
    ) {
        self.phase = phase
        self.elapsed = elapsed
        self.completedOperations = completedOperations
        self.failedOperations = failedOperations
        self.plannedOperations = plannedOperations
        self.plannedDuration = plannedDuration
        self.recentThroughput = recentThroughput
        self.isFinal = isFinal
    }

    /// How much of the phase is done, 0...1.
    public var fractionDone: Double {
        if let plannedOperations, plannedOperations > 0 {
            return min(1, Double(completedOperations) / Double(plannedOperations))
        }
        if let plannedDuration, plannedDuration > .zero {
            return min(1, elapsed.seconds / plannedDuration.seconds)
        }
        return isFinal ? 1 : 0
    }

    /// One line, e.g. `measuring  42%  4.2 s  4210 ops  0 errors  1002 ops/s`.
    public var line: String {
        let percent = String(format: "%3.0f%%", fractionDone * 100)
        return
            "\(phase.rawValue)  \(percent)  \(String(format: "%.1f", elapsed.seconds)) s  \(completedOperations) ops  \(failedOperations) errors  \(String(format: "%.0f", recentThroughput)) ops/s"
    }
}

/// The run finished but the workload's tear-down failed; ``report`` is the run's result.
public struct LoadTestTearDownError: Error, CustomStringConvertible, Sendable {
    public var report: LoadTestReport
    public var underlying: any Error

    public var description: String {
        "The load test finished but tearing the workload down failed: \(underlying)"
    }
}

extension SplitMix64 {
    /// A uniform value in 0..<1, for the read/write mix (one generator per worker, no shared state).
    mutating func nextUnitInterval() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }
}
