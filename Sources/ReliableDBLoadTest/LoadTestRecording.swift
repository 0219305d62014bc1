import Foundation
import Histogram
import ReliableDB
import Synchronization

/// Which call one operation makes.
enum LoadOperation: Sendable {
    case read
    case write
}

/// Latency histograms record microseconds: 3 significant digits (0.1% resolution) for the run's
/// latencies, 2 for the per-second series. Both start small and grow to the largest value seen.
enum LatencyHistograms {
    static func makeRun() -> Histogram<UInt64> {
        var histogram = Histogram<UInt64>(highestTrackableValue: 1_000_000, numberOfSignificantValueDigits: .three)
        histogram.autoResize = true
        return histogram
    }

    static func makeSecond() -> Histogram<UInt32> {
        var histogram = Histogram<UInt32>(highestTrackableValue: 1_000_000, numberOfSignificantValueDigits: .two)
        histogram.autoResize = true
        return histogram
    }

    /// `duration` in whole microseconds, rounded to the nearest, never negative.
    static func microseconds(_ duration: Duration) -> UInt64 {
        let nanoseconds = duration.nanosecondsClamped
        return nanoseconds <= 0 ? 0 : UInt64(nanoseconds / 1000 + (nanoseconds % 1000 >= 500 ? 1 : 0))
    }
}

/// The operations that completed within one second of the measured phase.
struct SecondBucket: Sendable {
    var operations = 0
    var errors = 0
    var latency = LatencyHistograms.makeSecond()

    mutating func merge(_ other: SecondBucket) {
        operations += other.operations
        errors += other.errors
        latency.add(other.latency)
    }
}

/// The per-second series, filled by the workers. A worker keeps the second it is in to itself and
/// hands it over when it moves on to the next one, so this lock is taken once per worker per second,
/// never per operation.
final class SecondSeries: Sendable {
    private let buckets = Mutex<[Int: SecondBucket]>([:])

    func add(_ bucket: SecondBucket, at second: Int) {
        buckets.withLock { buckets in
            if buckets[second] == nil {
                buckets[second] = bucket
            } else {
                buckets[second]!.merge(bucket)
            }
        }
    }

    var snapshot: [Int: SecondBucket] {
        buckets.withLock { $0 }
    }
}

/// One worker's results. Only the worker's own task touches it while the run lasts; the tallies
/// are merged once at the end.
struct WorkerTally: Sendable {
    /// From each operation's intended start, in microseconds.
    var latency = LatencyHistograms.makeRun()
    /// From each operation's actual start, in microseconds.
    var serviceTime = LatencyHistograms.makeRun()
    var latencyMicrosecondsTotal: UInt64 = 0
    var serviceTimeMicrosecondsTotal: UInt64 = 0
    var operations = 0
    var reads = 0
    var writes = 0
    var failures = 0
    var errorsByClass: [String: Int] = [:]
    var errorSamples: [String: String] = [:]
    private var currentSecond = -1
    private var bucket = SecondBucket()

    /// Records one finished operation.
    ///
    /// - Parameters:
    ///   - latency: from the operation's intended start to its end.
    ///   - serviceTime: from its actual start to its end.
    ///   - completedAfter: its end, measured from the start of the measured phase.
    ///   - failure: the error's class name and the error, when it failed.
    ///   - series: where finished seconds go.
    mutating func record(
        _ operation: LoadOperation,
        latency: Duration,
        serviceTime: Duration,
        completedAfter: Duration,
        failure: (className: String, error: any Error)?,
        series: SecondSeries
    ) {
        let latencyMicroseconds = LatencyHistograms.microseconds(latency)
        let serviceMicroseconds = LatencyHistograms.microseconds(serviceTime)
        self.latency.record(latencyMicroseconds)
        self.serviceTime.record(serviceMicroseconds)
        latencyMicrosecondsTotal &+= latencyMicroseconds
        serviceTimeMicrosecondsTotal &+= serviceMicroseconds
        operations += 1
        switch operation {
        case .read: reads += 1
        case .write: writes += 1
        }
        if let failure {
            failures += 1
            errorsByClass[failure.className, default: 0] += 1
            if errorSamples[failure.className] == nil {
                errorSamples[failure.className] = Self.message(of: failure.error)
            }
        }

        let second = max(0, Int(completedAfter.components.seconds))
        if second != currentSecond {
            if currentSecond >= 0 {
                series.add(bucket, at: currentSecond)
                bucket = SecondBucket()
            }
            currentSecond = second
        }
        bucket.operations += 1
        if failure != nil { bucket.errors += 1 }
        bucket.latency.record(latencyMicroseconds)
    }

    /// Hands the second in progress to `series`.
    mutating func flush(into series: SecondSeries) {
        if currentSecond >= 0 {
            series.add(bucket, at: currentSecond)
            bucket = SecondBucket()
            currentSecond = -1
        }
    }

    /// Adds `other`'s operations (not its per-second buckets, which go through a ``SecondSeries``).
    mutating func merge(_ other: WorkerTally) {
        latency.add(other.latency)
        serviceTime.add(other.serviceTime)
        latencyMicrosecondsTotal &+= other.latencyMicrosecondsTotal
        serviceTimeMicrosecondsTotal &+= other.serviceTimeMicrosecondsTotal
        operations += other.operations
        reads += other.reads
        writes += other.writes
        failures += other.failures
        errorsByClass.merge(other.errorsByClass, uniquingKeysWith: +)
        errorSamples.merge(other.errorSamples) { mine, _ in mine }
    }

    static func message(of error: any Error) -> String {
        let text = String(describing: error)
        return text.count > 300 ? String(text.prefix(300)) + "…" : text
    }
}

/// Turns the workers' tallies into a ``LoadTestReport``.
enum LoadTestAggregation {
    /// Merges every tally into one (one HdrHistogram for the whole run).
    static func merge(_ tallies: [WorkerTally]) -> WorkerTally {
        var merged = WorkerTally()
        for tally in tallies {
            merged.merge(tally)
        }
        return merged
    }

    /// min, mean, percentiles and max of `histogram` (microseconds) in milliseconds; `total` is the
    /// exact sum of the recorded values, for an exact mean.
    static func summary(of histogram: Histogram<UInt64>, total: UInt64) -> LatencySummary {
        let count = histogram.totalCount
        guard count > 0 else { return .empty }
        func milliseconds(_ microseconds: UInt64) -> Double { Double(microseconds) / 1000 }
        func percentile(_ p: Double) -> Double { milliseconds(histogram.valueAtPercentile(p)) }
        return LatencySummary(
            count: Int(count),
            min: milliseconds(histogram.min),
            mean: Double(total) / Double(count) / 1000,
            p50: percentile(50),
            p90: percentile(90),
            p95: percentile(95),
            p99: percentile(99),
            p999: percentile(99.9),
            max: milliseconds(histogram.maxRecorded)
        )
    }

    /// The latency curve in steps of a tenth of a "nine" (0%, 20.6%, 36.9%, ..., 90%, ..., 99%, ...)
    /// as far as the number of operations resolves, then the maximum at 100%.
    static func distribution(of histogram: Histogram<UInt64>) -> [PercentilePoint] {
        let count = histogram.totalCount
        guard count > 0 else { return [] }
        let resolvedNines = log10(Double(count))
        var points: [PercentilePoint] = []
        var step = 0
        while Double(step) / 10 <= resolvedNines + 1e-9 {
            let percentile = 100 * (1 - pow(10, -Double(step) / 10))
            points.append(
                PercentilePoint(
                    percentile: percentile,
                    latencyMs: Double(histogram.valueAtPercentile(percentile)) / 1000
                )
            )
            step += 1
        }
        points.append(PercentilePoint(percentile: 100, latencyMs: Double(histogram.maxRecorded) / 1000))
        return points
    }

    /// One sample per second from 0 to the last second that saw an operation; quiet seconds are zero.
    static func perSecond(_ buckets: [Int: SecondBucket]) -> [SecondSample] {
        guard let last = buckets.keys.max() else { return [] }
        return (0...last).map { second in
            guard let bucket = buckets[second] else {
                return SecondSample(second: second, operations: 0, errors: 0, p99Ms: 0)
            }
            return SecondSample(
                second: second,
                operations: bucket.operations,
                errors: bucket.errors,
                p99Ms: bucket.operations == 0 ? 0 : Double(bucket.latency.valueAtPercentile(99)) / 1000
            )
        }
    }

    /// What the pipeline did between `before` and `after`.
    static func pipeline(before: MetricsSnapshot?, after: MetricsSnapshot?) -> PipelineSummary? {
        guard let after else { return nil }
        let rejectedBefore = before?.queries.rejectedByCircuitBreaker ?? 0
        return PipelineSummary(
            circuitBreakerRejections: after.queries.rejectedByCircuitBreaker - rejectedBefore,
            retries: after.queries.retries - (before?.queries.retries ?? 0),
            timeouts: after.queries.timeouts - (before?.queries.timeouts ?? 0),
            circuitBreakerState: after.circuitBreaker.state.rawValue,
            poolMax: after.pool.max,
            poolAcquireTimeouts: after.pool.acquireTimeouts - (before?.pool.acquireTimeouts ?? 0),
            poolAcquireMeanMs: after.pool.averageAcquireTime.milliseconds,
            poolAcquireMaxMs: after.pool.maxAcquireTime.milliseconds
        )
    }

    static func report(
        workload: String,
        configuration: LoadTestConfiguration,
        tallies: [WorkerTally],
        seconds: [Int: SecondBucket],
        startedAt: Date,
        elapsed: Duration,
        pipelineBefore: MetricsSnapshot?,
        pipelineAfter: MetricsSnapshot?
    ) -> LoadTestReport {
        let merged = merge(tallies)
        let elapsedSeconds = max(0, elapsed.seconds)
        func rate(_ count: Int) -> Double { elapsedSeconds > 0 ? Double(count) / elapsedSeconds : 0 }
        var byClass = Dictionary(uniqueKeysWithValues: LoadTestErrorClassification.classNames.map { ($0, 0) })
        byClass.merge(merged.errorsByClass, uniquingKeysWith: +)
        return LoadTestReport(
            workload: workload,
            configuration: configuration,
            startedAt: startedAt,
            endedAt: startedAt.addingTimeInterval(elapsedSeconds),
            elapsedSeconds: elapsedSeconds,
            totalOperations: merged.operations,
            successfulOperations: merged.operations - merged.failures,
            failedOperations: merged.failures,
            reads: merged.reads,
            writes: merged.writes,
            throughput: rate(merged.operations),
            successfulThroughput: rate(merged.operations - merged.failures),
            latency: summary(of: merged.latency, total: merged.latencyMicrosecondsTotal),
            serviceTime: summary(of: merged.serviceTime, total: merged.serviceTimeMicrosecondsTotal),
            latencyDistribution: distribution(of: merged.latency),
            errors: ErrorSummary(
                total: merged.failures,
                ratePercent: merged.operations == 0 ? 0 : Double(merged.failures) * 100 / Double(merged.operations),
                byClass: byClass,
                samples: merged.errorSamples
            ),
            pipeline: pipeline(before: pipelineBefore, after: pipelineAfter),
            perSecond: perSecond(seconds)
        )
    }
}
