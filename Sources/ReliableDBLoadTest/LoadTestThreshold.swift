import Foundation

/// A pass/fail condition on a report, such as `p99<20ms`, `p50<=5ms`, `errors<1%` or
/// `throughput>1000` (`reliabledb loadtest --threshold`).
///
/// Grammar: `METRIC OPERATOR VALUE[UNIT]`, spaces allowed anywhere, metric names case-insensitive.
/// - latency (from intended start): `min`, `mean` (`avg`), `p50` (`median`), `p90`, `p95`, `p99`,
///   `p99.9` (`p999`), `max`; unit required: `ms`, `s` or `us`/`µs`.
/// - `errors` (`error_rate`): failed share of operations; unit `%` required.
/// - `throughput` (`rps`): operations per second; no unit, or `ops/s`, `/s`, `rps`.
/// - operators: `<`, `<=`, `>`, `>=`.
public struct LoadTestThreshold: Sendable, Equatable, CustomStringConvertible {
    public enum LatencyStatistic: String, Sendable, CaseIterable {
        case min, mean, p50, p90, p95, p99
        case p999 = "p99.9"
        case max
    }

    public enum Metric: Sendable, Equatable {
        /// In milliseconds.
        case latency(LatencyStatistic)
        /// Failed operations in percent.
        case errorRate
        /// Operations per second.
        case throughput
    }

    public enum Comparison: String, Sendable, CaseIterable {
        case lessThan = "<"
        case lessThanOrEqual = "<="
        case greaterThan = ">"
        case greaterThanOrEqual = ">="

        func holds(_ actual: Double, _ limit: Double) -> Bool {
            switch self {
            case .lessThan: actual < limit
            case .lessThanOrEqual: actual <= limit
            case .greaterThan: actual > limit
            case .greaterThanOrEqual: actual >= limit
            }
        }
    }

    /// The text the threshold was parsed from.
    public var expression: String
    public var metric: Metric
    public var comparison: Comparison
    /// In the metric's unit: milliseconds, percent or operations per second.
    public var limit: Double

    public init(expression: String, metric: Metric, comparison: Comparison, limit: Double) {
        self.expression = expression
        self.metric = metric
        self.comparison = comparison
        self.limit = limit
    }

    public var description: String { expression }

    /// The threshold could not be parsed: names the input, what is wrong and the expected form.
    public struct ParseError: Error, CustomStringConvertible, Equatable, Sendable {
        public var input: String
        public var reason: String

        public static let expectedForm =
            "expected METRIC OPERATOR VALUE such as 'p99<20ms', 'p50<=5ms', 'errors<1%' or 'throughput>1000' "
            + "(latency metrics min, mean, p50, p90, p95, p99, p99.9, max in ms, s or us; errors in %; "
            + "throughput in operations/s; operators <, <=, >, >=)"

        public var description: String {
            "Invalid threshold '\(input)': \(reason); \(Self.expectedForm)"
        }
    }

    /// Parses `p99<20ms`, `errors<1%`, `throughput>1000` and the like (see the type's grammar).
    public static func parse(_ input: String) throws(ParseError) -> LoadTestThreshold {
        func fail(_ reason: String) -> ParseError { ParseError(input: input, reason: reason) }
        let text = input.filter { !$0.isWhitespace }
        guard !text.isEmpty else { throw fail("it is empty") }
        guard let operatorStart = text.firstIndex(where: { $0 == "<" || $0 == ">" || $0 == "=" }) else {
            throw fail("it has no comparison operator")
        }
        let name = text[..<operatorStart].lowercased()
        let operatorText = text[operatorStart...].prefix { "<>=!".contains($0) }
        guard let comparison = Comparison(rawValue: String(operatorText)) else {
            throw fail("'\(operatorText)' is not an operator (use <, <=, > or >=)")
        }
        let rest = text[operatorText.endIndex...]
        guard !name.isEmpty else { throw fail("the metric before '\(comparison.rawValue)' is missing") }
        guard let metric = metric(named: name) else { throw fail("'\(name)' is not a metric") }

        let numberEnd = rest.firstIndex { !($0.isNumber || $0 == ".") } ?? rest.endIndex
        let numberText = rest[..<numberEnd]
        let unit = rest[numberEnd...].lowercased()
        guard !numberText.isEmpty else { throw fail("the value after '\(comparison.rawValue)' is missing") }
        guard let number = Double(numberText), number.isFinite else {
            throw fail("'\(numberText)' is not a number")
        }

        let limit: Double
        switch metric {
        case .latency:
            switch unit {
            case "ms": limit = number
            case "s": limit = number * 1000
            case "us", "µs": limit = number / 1000
            case "":
                throw fail("a latency needs a unit: ms, s or us (e.g. '\(name)\(comparison.rawValue)\(numberText)ms')")
            default: throw fail("'\(unit)' is not a latency unit (ms, s or us)")
            }
        case .errorRate:
            guard unit == "%" else {
                throw fail(
                    unit.isEmpty
                        ? "an error rate needs '%' (e.g. 'errors\(comparison.rawValue)\(numberText)%')"
                        : "'\(unit)' is not a unit of errors (use %)"
                )
            }
            guard number <= 100 else { throw fail("an error rate of \(numberText)% is more than 100%") }
            limit = number
        case .throughput:
            guard ["", "ops/s", "/s", "rps"].contains(unit) else {
                throw fail("'\(unit)' is not a throughput unit (a plain number of operations/s, or ops/s)")
            }
            limit = number
        }
        return LoadTestThreshold(expression: input, metric: metric, comparison: comparison, limit: limit)
    }

    private static func metric(named name: String) -> Metric? {
        switch name {
        case "min": .latency(.min)
        case "mean", "avg": .latency(.mean)
        case "p50", "median": .latency(.p50)
        case "p90": .latency(.p90)
        case "p95": .latency(.p95)
        case "p99": .latency(.p99)
        case "p99.9", "p999": .latency(.p999)
        case "max": .latency(.max)
        case "errors", "error", "error_rate", "errorrate": .errorRate
        case "throughput", "rps": .throughput
        default: nil
        }
    }

    /// The report's value of this threshold's metric, in its unit.
    public func actual(in report: LoadTestReport) -> Double {
        switch metric {
        case .latency(let statistic):
            let latency = report.latency
            return switch statistic {
            case .min: latency.min
            case .mean: latency.mean
            case .p50: latency.p50
            case .p90: latency.p90
            case .p95: latency.p95
            case .p99: latency.p99
            case .p999: latency.p999
            case .max: latency.max
            }
        case .errorRate:
            return report.errors.ratePercent
        case .throughput:
            return report.throughput
        }
    }

    /// Whether `report` meets this threshold.
    public func isMet(by report: LoadTestReport) -> Bool {
        comparison.holds(actual(in: report), limit)
    }
}

extension LoadTestReport {
    /// Checks every threshold against this report, in order. The failed ones are those with
    /// `passed == false`; store the results in ``thresholds`` to have them printed and exported.
    public func evaluate(_ thresholds: [LoadTestThreshold]) -> [ThresholdResult] {
        thresholds.map {
            ThresholdResult(expression: $0.expression, actual: $0.actual(in: self), passed: $0.isMet(by: self))
        }
    }

    /// The thresholds `report` misses.
    public func failedThresholds(_ thresholds: [LoadTestThreshold]) -> [LoadTestThreshold] {
        thresholds.filter { !$0.isMet(by: self) }
    }
}
