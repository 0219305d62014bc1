import ReliableDB

/// The database work a load test drives, given as plain async calls so the tester knows no driver.
///
/// ``DatabaseLoadTester`` calls ``setUp()`` once, then ``read()`` and ``write()`` from many tasks at
/// once (each call is one measured operation), and ``tearDown()`` once at the end, even when the run
/// fails or is cancelled. A workload that goes through ``ReliableDatabase`` reports the pipeline's
/// counters in ``pipelineMetrics``; one on the plain driver returns nil.
public protocol LoadWorkload: Sendable {
    /// What the report calls this workload, e.g. `sqlite reliabledb.sqlite (ReliableDB)`.
    var name: String { get }

    /// Creates and seeds what the operations need (tables, rows).
    func setUp() async throws

    /// One read operation.
    func read() async throws

    /// One write operation.
    func write() async throws

    /// Removes everything ``setUp()`` created. Called even when ``setUp()`` failed part-way, so it
    /// must tolerate missing objects (`DROP TABLE IF EXISTS`).
    func tearDown() async throws

    /// The pipeline's counters (breaker rejections, retries, pool acquire time), or nil when the
    /// workload bypasses ReliableDB.
    var pipelineMetrics: MetricsSnapshot? { get }

    /// The class of an operation's error, or nil when it fits none (reported as `other`).
    func classify(_ error: any Error) -> ErrorClass?

    /// Where worker `index` should run, or nil for the default executor. A driver that does its
    /// I/O on event loops runs fastest with each worker on one loop, as pgbench's `-j` threads
    /// each own their connections.
    func executor(forWorker index: Int) -> (any TaskExecutor)?
}

extension LoadWorkload {
    public var name: String { String(describing: Self.self) }

    public var pipelineMetrics: MetricsSnapshot? { nil }

    public func classify(_ error: any Error) -> ErrorClass? {
        LoadTestErrorClassification.classify(error)
    }

    public func executor(forWorker index: Int) -> (any TaskExecutor)? { nil }
}

/// Maps an operation's error to an ``ErrorClass`` as a caller of ReliableDB sees it.
public enum LoadTestErrorClassification {
    /// The name errors that fit no ``ErrorClass`` are reported under.
    public static let otherClass = "other"

    /// Every class name a report counts errors under: ``ErrorClass`` raw values, then `other`.
    public static let classNames: [String] = ErrorClass.allCases.map(\.rawValue) + [otherClass]

    /// Classifies the errors the ReliableDB pipeline throws itself (retry exhaustion by the last
    /// attempt's class, timeouts, breaker rejections and pool timeouts as overload, cancellation)
    /// and hands anything else to `backend` (e.g. `database.classify`), or returns nil without one.
    public static func classify(
        _ error: any Error,
        backend: ((any Error) -> ErrorClassification)? = nil
    ) -> ErrorClass? {
        switch error {
        case let error as DatabaseRetryError:
            return error.lastErrorClass
        case is DatabaseTimeoutError, is AttemptDeadlineExceeded:
            return .timeout
        case is DatabaseCircuitBreakerError, is DatabasePoolTimeoutError:
            return .overload
        case is CancellationError:
            return .cancelled
        default:
            return backend?(error).errorClass
        }
    }
}
