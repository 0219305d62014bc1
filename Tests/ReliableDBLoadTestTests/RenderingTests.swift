import Foundation
import Testing

@testable import ReliableDBLoadTest

@Suite("Rendering")
struct RenderingTests {
    @Test func theTextSummaryIsAlignedAndNamesEveryNumber() throws {
        var report = try SampleReports.knownLatencies(rate: 100)
        report.thresholds = report.evaluate([try .parse("p99<20ms"), try .parse("errors<1%")])
        let text = report.textSummary()
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.first == "Load test: known latencies")
        #expect(
            text.contains(
                "  run           4 connections × 250 operations, mixed (50% reads), open model at 100.0 ops/s"
            )
        )
        #expect(text.contains("  operations    1000 (500 reads, 500 writes), 0 failed (0.00%)"))
        #expect(text.contains("  throughput    500.0 ops/s"))
        #expect(text.contains("  pipeline      none (raw driver)"))
        #expect(text.contains("  errors        none"))
        #expect(text.contains("FAIL  p99<20ms  (actual 990."))
        #expect(text.contains("pass  errors<1%  (actual 0.000)"))

        let header = try #require(lines.first { $0.hasPrefix("  latency ms") })
        let intended = try #require(lines.first { $0.hasPrefix("  from intended") })
        let service = try #require(lines.first { $0.hasPrefix("  service time") })
        #expect(
            header.count == intended.count && intended.count == service.count,
            "\n\(header)\n\(intended)\n\(service)"
        )
        // Each value ends where its column heading ends.
        for label in ["min", "p50", "p99.9", "max"] {
            let end = try #require(header.range(of: " \(label)")).upperBound
            let offset = header.distance(from: header.startIndex, to: end)
            #expect(intended[intended.index(intended.startIndex, offsetBy: offset - 1)].isNumber, "\(label)")
        }
        #expect(intended.contains("1000.0"), "the maximum, 1000 ms")
    }

    @Test func theClosedModelShowsOneLatencyRow() throws {
        let text = try SampleReports.knownLatencies().textSummary()
        #expect(text.contains("  per operation"))
        #expect(!text.contains("service time"))
        #expect(text.contains("closed model"))
    }

    @Test func jsonIsPrettySortedAndKeepsANullPipeline() throws {
        let report = try SampleReports.knownLatencies()
        let json = try report.json()
        #expect(json.hasPrefix("{\n  \"configuration\" : {"), "sorted keys, pretty-printed")
        #expect(json.contains("\"pipeline\" : null"))
        #expect(json.contains("\"schema\" : 1"))
        #expect(json.contains("\"latencyMs\" : {"))
        #expect(json.contains("\"p999\" : "))
        #expect(json.contains("\"startedAt\" : \"2023-11-14T22:13:20.000Z\""))
        #expect(schemaProblems(in: Data(json.utf8)) == [])
        let decoded = try LoadTestReport.decode(Data(json.utf8))
        #expect(decoded == report)
    }

    @Test func theConfigurationRoundTripsThroughJSON() throws {
        let configuration = LoadTestConfiguration(
            concurrentConnections: 3,
            operationsPerConnection: 7,
            operationType: .mixed(readRatio: 0.25),
            duration: .milliseconds(300),
            warmup: .milliseconds(1500),
            rate: 123.5
        )
        let data = try JSONEncoder().encode(configuration)
        #expect(try JSONDecoder().decode(LoadTestConfiguration.self, from: data) == configuration)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(object["operationType"] as? String == "mixed")
        #expect(object["readRatio"] as? Double == 0.25)
        #expect(object["durationSeconds"] as? Double == 0.3)
        #expect(object["warmupSeconds"] as? Double == 1.5)
        #expect(object["rate"] as? Double == 123.5)
        let plain = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(LoadTestConfiguration()))
        #expect((plain as? [String: Any])?["durationSeconds"] is NSNull, "absent values are written as null")
    }

    @Test func theSchemaCheckCatchesBrokenDocuments() throws {
        let valid =
            try JSONSerialization.jsonObject(with: try SampleReports.knownLatencies().jsonData()) as! [String: Any]
        func problems(_ mutate: (inout [String: Any]) -> Void) throws -> [String] {
            var document = valid
            mutate(&document)
            return schemaProblems(in: try JSONSerialization.data(withJSONObject: document))
        }
        #expect(try problems { _ in } == [])
        #expect(try problems { $0["perSecond"] = nil }.contains("missing key perSecond"))
        #expect(try problems { $0["pipeline"] = nil }.contains("missing key pipeline"))
        #expect(try problems { $0["schema"] = 2 }.contains("schema is not 1"))
        #expect(try !problems { $0["totalOperations"] = 999 }.isEmpty)
        #expect(
            try !problems {
                var latency = $0["latencyMs"] as! [String: Any]
                latency["p99"] = 5000.0
                $0["latencyMs"] = latency
            }.isEmpty
        )
        #expect(
            try !problems {
                var errors = $0["errors"] as! [String: Any]
                var byClass = errors["byClass"] as! [String: Any]
                byClass["timeout"] = nil
                errors["byClass"] = byClass
                $0["errors"] = errors
            }.isEmpty
        )
        #expect(try problems { $0["throughput"] = "fast" }.contains("throughput is not a number"))
    }

    @Test func theHTMLPageIsSelfContainedWithBothPlotsAndEscapesText() throws {
        var report = try SampleReports.knownLatencies(rate: 50)
        report.workload = "sqlite <script>alert(\"x\")</script> & co"
        report.thresholds = report.evaluate([try .parse("p99<20ms")])
        let html = report.html()
        #expect(selfContainmentProblems(in: html) == [])
        #expect(!html.contains("<script>"))
        #expect(html.contains("sqlite &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co"))
        #expect(html.contains("aria-label=\"Latency by percentile\""))
        #expect(html.contains("aria-label=\"Throughput per second\""))
        #expect(html.contains("<polyline class=\"curve\""))
        #expect(html.contains("<polyline class=\"p99\""))
        #expect(html.contains(">99.9%</text>"), "the nines scale is labelled")
        #expect(html.contains("<span class=\"fail\">FAIL</span>"))
        #expect(html.contains("service time"))
        // One bar per second of the series.
        #expect(html.components(separatedBy: "<rect class=\"ops\"").count - 1 == report.perSecond.count)
    }

    @Test func niceCeilingsRoundUpToOneTwoOrFive() {
        #expect(LoadTestReport.niceCeiling(0) == 1)
        #expect(LoadTestReport.niceCeiling(0.7) == 1)
        #expect(LoadTestReport.niceCeiling(1.2) == 2)
        #expect(LoadTestReport.niceCeiling(3) == 5)
        #expect(LoadTestReport.niceCeiling(7.5) == 10)
        #expect(LoadTestReport.niceCeiling(1000) == 1000)
        #expect(LoadTestReport.niceCeiling(1001) == 2000)
    }
}
