import Foundation
import ReliableDB
import Synchronization
import Testing

@testable import ReliableDBLoadTest

// MARK: Scripted workload

/// A workload without a database: operations return at once, or stall, or throw, as scripted.
final class ScriptedWorkload: LoadWorkload {
    let name = "scripted"
    /// The first operation sleeps this long (then every operation returns at once).
    let firstOperationStall: Duration?
    /// Every operation sleeps this long.
    let operationTime: Duration?
    /// The error operation number `n` (0-based, counted over reads and writes) throws, if any.
    let failure: @Sendable (Int, LoadOperation) -> (any Error)?
    let setUpError: (any Error)?
    /// Awaited by every operation before it returns.
    let gate: (@Sendable () async -> Void)?
    let calls = Atomic<Int>(0)
    let setUpCalls = Atomic<Int>(0)
    let tearDownCalls = Atomic<Int>(0)
    /// Whether tear-down ran in a cancelled task (it must not).
    let tearDownSawCancellation = Atomic<Bool>(false)

    init(
        firstOperationStall: Duration? = nil,
        operationTime: Duration? = nil,
        setUpError: (any Error)? = nil,
        gate: (@Sendable () async -> Void)? = nil,
        failure: @escaping @Sendable (Int, LoadOperation) -> (any Error)? = { _, _ in nil }
    ) {
        self.firstOperationStall = firstOperationStall
        self.operationTime = operationTime
        self.setUpError = setUpError
        self.gate = gate
        self.failure = failure
    }

    func setUp() async throws {
        setUpCalls.add(1, ordering: .relaxed)
        if let setUpError { throw setUpError }
    }

    func tearDown() async throws {
        if Task.isCancelled { tearDownSawCancellation.store(true, ordering: .relaxed) }
        tearDownCalls.add(1, ordering: .relaxed)
    }

    func read() async throws { try await operate(.read) }
    func write() async throws { try await operate(.write) }

    private func operate(_ operation: LoadOperation) async throws {
        let number = calls.add(1, ordering: .relaxed).oldValue
        if number == 0, let firstOperationStall {
            try await Task.sleep(for: firstOperationStall)
        }
        if let operationTime {
            try await Task.sleep(for: operationTime)
        }
        await gate?()
        if let error = failure(number, operation) { throw error }
    }

    func classify(_ error: any Error) -> ErrorClass? {
        if error is CallerMistake { return .caller }
        return LoadTestErrorClassification.classify(error)
    }
}

struct CallerMistake: Error, CustomStringConvertible {
    var description: String { "the caller's mistake" }
}

struct Unclassified: Error, CustomStringConvertible {
    var description: String { "something unexpected" }
}

// MARK: Schema validation

/// Checks a `--json` report against the schema documented on ``LoadTestReport``: every key there
/// with the documented type, and the documented relations between the numbers. Returns the
/// problems found (empty when the document is valid).
func schemaProblems(in data: Data) -> [String] {
    guard let object = try? JSONSerialization.jsonObject(with: data), let root = object as? [String: Any] else {
        return ["not a JSON object"]
    }
    var problems: [String] = []
    var checker = SchemaChecker()

    checker.integer(root, "schema", path: "")
    if (root["schema"] as? NSNumber)?.intValue != 1 { problems.append("schema is not 1") }
    checker.string(root, "workload", path: "")
    checker.string(root, "startedAt", path: "")
    checker.string(root, "endedAt", path: "")
    for key in ["startedAt", "endedAt"] {
        if let text = root[key] as? String,
            (try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text)) == nil
        {
            problems.append("\(key) is not ISO 8601: \(text)")
        }
    }
    for key in ["elapsedSeconds", "throughput", "successfulThroughput"] {
        checker.number(root, key, path: "")
    }
    for key in ["totalOperations", "successfulOperations", "failedOperations", "reads", "writes"] {
        checker.integer(root, key, path: "")
    }

    if let configuration = checker.object(root, "configuration", path: "") {
        checker.integer(configuration, "concurrentConnections", path: "configuration.")
        checker.integer(configuration, "operationsPerConnection", path: "configuration.")
        checker.string(configuration, "operationType", path: "configuration.")
        if let type = configuration["operationType"] as? String, !["read", "write", "mixed"].contains(type) {
            problems.append("configuration.operationType is \(type)")
        }
        checker.number(configuration, "readRatio", path: "configuration.")
        checker.number(configuration, "warmupSeconds", path: "configuration.")
        checker.numberOrNull(configuration, "durationSeconds", path: "configuration.")
        checker.numberOrNull(configuration, "rate", path: "configuration.")
    }

    let summaryKeys = ["min", "mean", "p50", "p90", "p95", "p99", "p999", "max"]
    for key in ["latencyMs", "serviceTimeMs"] {
        guard let summary = checker.object(root, key, path: "") else { continue }
        checker.integer(summary, "count", path: "\(key).")
        for statistic in summaryKeys {
            checker.number(summary, statistic, path: "\(key).")
        }
        let chain = ["min", "p50", "p90", "p95", "p99", "p999", "max"].compactMap {
            (summary[$0] as? NSNumber)?.doubleValue
        }
        if chain.count == 7, zip(chain, chain.dropFirst()).contains(where: { $0 > $1 }) {
            problems.append("\(key) percentiles decrease: \(chain)")
        }
        if let count = (summary["count"] as? NSNumber)?.intValue,
            let total = (root["totalOperations"] as? NSNumber)?.intValue,
            count != total
        {
            problems.append("\(key).count \(count) != totalOperations \(total)")
        }
    }

    if let distribution = checker.array(root, "latencyDistribution", path: "") {
        var previous: (Double, Double)?
        for (index, element) in distribution.enumerated() {
            guard let point = element as? [String: Any] else {
                problems.append("latencyDistribution[\(index)] is not an object")
                continue
            }
            checker.number(point, "percentile", path: "latencyDistribution[\(index)].")
            checker.number(point, "latencyMs", path: "latencyDistribution[\(index)].")
            let current = (
                (point["percentile"] as? NSNumber)?.doubleValue ?? -1,
                (point["latencyMs"] as? NSNumber)?.doubleValue ?? -1
            )
            if !(0...100).contains(current.0) {
                problems.append("latencyDistribution[\(index)] percentile out of range")
            }
            if let previous, current.0 <= previous.0 || current.1 < previous.1 {
                problems.append("latencyDistribution is not ascending at \(index)")
            }
            previous = current
        }
    }

    let total = (root["totalOperations"] as? NSNumber)?.intValue
    let successful = (root["successfulOperations"] as? NSNumber)?.intValue
    let failed = (root["failedOperations"] as? NSNumber)?.intValue
    let reads = (root["reads"] as? NSNumber)?.intValue
    let writes = (root["writes"] as? NSNumber)?.intValue
    if let total, let successful, let failed, total != successful + failed {
        problems.append("totalOperations \(total) != successful \(successful) + failed \(failed)")
    }
    if let total, let reads, let writes, total != reads + writes {
        problems.append("totalOperations \(total) != reads \(reads) + writes \(writes)")
    }

    if let errors = checker.object(root, "errors", path: "") {
        checker.integer(errors, "total", path: "errors.")
        checker.number(errors, "ratePercent", path: "errors.")
        if let byClass = checker.object(errors, "byClass", path: "errors.") {
            let expected: Set = [
                "transient_transaction", "connection", "overload", "timeout", "caller", "cancelled", "fatal", "other",
            ]
            if Set(byClass.keys) != expected { problems.append("errors.byClass keys \(byClass.keys.sorted())") }
            let sum = byClass.values.compactMap { ($0 as? NSNumber)?.intValue }.reduce(0, +)
            if let errorTotal = (errors["total"] as? NSNumber)?.intValue, sum != errorTotal {
                problems.append("errors.byClass sums to \(sum), errors.total is \(errorTotal)")
            }
        }
        if let samples = checker.object(errors, "samples", path: "errors."),
            samples.values.contains(where: { !($0 is String) })
        {
            problems.append("errors.samples has a non-string value")
        }
        if let errorTotal = (errors["total"] as? NSNumber)?.intValue, let failed, errorTotal != failed {
            problems.append("errors.total \(errorTotal) != failedOperations \(failed)")
        }
    }

    if root.keys.contains("pipeline") {
        if let pipeline = root["pipeline"] as? [String: Any] {
            for key in ["circuitBreakerRejections", "retries", "timeouts", "poolMax", "poolAcquireTimeouts"] {
                checker.integer(pipeline, key, path: "pipeline.")
            }
            checker.string(pipeline, "circuitBreakerState", path: "pipeline.")
            checker.number(pipeline, "poolAcquireMeanMs", path: "pipeline.")
            checker.number(pipeline, "poolAcquireMaxMs", path: "pipeline.")
        } else if !(root["pipeline"] is NSNull) {
            problems.append("pipeline is neither an object nor null")
        }
    } else {
        problems.append("missing key pipeline")
    }

    if let seconds = checker.array(root, "perSecond", path: "") {
        var sum = 0
        for (index, element) in seconds.enumerated() {
            guard let sample = element as? [String: Any] else {
                problems.append("perSecond[\(index)] is not an object")
                continue
            }
            for key in ["second", "operations", "errors"] {
                checker.integer(sample, key, path: "perSecond[\(index)].")
            }
            checker.number(sample, "p99Ms", path: "perSecond[\(index)].")
            if (sample["second"] as? NSNumber)?.intValue != index { problems.append("perSecond[\(index)].second") }
            sum += (sample["operations"] as? NSNumber)?.intValue ?? 0
        }
        if let total, sum != total {
            problems.append("perSecond operations sum to \(sum), totalOperations is \(total)")
        }
    }

    if let thresholds = checker.array(root, "thresholds", path: "") {
        for (index, element) in thresholds.enumerated() {
            guard let result = element as? [String: Any] else {
                problems.append("thresholds[\(index)] is not an object")
                continue
            }
            checker.string(result, "expression", path: "thresholds[\(index)].")
            checker.number(result, "actual", path: "thresholds[\(index)].")
            if !(result["passed"] is Bool) { problems.append("thresholds[\(index)].passed is not a boolean") }
        }
    }
    return problems + checker.problems
}

private struct SchemaChecker {
    var problems: [String] = []

    private mutating func value(_ object: [String: Any], _ key: String, path: String) -> Any? {
        guard let value = object[key] else {
            problems.append("missing key \(path)\(key)")
            return nil
        }
        return value
    }

    mutating func string(_ object: [String: Any], _ key: String, path: String) {
        if let value = value(object, key, path: path), !(value is String) {
            problems.append("\(path)\(key) is not a string")
        }
    }

    mutating func number(_ object: [String: Any], _ key: String, path: String) {
        if let value = value(object, key, path: path) {
            if let number = value as? NSNumber {
                if !number.doubleValue.isFinite { problems.append("\(path)\(key) is not finite") }
            } else {
                problems.append("\(path)\(key) is not a number")
            }
        }
    }

    mutating func numberOrNull(_ object: [String: Any], _ key: String, path: String) {
        if let value = value(object, key, path: path), !(value is NSNull), !(value is NSNumber) {
            problems.append("\(path)\(key) is neither a number nor null")
        }
    }

    mutating func integer(_ object: [String: Any], _ key: String, path: String) {
        if let value = value(object, key, path: path) {
            guard let number = value as? NSNumber, number.doubleValue == number.doubleValue.rounded(),
                number.doubleValue >= 0
            else {
                problems.append("\(path)\(key) is not a non-negative integer")
                return
            }
        }
    }

    mutating func object(_ object: [String: Any], _ key: String, path: String) -> [String: Any]? {
        guard let value = value(object, key, path: path) else { return nil }
        guard let nested = value as? [String: Any] else {
            problems.append("\(path)\(key) is not an object")
            return nil
        }
        return nested
    }

    mutating func array(_ object: [String: Any], _ key: String, path: String) -> [Any]? {
        guard let value = value(object, key, path: path) else { return nil }
        guard let nested = value as? [Any] else {
            problems.append("\(path)\(key) is not an array")
            return nil
        }
        return nested
    }
}

// MARK: HTML

/// Why `html` is not a self-contained page with the two plots (empty when it is).
func selfContainmentProblems(in html: String) -> [String] {
    var problems: [String] = []
    let lowered = html.lowercased()
    for forbidden in ["<script src", "http://", "https://", "<link", "@import", "url(", "<img", "<iframe", "src="] {
        if lowered.contains(forbidden) { problems.append("contains \(forbidden)") }
    }
    let plots = lowered.components(separatedBy: "<svg").count - 1
    if plots != 2 { problems.append("has \(plots) <svg> elements, expected 2") }
    if !lowered.hasPrefix("<!doctype html>") { problems.append("no doctype") }
    if !lowered.contains("</html>") { problems.append("not closed") }
    if lowered.components(separatedBy: "<svg").count != lowered.components(separatedBy: "</svg>").count {
        problems.append("unbalanced <svg>")
    }
    return problems
}

// MARK: Environment

/// The throwaway PostgreSQL server `scripts/test` starts. Missing, the tests fail: never skipped.
enum PostgresTestServer {
    struct Missing: Error, CustomStringConvertible {
        var description: String {
            "RELIABLEDB_TEST_POSTGRES_URL is not set: run the tests with scripts/test, which starts PostgreSQL"
        }
    }

    static var urlString: String {
        get throws {
            guard let value = ProcessInfo.processInfo.environment["RELIABLEDB_TEST_POSTGRES_URL"], !value.isEmpty else {
                throw Missing()
            }
            return value
        }
    }

    static func url() throws -> PostgresURL {
        var url = try PostgresURL.parse(try urlString).get()
        url.sslMode = .disable
        url.applicationName = "rdb-loadtest-\(UUID().uuidString.prefix(8).lowercased())"
        return url
    }
}

/// A fresh temporary directory, removed when the value goes away.
final class TemporaryDirectory: Sendable {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("rdb-loadtest-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    func path(_ name: String) -> String {
        url.appendingPathComponent(name).path
    }

    deinit {
        try? FileManager.default.removeItem(at: url)
    }
}

/// A unique name for a load test table.
func makeTableName() -> String {
    "reliabledb_loadtest_" + String(UInt32.random(in: .min ... .max), radix: 16)
}
