/// How a load test runs: concurrent connections, operations per connection and the operation
/// type, plus a time limit, a warmup and an open-model rate.
///
/// - Closed model (``rate`` nil): each of ``concurrentConnections`` workers runs one operation after
///   another, ``operationsPerConnection`` times or until ``duration`` has passed.
/// - Open model (``rate`` set): operations are scheduled at fixed intended start times, `rate` per
///   second across all workers (`concurrentConnections × operationsPerConnection` of them, or until
///   ``duration``). Latency is measured from each operation's intended start, so time spent queued
///   behind a stalled operation counts as latency instead of silently lowering the offered load
///   (no coordinated omission).
public struct LoadTestConfiguration: Sendable, Equatable {
    /// What each operation is.
    public enum OperationType: Sendable, Equatable {
        case read
        case write
        /// A read with probability `readRatio` (0...1), a write otherwise.
        case mixed(readRatio: Double = 0.8)

        /// The share of operations that are reads.
        public var readRatio: Double {
            switch self {
            case .read: 1
            case .write: 0
            case .mixed(let ratio): ratio
            }
        }

        /// `read`, `write` or `mixed`.
        public var name: String {
            switch self {
            case .read: "read"
            case .write: "write"
            case .mixed: "mixed"
            }
        }
    }

    /// Workers running operations at once.
    public var concurrentConnections: Int
    /// Operations per worker; ignored when ``duration`` is set.
    public var operationsPerConnection: Int
    public var operationType: OperationType
    /// Run for this long instead of a number of operations.
    public var duration: Duration?
    /// Run the workload this long first, unmeasured (caches, connections, JIT-free but still warm).
    public var warmup: Duration
    /// Operations per second across all workers (open model); nil runs them back to back.
    public var rate: Double?

    public init(
        concurrentConnections: Int = 10,
        operationsPerConnection: Int = 100,
        operationType: OperationType = .mixed(),
        duration: Duration? = nil,
        warmup: Duration = .zero,
        rate: Double? = nil
    ) {
        self.concurrentConnections = concurrentConnections
        self.operationsPerConnection = operationsPerConnection
        self.operationType = operationType
        self.duration = duration
        self.warmup = warmup
        self.rate = rate
    }

    /// Operations the measured phase runs, or nil when it runs for a ``duration``.
    public var plannedOperations: Int? {
        duration == nil ? concurrentConnections * operationsPerConnection : nil
    }

    /// Every value that makes no sense, described; empty when the configuration is usable.
    public var problems: [String] {
        var problems: [String] = []
        if concurrentConnections < 1 {
            problems.append("concurrentConnections must be at least 1 (got \(concurrentConnections))")
        }
        if duration == nil, operationsPerConnection < 1 {
            problems.append("operationsPerConnection must be at least 1 (got \(operationsPerConnection))")
        }
        if case .mixed(let ratio) = operationType, !(0...1).contains(ratio) {
            problems.append("readRatio must be between 0 and 1 (got \(ratio))")
        }
        if let duration, duration <= .zero {
            problems.append("duration must be positive (got \(duration))")
        }
        if warmup < .zero {
            problems.append("warmup must not be negative (got \(warmup))")
        }
        if let rate, !(rate > 0 && rate.isFinite) {
            problems.append("rate must be a positive number of operations per second (got \(rate))")
        }
        return problems
    }
}

/// The configuration cannot be run; ``problems`` says why.
public struct InvalidLoadTestConfiguration: Error, CustomStringConvertible, Sendable {
    public var problems: [String]

    public var description: String {
        "Invalid load test configuration: " + problems.joined(separator: "; ")
    }
}
