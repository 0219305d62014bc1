/// Limits retries to a fraction of recent requests, so an outage does not multiply the load on a
/// database that is already struggling.
///
/// Over a sliding window (`window`, kept in `bucketCount` buckets) a retry is allowed while
/// `retries < minRetriesPerSecond × windowSeconds + ratio × requests`. The floor lets a quiet
/// service still retry; the ratio bounds the extra load at `1 + ratio` times the offered load.
/// A pure value: time is passed in.
public struct RetryBudget: Sendable {
    public struct Configuration: Sendable, Equatable {
        /// Retries allowed per request in the window (0.2 = at most 20% extra load).
        public var ratio: Double
        /// Retries always allowed per second, whatever the request count.
        public var minRetriesPerSecond: Int
        /// How far back requests and retries are counted.
        public var window: Duration

        public init(ratio: Double = 0.2, minRetriesPerSecond: Int = 10, window: Duration = .seconds(10)) {
            self.ratio = ratio
            self.minRetriesPerSecond = minRetriesPerSecond
            self.window = window
        }

        /// No budget: every retry the policy wants is allowed.
        public static let unlimited = Configuration(ratio: .infinity, minRetriesPerSecond: .max / 1024)

        /// The configuration problems, empty when valid.
        public var validationProblems: [String] {
            var problems: [String] = []
            if !(ratio >= 0) {
                problems.append("retryBudget.ratio must be 0 or more (infinity: unlimited), got \(ratio)")
            }
            if minRetriesPerSecond < 0 {
                problems.append("retryBudget.minRetriesPerSecond must be 0 or more, got \(minRetriesPerSecond)")
            }
            if window <= .zero { problems.append("retryBudget.window must be positive") }
            return problems
        }
    }

    private struct Bucket {
        var epoch: Int64 = .min
        var requests: Int = 0
        var retries: Int = 0
    }

    public let configuration: Configuration
    private static let bucketCount = 10
    private let bucketWidth: Int64
    private var buckets: [Bucket]

    public init(_ configuration: Configuration = .init()) {
        self.configuration = configuration
        bucketWidth = max(1, configuration.window.nanosecondsClamped / Int64(Self.bucketCount))
        buckets = Array(repeating: Bucket(), count: Self.bucketCount)
    }

    /// Counts one request (first attempts only).
    public mutating func recordRequest(at now: MonotonicTime) {
        let index = currentBucket(at: now)
        buckets[index].requests += 1
    }

    /// Takes one retry from the budget, or returns false when the budget is spent.
    public mutating func tryAcquireRetry(at now: MonotonicTime) -> Bool {
        let (requests, retries) = totals(at: now)
        let windowSeconds = configuration.window.seconds
        // An infinite ratio is unlimited even with no requests counted (∞ × 0 would be NaN).
        let proportional = requests == 0 ? 0 : configuration.ratio * Double(requests)
        let allowance = Double(max(0, configuration.minRetriesPerSecond)) * windowSeconds + proportional
        guard configuration.ratio == .infinity || Double(retries) < allowance else { return false }
        buckets[currentBucket(at: now)].retries += 1
        return true
    }

    /// Requests and retries counted in the window ending at `now`.
    public func totals(at now: MonotonicTime) -> (requests: Int, retries: Int) {
        let epoch = now.nanoseconds / bucketWidth
        var requests = 0
        var retries = 0
        for bucket in buckets where bucket.epoch > epoch - Int64(Self.bucketCount) && bucket.epoch <= epoch {
            requests += bucket.requests
            retries += bucket.retries
        }
        return (requests, retries)
    }

    private mutating func currentBucket(at now: MonotonicTime) -> Int {
        let epoch = now.nanoseconds / bucketWidth
        let index = Int(epoch.magnitude % UInt64(Self.bucketCount))
        if buckets[index].epoch != epoch {
            buckets[index] = Bucket(epoch: epoch)
        }
        return index
    }
}
