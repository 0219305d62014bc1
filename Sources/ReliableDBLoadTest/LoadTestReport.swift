import Foundation

// MARK: - The report

/// The result of one load test: what `DatabaseLoadTester.runLoadTest` returns and what
/// `reliabledb loadtest --json` prints.
///
/// ## JSON schema, version 1
///
/// `schema` is this layout's version. Fields may be added within a version; a field changing
/// meaning or disappearing raises it. Latencies are milliseconds (floating point, microsecond
/// resolution), rates are per second, timestamps are ISO 8601 in UTC. Every key below is always
/// present; only the ones marked `| null` can be null.
///
/// ```text
/// schema                   integer   1
/// workload                 string    what ran, e.g. "sqlite reliabledb.sqlite (ReliableDB)"
/// configuration            object    the run's settings:
///   concurrentConnections  integer   workers (>= 1)
///   operationsPerConnection integer  per worker; ignored when durationSeconds is set
///   operationType          string    "read" | "write" | "mixed"
///   readRatio              number    share of reads, 0...1 (1 for read, 0 for write)
///   durationSeconds        number | null   time-limited run instead of a count
///   warmupSeconds          number    unmeasured warmup before the run
///   rate                   number | null   open model: operations/s scheduled; null = closed model
/// startedAt, endedAt       string    the measured phase (warmup excluded)
/// elapsedSeconds           number    length of the measured phase
/// totalOperations          integer   = successfulOperations + failedOperations = reads + writes
/// successfulOperations     integer
/// failedOperations         integer   = errors.total
/// reads, writes            integer
/// throughput               number    totalOperations / elapsedSeconds
/// successfulThroughput     number    successfulOperations / elapsedSeconds
/// latencyMs                object    from each operation's intended start (its actual start in
///                                    the closed model), every operation, failed ones included:
///   count                  integer   = totalOperations
///   min, mean, p50, p90, p95, p99, p999, max   numbers, min <= p50 <= p90 <= p95 <= p99 <= p999 <= max
/// serviceTimeMs            object    the same from each operation's actual start (the database's
///                                    own time; equals latencyMs in the closed model)
/// latencyDistribution      array     the latency curve, ascending in both fields:
///   percentile             number    0...100
///   latencyMs              number
/// errors                   object
///   total                  integer   failed operations
///   ratePercent            number    total * 100 / totalOperations (0 without operations)
///   byClass                object    class -> integer, every class present: transient_transaction,
///                                    connection, overload, timeout, caller, cancelled, fatal, other;
///                                    sums to total. Breaker rejections count as overload.
///   samples                object    class -> string, the first error message seen per class
/// pipeline                 object | null   the ReliableDB pipeline during the measured phase;
///                                    null when the workload bypasses ReliableDB (--raw):
///   circuitBreakerRejections integer calls rejected by the breaker
///   retries                integer   retries scheduled
///   timeouts               integer   operations that hit their deadline
///   circuitBreakerState    string    the breaker's state at the end ("CLOSED", "OPEN", ...)
///   poolMax                integer   the pool's connection limit
///   poolAcquireTimeouts    integer   waits for a connection that gave up
///   poolAcquireMeanMs      number    mean wait for a connection since the database opened (0
///                                    when the backend does not measure it)
///   poolAcquireMaxMs       number    longest such wait
/// perSecond                array     one entry per second of the measured phase, by completion time:
///   second                 integer   0, 1, 2, ... from startedAt (the last one may be partial)
///   operations             integer   completed in that second; the entries sum to totalOperations
///   errors                 integer   failed in that second
///   p99Ms                  number    99th percentile latency of that second's operations
/// thresholds               array     results of the --threshold checks, in the order given:
///   expression             string    as given, e.g. "p99<20ms"
///   actual                 number    the measured value in the threshold's unit (ms, %, ops/s)
///   passed                 boolean
/// ```
public struct LoadTestReport: Sendable, Equatable, Codable {
    /// The JSON layout version this type writes.
    public static let currentSchema = 1

    public var schema: Int
    public var workload: String
    public var configuration: LoadTestConfiguration
    public var startedAt: Date
    public var endedAt: Date
    public var elapsedSeconds: Double
    public var totalOperations: Int
    public var successfulOperations: Int
    public var failedOperations: Int
    public var reads: Int
    public var writes: Int
    /// Operations (successful or not) per second.
    public var throughput: Double
    public var successfulThroughput: Double
    /// From each operation's intended start.
    public var latency: LatencySummary
    /// From each operation's actual start.
    public var serviceTime: LatencySummary
    public var latencyDistribution: [PercentilePoint]
    public var errors: ErrorSummary
    public var pipeline: PipelineSummary?
    public var perSecond: [SecondSample]
    public var thresholds: [ThresholdResult]

    public init(
        schema: Int = LoadTestReport.currentSchema,
        workload: String,
        configuration: LoadTestConfiguration,
        startedAt: Date,
        endedAt: Date,
        elapsedSeconds: Double,
        totalOperations: Int,
        successfulOperations: Int,
        failedOperations: Int,
        reads: Int,
        writes: Int,
        throughput: Double,
        successfulThroughput: Double,
        latency: LatencySummary,
        serviceTime: LatencySummary,
        latencyDistribution: [PercentilePoint],
        errors: ErrorSummary,
        pipeline: PipelineSummary?,
        perSecond: [SecondSample],
        thresholds: [ThresholdResult] = []
    ) {
        self.schema = schema
        self.workload = workload
        self.configuration = configuration
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.elapsedSeconds = elapsedSeconds
        self.totalOperations = totalOperations
        self.successfulOperations = successfulOperations
        self.failedOperations = failedOperations
        self.reads = reads
        self.writes = writes
        self.throughput = throughput
        self.successfulThroughput = successfulThroughput
        self.latency = latency
        self.serviceTime = serviceTime
        self.latencyDistribution = latencyDistribution
        self.errors = errors
        self.pipeline = pipeline
        self.perSecond = perSecond
        self.thresholds = thresholds
    }

    enum CodingKeys: String, CodingKey {
        case schema, workload, configuration, startedAt, endedAt, elapsedSeconds, totalOperations
        case successfulOperations, failedOperations, reads, writes, throughput, successfulThroughput
        case latency = "latencyMs"
        case serviceTime = "serviceTimeMs"
        case latencyDistribution, errors, pipeline, perSecond, thresholds
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(schema, forKey: .schema)
        try container.encode(workload, forKey: .workload)
        try container.encode(configuration, forKey: .configuration)
        try container.encode(startedAt, forKey: .startedAt)
        try container.encode(endedAt, forKey: .endedAt)
        try container.encode(elapsedSeconds, forKey: .elapsedSeconds)
        try container.encode(totalOperations, forKey: .totalOperations)
        try container.encode(successfulOperations, forKey: .successfulOperations)
        try container.encode(failedOperations, forKey: .failedOperations)
        try container.encode(reads, forKey: .reads)
        try container.encode(writes, forKey: .writes)
        try container.encode(throughput, forKey: .throughput)
        try container.encode(successfulThroughput, forKey: .successfulThroughput)
        try container.encode(latency, forKey: .latency)
        try container.encode(serviceTime, forKey: .serviceTime)
        try container.encode(latencyDistribution, forKey: .latencyDistribution)
        try container.encode(errors, forKey: .errors)
        // Written as null rather than left out, so the key is always there.
        try container.encode(pipeline, forKey: .pipeline)
        try container.encode(perSecond, forKey: .perSecond)
        try container.encode(thresholds, forKey: .thresholds)
    }

    /// The report as JSON: pretty-printed, keys sorted, dates in ISO 8601.
    public func jsonData() throws -> Data {
        try Self.makeEncoder().encode(self)
    }

    /// ``jsonData()`` as a string.
    public func json() throws -> String {
        String(decoding: try jsonData(), as: UTF8.self)
    }

    /// Reads a report written by ``jsonData()``.
    public static func decode(_ data: Data) throws -> LoadTestReport {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let date = parseTimestamp(text) else {
                throw DecodingError.dataCorrupted(
                    .init(codingPath: decoder.codingPath, debugDescription: "not an ISO 8601 timestamp: \(text)")
                )
            }
            return date
        }
        return try decoder.decode(LoadTestReport.self, from: data)
    }

    static func makeEncoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(formatTimestamp(date))
        }
        return encoder
    }
}

// MARK: - Timestamps

/// ISO 8601 in UTC with milliseconds, e.g. `2025-01-31T12:00:00.123Z`.
func formatTimestamp(_ date: Date) -> String {
    Date.ISO8601FormatStyle(includingFractionalSeconds: true).format(date)
}

func parseTimestamp(_ text: String) -> Date? {
    (try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text))
        ?? (try? Date.ISO8601FormatStyle().parse(text))
}

// MARK: - Summaries

/// Latency statistics in milliseconds from one merged HdrHistogram (3 significant digits).
public struct LatencySummary: Sendable, Equatable, Codable {
    public var count: Int
    public var min: Double
    public var mean: Double
    public var p50: Double
    public var p90: Double
    public var p95: Double
    public var p99: Double
    /// The 99.9th percentile.
    public var p999: Double
    public var max: Double

    public init(
        count: Int,
        min: Double,
        mean: Double,
        p50: Double,
        p90: Double,
        p95: Double,
        p99: Double,
        p999: Double,
        max: Double
    ) {
        self.count = count
        self.min = min
        self.mean = mean
        self.p50 = p50
        self.p90 = p90
        self.p95 = p95
        self.p99 = p99
        self.p999 = p999
        self.max = max
    }

    public static let empty = LatencySummary(
        count: 0,
        min: 0,
        mean: 0,
        p50: 0,
        p90: 0,
        p95: 0,
        p99: 0,
        p999: 0,
        max: 0
    )

    /// The values in order, with their labels (`min`, `mean`, `p50`, ..., `max`).
    public var labeledValues: [(label: String, milliseconds: Double)] {
        [
            ("min", min), ("mean", mean), ("p50", p50), ("p90", p90), ("p95", p95), ("p99", p99),
            ("p99.9", p999), ("max", max),
        ]
    }
}

/// One point of the latency curve.
public struct PercentilePoint: Sendable, Equatable, Codable {
    public var percentile: Double
    public var latencyMs: Double

    public init(percentile: Double, latencyMs: Double) {
        self.percentile = percentile
        self.latencyMs = latencyMs
    }
}

/// Failed operations by class.
public struct ErrorSummary: Sendable, Equatable, Codable {
    public var total: Int
    public var ratePercent: Double
    /// Every class of ``LoadTestErrorClassification/classNames``, zero or not.
    public var byClass: [String: Int]
    /// The first message seen per class.
    public var samples: [String: String]

    public init(total: Int, ratePercent: Double, byClass: [String: Int], samples: [String: String]) {
        self.total = total
        self.ratePercent = ratePercent
        self.byClass = byClass
        self.samples = samples
    }
}

/// What the ReliableDB pipeline did during the measured phase.
public struct PipelineSummary: Sendable, Equatable, Codable {
    public var circuitBreakerRejections: Int
    public var retries: Int
    public var timeouts: Int
    public var circuitBreakerState: String
    public var poolMax: Int
    public var poolAcquireTimeouts: Int
    public var poolAcquireMeanMs: Double
    public var poolAcquireMaxMs: Double

    public init(
        circuitBreakerRejections: Int,
        retries: Int,
        timeouts: Int,
        circuitBreakerState: String,
        poolMax: Int,
        poolAcquireTimeouts: Int,
        poolAcquireMeanMs: Double,
        poolAcquireMaxMs: Double
    ) {
        self.circuitBreakerRejections = circuitBreakerRejections
        self.retries = retries
        self.timeouts = timeouts
        self.circuitBreakerState = circuitBreakerState
        self.poolMax = poolMax
        self.poolAcquireTimeouts = poolAcquireTimeouts
        self.poolAcquireMeanMs = poolAcquireMeanMs
        self.poolAcquireMaxMs = poolAcquireMaxMs
    }
}

/// One second of the measured phase.
public struct SecondSample: Sendable, Equatable, Codable {
    public var second: Int
    public var operations: Int
    public var errors: Int
    public var p99Ms: Double

    public init(second: Int, operations: Int, errors: Int, p99Ms: Double) {
        self.second = second
        self.operations = operations
        self.errors = errors
        self.p99Ms = p99Ms
    }
}

/// One threshold's verdict.
public struct ThresholdResult: Sendable, Equatable, Codable {
    public var expression: String
    /// The measured value in the threshold's unit: milliseconds, percent or operations/s.
    public var actual: Double
    public var passed: Bool

    public init(expression: String, actual: Double, passed: Bool) {
        self.expression = expression
        self.actual = actual
        self.passed = passed
    }
}

// MARK: - Coding the configuration

extension LoadTestConfiguration: Codable {
    enum CodingKeys: String, CodingKey {
        case concurrentConnections, operationsPerConnection, operationType, readRatio, durationSeconds
        case warmupSeconds, rate
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        concurrentConnections = try container.decode(Int.self, forKey: .concurrentConnections)
        operationsPerConnection = try container.decode(Int.self, forKey: .operationsPerConnection)
        let type = try container.decode(String.self, forKey: .operationType)
        let ratio = try container.decode(Double.self, forKey: .readRatio)
        switch type {
        case "read": operationType = .read
        case "write": operationType = .write
        case "mixed": operationType = .mixed(readRatio: ratio)
        default:
            throw DecodingError.dataCorruptedError(
                forKey: .operationType,
                in: container,
                debugDescription: "expected read, write or mixed, got \(type)"
            )
        }
        duration = try container.decodeIfPresent(Double.self, forKey: .durationSeconds).map(Duration.fromSeconds)
        warmup = .fromSeconds(try container.decode(Double.self, forKey: .warmupSeconds))
        rate = try container.decodeIfPresent(Double.self, forKey: .rate)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(concurrentConnections, forKey: .concurrentConnections)
        try container.encode(operationsPerConnection, forKey: .operationsPerConnection)
        try container.encode(operationType.name, forKey: .operationType)
        try container.encode(operationType.readRatio, forKey: .readRatio)
        try container.encode(duration.map(\.secondsValue), forKey: .durationSeconds)
        try container.encode(warmup.secondsValue, forKey: .warmupSeconds)
        try container.encode(rate, forKey: .rate)
    }
}

extension Duration {
    /// `seconds`, rounded to whole nanoseconds (so 0.3 s reads back as exactly 300 ms).
    static func fromSeconds(_ seconds: Double) -> Duration {
        .nanoseconds(Int64((seconds * 1e9).rounded()))
    }

    /// Seconds as a floating-point number.
    var secondsValue: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
