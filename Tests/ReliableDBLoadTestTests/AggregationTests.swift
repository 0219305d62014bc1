import Foundation
import ReliableDB
import Testing

@testable import ReliableDBLoadTest

/// Reports built from latencies we choose, without running anything.
enum SampleReports {
    /// 1,000 operations with latencies 1, 2, ..., 1000 ms, spread round-robin over four workers,
    /// the i-th completing i ms into the run; 2 s elapsed.
    static func knownLatencies(rate: Double? = nil) throws -> LoadTestReport {
        let (tallies, series) = tallies(workers: 4, latencies: (1...1000).map { Duration.milliseconds($0) })
        return LoadTestAggregation.report(
            workload: "known latencies",
            configuration: LoadTestConfiguration(
                concurrentConnections: 4,
                operationsPerConnection: 250,
                operationType: .mixed(readRatio: 0.5),
                rate: rate
            ),
            tallies: tallies,
            seconds: series.snapshot,
            startedAt: Date(timeIntervalSince1970: 1_700_000_000),
            elapsed: .seconds(2),
            pipelineBefore: nil,
            pipelineAfter: nil
        )
    }

    /// Records `latencies[i]` as operation i on worker `i % workers`, completing `i + 1` ms into
    /// the run; even operations are reads.
    static func tallies(
        workers: Int,
        latencies: [Duration],
        failures: [Int: (String, any Error)] = [:]
    ) -> ([WorkerTally], SecondSeries) {
        let series = SecondSeries()
        var tallies = Array(repeating: WorkerTally(), count: workers)
        for (index, latency) in latencies.enumerated() {
            tallies[index % workers].record(
                index.isMultiple(of: 2) ? .read : .write,
                latency: latency,
                serviceTime: latency / 2,
                completedAfter: .milliseconds(index + 1),
                failure: failures[index].map { (className: $0.0, error: $0.1) },
                series: series
            )
        }
        for index in tallies.indices {
            tallies[index].flush(into: series)
        }
        return (tallies, series)
    }
}

@Suite("Aggregation")
struct AggregationTests {
    @Test func percentilesComeFromOneMergedHistogram() throws {
        let report = try SampleReports.knownLatencies()
        let latency = report.latency
        #expect(latency.count == 1000)
        #expect(latency.min == 1)
        #expect(latency.max == 1000)
        #expect(abs(latency.mean - 500.5) < 1e-9, "the mean is exact, not from buckets")
        // HdrHistogram with 3 significant digits: within 0.1% of the exact order statistic.
        for (actual, exact) in [
            (latency.p50, 500.0), (latency.p90, 900), (latency.p95, 950), (latency.p99, 990), (latency.p999, 999),
        ] {
            #expect(actual >= exact && actual <= exact * 1.001, "\(actual) vs \(exact)")
        }
        let chain = [latency.min, latency.p50, latency.p90, latency.p95, latency.p99, latency.p999, latency.max]
        #expect(chain == chain.sorted())
        // The service time was recorded as half of each latency.
        #expect(abs(report.serviceTime.mean - 250.25) < 1e-9)
        #expect(report.serviceTime.max == 500)
    }

    @Test func mergingWorkersGivesTheSameAnswerAsOneWorker() {
        let latencies = (0..<5000).map { Duration.microseconds(Int64(($0 * 7919) % 100_000 + 50)) }
        let (four, _) = SampleReports.tallies(workers: 4, latencies: latencies)
        let (one, _) = SampleReports.tallies(workers: 1, latencies: latencies)
        let merged = LoadTestAggregation.merge(four)
        let single = LoadTestAggregation.merge(one)
        #expect(
            LoadTestAggregation.summary(of: merged.latency, total: merged.latencyMicrosecondsTotal)
                == LoadTestAggregation.summary(of: single.latency, total: single.latencyMicrosecondsTotal)
        )
        #expect(merged.operations == 5000)
        #expect(merged.reads == 2500)
        #expect(merged.writes == 2500)
    }

    @Test func countsThroughputAndTheReadWriteSplit() throws {
        let report = try SampleReports.knownLatencies()
        #expect(report.totalOperations == 1000)
        #expect(report.reads == 500)
        #expect(report.writes == 500)
        #expect(report.successfulOperations == 1000)
        #expect(report.elapsedSeconds == 2)
        #expect(report.throughput == 500)
        #expect(report.endedAt.timeIntervalSince(report.startedAt) == 2)
        #expect(report.pipeline == nil)
    }

    @Test func theLatencyCurveRisesToTheMaximumInTenthsOfANine() throws {
        let report = try SampleReports.knownLatencies()
        let points = report.latencyDistribution
        #expect(points.first == PercentilePoint(percentile: 0, latencyMs: 1))
        #expect(points.last == PercentilePoint(percentile: 100, latencyMs: 1000))
        // 1,000 operations resolve three nines: steps 0.0, 0.1, ..., 3.0, then the maximum.
        #expect(points.count == 32)
        #expect(
            zip(points, points.dropFirst()).allSatisfy { $0.percentile < $1.percentile && $0.latencyMs <= $1.latencyMs }
        )
        let ninety = try #require(points.first { abs($0.percentile - 90) < 1e-9 })
        #expect(ninety.latencyMs >= 900 && ninety.latencyMs <= 900.9)
    }

    @Test func theSeriesHasOneSampleForEachSecondIncludingQuietOnes() {
        let series = SecondSeries()
        var tally = WorkerTally()
        for (offset, latency) in [(100, 1), (200, 3), (2500, 2)] {
            tally.record(
                .read,
                latency: .milliseconds(latency),
                serviceTime: .milliseconds(latency),
                completedAfter: .milliseconds(offset),
                failure: offset == 200 ? ("timeout", Unclassified()) : nil,
                series: series
            )
        }
        var other = WorkerTally()
        other.record(
            .write,
            latency: .milliseconds(10),
            serviceTime: .milliseconds(10),
            completedAfter: .milliseconds(150),
            failure: nil,
            series: series
        )
        tally.flush(into: series)
        other.flush(into: series)
        let samples = LoadTestAggregation.perSecond(series.snapshot)
        #expect(samples.map(\.second) == [0, 1, 2])
        #expect(samples.map(\.operations) == [3, 0, 1])
        #expect(samples.map(\.errors) == [1, 0, 0])
        #expect(samples[0].p99Ms >= 9.9 && samples[0].p99Ms <= 10.1, "\(samples[0].p99Ms)")
        #expect(samples[1].p99Ms == 0)
        #expect(samples[2].p99Ms >= 1.99 && samples[2].p99Ms <= 2.03, "\(samples[2].p99Ms)")
    }

    @Test func errorsAreCountedByClassWithEveryClassPresentAndOneSampleEach() {
        let failures: [Int: (String, any Error)] = [
            1: ("timeout", Unclassified()),
            3: ("timeout", CallerMistake()),
            5: ("other", Unclassified()),
        ]
        let (tallies, series) = SampleReports.tallies(
            workers: 2,
            latencies: Array(repeating: .milliseconds(1), count: 10),
            failures: failures
        )
        let report = LoadTestAggregation.report(
            workload: "errors",
            configuration: LoadTestConfiguration(concurrentConnections: 2, operationsPerConnection: 5),
            tallies: tallies,
            seconds: series.snapshot,
            startedAt: Date(),
            elapsed: .seconds(1),
            pipelineBefore: nil,
            pipelineAfter: nil
        )
        #expect(report.failedOperations == 3)
        #expect(report.successfulOperations == 7)
        #expect(report.errors.total == 3)
        #expect(report.errors.ratePercent == 30)
        #expect(Set(report.errors.byClass.keys) == Set(LoadTestErrorClassification.classNames))
        #expect(report.errors.byClass["timeout"] == 2)
        #expect(report.errors.byClass["other"] == 1)
        #expect(report.errors.byClass["connection"] == 0)
        #expect(report.errors.samples.count == 2)
        #expect(report.errors.samples["other"] == "something unexpected")
        #expect(report.perSecond.map(\.errors) == [3])
    }

    @Test func anEmptyRunReportsZerosNotNaN() throws {
        let report = LoadTestAggregation.report(
            workload: "nothing",
            configuration: LoadTestConfiguration(),
            tallies: [WorkerTally()],
            seconds: [:],
            startedAt: Date(),
            elapsed: .zero,
            pipelineBefore: nil,
            pipelineAfter: nil
        )
        #expect(report.latency == .empty)
        #expect(report.throughput == 0)
        #expect(report.errors.ratePercent == 0)
        #expect(report.latencyDistribution.isEmpty)
        #expect(report.perSecond.isEmpty)
        #expect(schemaProblems(in: try report.jsonData()) == [])
        #expect(selfContainmentProblems(in: report.html()) == [])
    }

    @Test func microsecondsRoundToTheNearest() {
        #expect(LatencyHistograms.microseconds(.nanoseconds(1499)) == 1)
        #expect(LatencyHistograms.microseconds(.nanoseconds(1500)) == 2)
        #expect(LatencyHistograms.microseconds(.nanoseconds(-5)) == 0)
        #expect(LatencyHistograms.microseconds(.seconds(2)) == 2_000_000)
    }
}
