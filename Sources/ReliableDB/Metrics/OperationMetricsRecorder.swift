import Histogram
import Synchronization

/// In-process counters and latency distributions of every operation the pipeline runs.
///
/// One lock and a few integer updates per operation. Latencies go into HdrHistograms (microsecond
/// resolution, two significant digits per operation name, three overall) so percentiles are exact
/// to 1% without keeping samples. Operation names are user-chosen strings, so only the first
/// ``maxOperationNames`` distinct names get their own entry; later ones share ``overflowName``,
/// which keeps memory and metric cardinality bounded.
public final class OperationMetricsRecorder: Sendable {
    public static let overflowName = "other"
    public let maxOperationNames: Int
    /// Operations slower than this count as slow (`DB_ALERT_QUERY_TIME_THRESHOLD`).
    public let slowQueryThreshold: Duration

    private let state: Mutex<State>
    private let active = Atomic<Int>(0)

    struct Accumulator: Sendable {
        var successes = 0
        var failures = 0
        var slow = 0
        var timeouts = 0
        var retries = 0
        var rejected = 0
        var shed = 0
        var totalMicroseconds: UInt64 = 0
        var histogram: Histogram<UInt64>

        init(digits: SignificantDigits) {
            histogram = Histogram(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: digits)
            histogram.autoResize = true
        }

        var count: Int { successes + failures }

        func summary() -> OperationStats {
            let count = histogram.totalCount
            func percentile(_ p: Double) -> Duration {
                count == 0 ? .zero : .microseconds(Int64(histogram.valueAtPercentile(p)))
            }
            return OperationStats(
                successes: successes,
                failures: failures,
                slow: slow,
                timeouts: timeouts,
                retries: retries,
                rejected: rejected,
                shed: shed,
                averageDuration: count == 0 ? .zero : .microseconds(Int64(totalMicroseconds / count)),
                p50: percentile(50),
                p95: percentile(95),
                p99: percentile(99),
                max: count == 0 ? .zero : .microseconds(Int64(histogram.max))
            )
        }
    }

    struct State: Sendable {
        var overall = Accumulator(digits: .three)
        var degraded = 0
        var operations: [String: Accumulator] = [:]
        var errorsByClass: [ErrorClass: Int] = [:]
    }

    public init(slowQueryThreshold: Duration = .seconds(1), maxOperationNames: Int = 50) {
        self.slowQueryThreshold = slowQueryThreshold
        self.maxOperationNames = maxOperationNames
        state = Mutex(State())
    }

    /// Operations currently in the pipeline.
    public var activeOperations: Int {
        active.load(ordering: .relaxed)
    }

    func operationStarted() {
        active.add(1, ordering: .relaxed)
    }

    /// How an operation ended, from the caller's point of view.
    enum Outcome {
        case success
        case failure(ErrorClass)
        case rejected
        /// Shed by the load-shedding limit (DatabaseOverloadedError); never sent.
        case shed
    }

    /// Ends an operation that is not counted (a health probe).
    func operationAbandoned() {
        active.subtract(1, ordering: .relaxed)
    }

    func operationFinished(_ name: String, duration: Duration, outcome: Outcome) {
        active.subtract(1, ordering: .relaxed)
        let micros = UInt64(max(0, duration.nanosecondsClamped / 1000))
        let slow = duration > slowQueryThreshold
        state.withLock { state in
            Self.apply(outcome, micros: micros, slow: slow, to: &state.overall)
            // One hash of the name in the common case: this runs under the lock every core shares.
            if let index = state.operations.index(forKey: name) {
                Self.apply(outcome, micros: micros, slow: slow, to: &state.operations.values[index])
            } else {
                let key = state.operations.count < maxOperationNames ? name : Self.overflowName
                Self.apply(
                    outcome,
                    micros: micros,
                    slow: slow,
                    to: &state.operations[key, default: Accumulator(digits: .two)]
                )
            }
            if case .failure(let errorClass) = outcome {
                state.errorsByClass[errorClass, default: 0] += 1
            }
        }
    }

    private static func apply(_ outcome: Outcome, micros: UInt64, slow: Bool, to accumulator: inout Accumulator) {
        switch outcome {
        case .rejected:
            accumulator.rejected += 1
            return
        case .shed:
            accumulator.shed += 1
            return
        case .success:
            accumulator.successes += 1
        case .failure(let errorClass):
            accumulator.failures += 1
            if errorClass == .timeout { accumulator.timeouts += 1 }
        }
        if slow { accumulator.slow += 1 }
        accumulator.totalMicroseconds &+= micros
        _ = accumulator.histogram.record(micros)
    }

    /// A read answered with an earlier result (ReadFallback.swift).
    func degradedAnswer() {
        state.withLock { $0.degraded += 1 }
    }

    /// Counts a retry under its operation's name, also before that name's first operation has
    /// finished (a retried first call is counted like any other).
    func retryScheduled(_ name: String) {
        state.withLock { state in
            state.overall.retries += 1
            if let index = state.operations.index(forKey: name) {
                state.operations.values[index].retries += 1
            } else {
                let key = state.operations.count < maxOperationNames ? name : Self.overflowName
                state.operations[key, default: Accumulator(digits: .two)].retries += 1
            }
        }
    }

    /// Counters and percentiles as they are now.
    public func snapshot() -> OperationMetricsSnapshot {
        let active = activeOperations
        return state.withLock { state in
            let overall = state.overall.summary()
            return OperationMetricsSnapshot(
                successfulQueries: overall.successes,
                failedQueries: overall.failures,
                slowQueries: overall.slow,
                timeouts: overall.timeouts,
                retries: overall.retries,
                rejectedByCircuitBreaker: overall.rejected,
                shedByLoadLimit: overall.shed,
                degradedAnswers: state.degraded,
                activeOperations: active,
                averageQueryTime: overall.averageDuration,
                p50QueryTime: overall.p50,
                p95QueryTime: overall.p95,
                p99QueryTime: overall.p99,
                maxQueryTime: overall.max,
                errorsByClass: state.errorsByClass,
                operations: state.operations.mapValues { $0.summary() }
            )
        }
    }
}

/// One operation name's counters and latency summary.
public struct OperationStats: Sendable, Equatable {
    public var successes: Int
    public var failures: Int
    public var slow: Int
    public var timeouts: Int
    public var retries: Int
    public var rejected: Int
    /// Shed by the load-shedding limit.
    public var shed: Int
    public var averageDuration: Duration
    public var p50: Duration
    public var p95: Duration
    public var p99: Duration
    public var max: Duration
}

/// The pipeline's counters at one instant (`performance` and `reliability` in `/api/health`).
public struct OperationMetricsSnapshot: Sendable, Equatable {
    public var successfulQueries: Int
    public var failedQueries: Int
    public var slowQueries: Int
    public var timeouts: Int
    public var retries: Int
    public var rejectedByCircuitBreaker: Int
    /// Answered at once with ``DatabaseOverloadedError`` by the load-shedding limit.
    public var shedByLoadLimit: Int
    /// Reads answered with an earlier result by ``ReliableDatabase/withFallback(_:_:)``.
    public var degradedAnswers: Int
    public var activeOperations: Int
    public var averageQueryTime: Duration
    public var p50QueryTime: Duration
    public var p95QueryTime: Duration
    public var p99QueryTime: Duration
    public var maxQueryTime: Duration
    public var errorsByClass: [ErrorClass: Int]
    /// Per operation name, bounded; names past the bound are folded into `other`.
    public var operations: [String: OperationStats]

    /// Failed share of finished operations in percent.
    public var errorRate: Double {
        let finished = successfulQueries + failedQueries
        return finished == 0 ? 0 : Double(failedQueries) * 100 / Double(finished)
    }
}
