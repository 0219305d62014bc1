import Testing

/// The checker is the oracle of the exporter tests, so it is tested on its own: it must accept
/// valid text and reject each kind of malformed text, or a passing exporter test proves nothing.
@Suite("Exposition checker")
struct ExpositionCheckerTests {
    static let valid = """
        # HELP up Whether the target answered, with a \\\\ and a \\n escape.
        # TYPE up gauge
        up 1
        up{job="a\\"b\\\\c\\nd",instance="x"} 0.5
        # TYPE errors_total counter
        errors_total{class="caller"} 3 1700000000000
        # TYPE latency_seconds histogram
        latency_seconds_bucket{op="a",le="0.5"} 1
        latency_seconds_bucket{op="a",le="1.0"} 2
        latency_seconds_bucket{op="a",le="+Inf"} 2
        latency_seconds_sum{op="a"} 1.25
        latency_seconds_count{op="a"} 2
        latency_seconds_bucket{op="b",le="0.5"} 0
        latency_seconds_bucket{op="b",le="1.0"} 0
        latency_seconds_bucket{op="b",le="+Inf"} 0
        latency_seconds_sum{op="b"} 0
        latency_seconds_count{op="b"} 0
        special{v="1"} +Inf
        special{v="2"} -Inf
        special{v="3"} NaN
        special{v="4"} -1.5e-3

        """

    @Test("Valid text parses, with escapes undone and histogram samples grouped under their family")
    func acceptsValidText() throws {
        let parsed = try Exposition(parsing: Self.valid)
        #expect(parsed.families["up"]?.help == "Whether the target answered, with a \\ and a \n escape.")
        #expect(parsed.value("up", ["job": "a\"b\\c\nd", "instance": "x"]) == 0.5)
        #expect(parsed.value("errors_total", ["class": "caller"]) == 3)
        #expect(parsed.families["latency_seconds"]?.samples.count == 10)
        #expect(parsed.bucketBounds("latency_seconds", ["op": "a"]) == ["0.5", "1.0", "+Inf"])
        #expect(parsed.value("special", ["v": "1"]) == .infinity)
        #expect(parsed.value("special", ["v": "3"])?.isNaN == true)
        #expect(parsed.value("special", ["v": "4"]) == -0.0015)
        #expect(parsed.order == ["up", "errors_total", "latency_seconds", "special"])
    }

    static let invalid: [(String, String)] = [
        ("no final line feed", "up 1"),
        ("other comment", "# hello\nup 1\n"),
        ("unknown type", "# TYPE up gauges\nup 1\n"),
        ("second TYPE", "# TYPE up gauge\n# TYPE up gauge\nup 1\n"),
        ("second HELP", "# HELP up a\n# HELP up a\nup 1\n"),
        ("empty HELP", "# HELP up\nup 1\n"),
        ("HELP after samples", "up 1\n# HELP up late\n"),
        ("TYPE after samples", "up 1\n# TYPE up gauge\n"),
        ("split family", "a 1\nb 1\na{x=\"1\"} 2\n"),
        ("duplicate series", "a{x=\"1\"} 1\na{x=\"1\"} 2\n"),
        ("metric name starts with digit", "1a 1\n"),
        ("metric name with dash", "a-b 1\n"),
        ("label name with colon", "a{x:y=\"1\"} 1\n"),
        ("reserved label name", "a{__name__=\"1\"} 1\n"),
        ("duplicate label", "a{x=\"1\",x=\"2\"} 1\n"),
        ("unquoted label value", "a{x=1} 1\n"),
        ("bad escape in label value", "a{x=\"\\t\"} 1\n"),
        ("unterminated label value", "a{x=\"1} 1\n"),
        ("trailing comma", "a{x=\"1\",} 1\n"),
        ("lowercase nan", "a nan\n"),
        ("inf without sign", "a inf\n"),
        ("not a number", "a one\n"),
        ("hex float", "a 0x1p3\n"),
        ("missing value", "a\n"),
        ("two spaces", "a  1\n"),
        ("fractional timestamp", "a 1 1.5\n"),
        ("bad escape in HELP", "# HELP a \\q\na 1\n"),
        ("negative counter", "# TYPE c counter\nc -1\n"),
        ("bare histogram sample", "# TYPE h histogram\nh 1\n"),
        (
            "buckets not ascending",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"
        ),
        ("no +Inf bucket", "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n"),
        (
            "counts decrease",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n"
        ),
        ("count differs from +Inf", "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n"),
        ("missing _sum", "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n"),
        ("missing _count", "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 2\n"),
        ("bucket without le", "# TYPE h histogram\nh_bucket 2\nh_sum 2\nh_count 2\n"),
        ("le not a number", "# TYPE h histogram\nh_bucket{le=\"inf\"} 2\nh_sum 2\nh_count 2\n"),
        (
            "histogram split by another family",
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nx 1\nh_sum 1\nh_count 1\n"
        ),
    ]

    @Test("Each kind of malformed text is rejected", arguments: invalid)
    func rejectsInvalidText(reason: String, text: String) {
        #expect(throws: Exposition.FormatError.self, "\(reason)") {
            try Exposition(parsing: text)
        }
    }
}
