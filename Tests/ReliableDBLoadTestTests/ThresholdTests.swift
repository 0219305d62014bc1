import Foundation
import Testing

@testable import ReliableDBLoadTest

@Suite("Thresholds")
struct ThresholdTests {
    struct Good: Sendable, CustomTestStringConvertible {
        var input: String
        var metric: LoadTestThreshold.Metric
        var comparison: LoadTestThreshold.Comparison
        var limit: Double
        var testDescription: String { input }
    }

    static let good: [Good] = [
        Good(input: "p99<20ms", metric: .latency(.p99), comparison: .lessThan, limit: 20),
        Good(input: "p50<=5ms", metric: .latency(.p50), comparison: .lessThanOrEqual, limit: 5),
        Good(input: "errors<1%", metric: .errorRate, comparison: .lessThan, limit: 1),
        Good(input: "throughput>1000", metric: .throughput, comparison: .greaterThan, limit: 1000),
        Good(input: " P99.9 < 1.5 s ", metric: .latency(.p999), comparison: .lessThan, limit: 1500),
        Good(input: "p999<250us", metric: .latency(.p999), comparison: .lessThan, limit: 0.25),
        Good(input: "max>=2ms", metric: .latency(.max), comparison: .greaterThanOrEqual, limit: 2),
        Good(input: "mean<3.5ms", metric: .latency(.mean), comparison: .lessThan, limit: 3.5),
        Good(input: "median<1ms", metric: .latency(.p50), comparison: .lessThan, limit: 1),
        Good(input: "min>0ms", metric: .latency(.min), comparison: .greaterThan, limit: 0),
        Good(input: "p90<10ms", metric: .latency(.p90), comparison: .lessThan, limit: 10),
        Good(input: "p95<10ms", metric: .latency(.p95), comparison: .lessThan, limit: 10),
        Good(input: "throughput>=500ops/s", metric: .throughput, comparison: .greaterThanOrEqual, limit: 500),
        Good(input: "rps>10", metric: .throughput, comparison: .greaterThan, limit: 10),
        Good(input: "error_rate<=0.5%", metric: .errorRate, comparison: .lessThanOrEqual, limit: 0.5),
    ]

    @Test(arguments: good)
    func parsesTheDocumentedForms(_ good: Good) throws {
        let threshold = try LoadTestThreshold.parse(good.input)
        #expect(threshold.metric == good.metric)
        #expect(threshold.comparison == good.comparison)
        #expect(abs(threshold.limit - good.limit) < 1e-9)
        #expect(threshold.expression == good.input)
    }

    struct Bad: Sendable, CustomTestStringConvertible {
        var input: String
        var reason: String
        var testDescription: String { input }
    }

    static let bad: [Bad] = [
        Bad(input: "", reason: "it is empty"),
        Bad(input: "p99", reason: "no comparison operator"),
        Bad(input: "<20ms", reason: "the metric before '<' is missing"),
        Bad(input: "p75<20ms", reason: "'p75' is not a metric"),
        Bad(input: "latency<20ms", reason: "'latency' is not a metric"),
        Bad(input: "p99=20ms", reason: "'=' is not an operator"),
        Bad(input: "p99=<20ms", reason: "'=<' is not an operator"),
        Bad(input: "p99<20", reason: "a latency needs a unit: ms, s or us"),
        Bad(input: "p99<20min", reason: "'min' is not a latency unit"),
        Bad(input: "p99<ms", reason: "the value after '<' is missing"),
        Bad(input: "p99<1.2.3ms", reason: "'1.2.3' is not a number"),
        Bad(input: "errors<1", reason: "an error rate needs '%'"),
        Bad(input: "errors<1ms", reason: "'ms' is not a unit of errors"),
        Bad(input: "errors<150%", reason: "more than 100%"),
        Bad(input: "throughput>1000ms", reason: "'ms' is not a throughput unit"),
    ]

    @Test(arguments: bad)
    func rejectsMalformedInputNamingItAndTheExpectedForm(_ bad: Bad) {
        #expect {
            _ = try LoadTestThreshold.parse(bad.input)
        } throws: { error in
            guard let error = error as? LoadTestThreshold.ParseError else { return false }
            let text = error.description
            return error.input == bad.input && text.contains("'\(bad.input)'") && text.contains(bad.reason)
                && text.contains("p99<20ms") && text.contains("errors<1%") && text.contains("throughput>1000")
        }
    }

    @Test func evaluateReportsEachThresholdWithItsActualValue() throws {
        let report = try SampleReports.knownLatencies()
        let thresholds = try ["p99<995ms", "p99<900ms", "errors<1%", "throughput>1000", "p50>=400ms", "max<=1000ms"]
            .map(LoadTestThreshold.parse)
        let results = report.evaluate(thresholds)
        #expect(results.map(\.expression) == thresholds.map(\.expression))
        #expect(results.map(\.passed) == [true, false, true, false, true, true])
        #expect(abs(results[0].actual - report.latency.p99) < 1e-9)
        #expect(results[2].actual == 0)
        #expect(abs(results[3].actual - 500) < 1e-9)
        #expect(report.failedThresholds(thresholds).map(\.expression) == ["p99<900ms", "throughput>1000"])
    }

    @Test func anErrorRateThresholdFailsOnErrors() throws {
        var report = try SampleReports.knownLatencies()
        report.errors.ratePercent = 2.5
        let results = report.evaluate([try .parse("errors<1%"), try .parse("errors<=2.5%")])
        #expect(results.map(\.passed) == [false, true])
        #expect(results[0].actual == 2.5)
    }
}
