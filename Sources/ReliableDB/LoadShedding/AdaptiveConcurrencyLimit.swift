/// The tuning of the limit; the defaults are Gradient2's, with a minimum of 1.
public struct AdaptiveLimitConfiguration: Sendable, Equatable {
    /// The limit before any sample arrives.
    public var initialLimit: Int
    /// The limit never goes below this, so some work always gets through to measure latency.
    public var minLimit: Int
    /// The limit never goes above this, a failsafe against a limit that grew without bound.
    public var maxLimit: Int
    /// How much of each new estimate replaces the limit, in (0, 1]; smaller is steadier.
    public var smoothing: Double
    /// How far above the long-term RTT a sample may be before the limit shrinks (1.5: 50%).
    public var tolerance: Double
    /// The number of samples the long-term RTT averages over (exponentially).
    public var longWindow: Int
    /// The factor a dropped or timed-out call multiplies the limit by, in (0, 1].
    public var backoffRatio: Double

    /// Gradient2's defaults (its minimum of 20 lowered to 1), plus AIMD's 0.9 backoff on drops.
    public init(
        initialLimit: Int = 20,
        minLimit: Int = 1,
        maxLimit: Int = 200,
        smoothing: Double = 0.2,
        tolerance: Double = 1.5,
        longWindow: Int = 600,
        backoffRatio: Double = 0.9
    ) {
        self.initialLimit = initialLimit
        self.minLimit = minLimit
        self.maxLimit = maxLimit
        self.smoothing = smoothing
        self.tolerance = tolerance
        self.longWindow = longWindow
        self.backoffRatio = backoffRatio
    }

    /// The configuration problems, empty when valid.
    public var validationProblems: [String] {
        var problems: [String] = []
        if minLimit < 1 { problems.append("adaptiveLimit.minLimit must be at least 1, got \(minLimit)") }
        if maxLimit < 1 { problems.append("adaptiveLimit.maxLimit must be at least 1, got \(maxLimit)") }
        if minLimit > maxLimit {
            problems.append(
                "adaptiveLimit.minLimit (\(minLimit)) must not exceed adaptiveLimit.maxLimit (\(maxLimit))"
            )
        }
        if initialLimit < max(1, minLimit) || initialLimit > maxLimit {
            problems.append(
                "adaptiveLimit.initialLimit must be within minLimit...maxLimit and at least 1, got \(initialLimit)"
            )
        }
        if !(smoothing > 0 && smoothing <= 1) {
            problems.append("adaptiveLimit.smoothing must be in (0, 1], got \(smoothing)")
        }
        if !(tolerance >= 1 && tolerance.isFinite) {
            problems.append("adaptiveLimit.tolerance must be a finite number of at least 1, got \(tolerance)")
        }
        if longWindow < 1 { problems.append("adaptiveLimit.longWindow must be at least 1, got \(longWindow)") }
        if !(backoffRatio > 0 && backoffRatio <= 1) {
            problems.append("adaptiveLimit.backoffRatio must be in (0, 1], got \(backoffRatio)")
        }
        return problems
    }
}

/// A concurrency limit that follows the database's latency (the Gradient2 algorithm of Netflix's
/// concurrency-limits), so a bulkhead sheds load when queueing builds up inside the database
/// instead of at a fixed limit someone guessed. A pure value: samples and time are passed in.
///
/// Each sample compares its round-trip time (the short-term RTT) with an exponentially smoothed
/// long-term RTT over about ``Configuration/longWindow`` samples:
///
///     gradient = max(0.5, min(1, tolerance × longRTT / shortRTT))
///     newLimit = limit × gradient + √limit
///     limit    = clamp(limit × (1 − smoothing) + newLimit × smoothing, minLimit, maxLimit)
///
/// While latency stays within `tolerance` of the baseline the gradient is 1 and the limit grows by
/// the √limit queue allowance; when it rises the limit shrinks, by at most half per sample so one
/// outlier cannot collapse it. Like Gradient2, a sample taken while fewer than half the limit were
/// in flight changes nothing (the application, not the database, was the bottleneck, and growing
/// the limit then would only raise it without evidence it can be used), and a long-term RTT more
/// than twice the sample is cut by 10% so the baseline recovers quickly after a long overload.
/// Unlike Gradient2, a dropped or timed-out call shrinks the limit by ``Configuration/backoffRatio``
/// (AIMD style): a timeout says the database is overloaded, and its RTT measures the timeout, not
/// the database, so it does not enter the RTT averages.
package struct AdaptiveConcurrencyLimit: Sendable {
    package typealias Configuration = AdaptiveLimitConfiguration

    /// Samples averaged plainly before the exponential average takes over (Gradient2's warm-up),
    /// so the first samples set the baseline instead of being diluted against zero.
    private static let warmupSamples = 10

    package let configuration: Configuration
    /// The current limit, for ``BulkheadStateMachine/setLimit(_:at:)``.
    package private(set) var limit: Int
    /// The unrounded limit; `limit` is its integer part.
    private var estimate: Double
    /// The long-term RTT in nanoseconds (0 before the first sample).
    private(set) var longRTT: Double = 0
    private var longRTTSamples = 0
    /// When the last sample arrived; for diagnostics, the formula does not depend on time.
    private(set) var lastSampleAt: MonotonicTime?

    /// Starts at the configured initial limit. Validate the configuration first: an invalid one
    /// does not trap, but the limit then only stays within whatever `minLimit`/`maxLimit` allow.
    package init(_ configuration: Configuration = .init()) {
        self.configuration = configuration
        estimate = 0
        limit = 0
        setEstimate(Double(configuration.initialLimit))
    }

    /// Feeds one completed call: its round-trip time, the operations in flight when it started
    /// (or the most seen during it), and whether it was dropped or timed out. Returns the new limit.
    @discardableResult
    package mutating func sample(rtt: Duration, inFlight: Int, didDrop: Bool, at now: MonotonicTime) -> Int {
        lastSampleAt = now
        if didDrop {
            setEstimate(estimate * configuration.backoffRatio)
            return limit
        }
        // A zero or negative RTT (a coarse clock) counts as 1 ns so the ratios stay finite.
        let shortRTT = max(1, Double(rtt.nanosecondsClamped))
        let queueSize = estimate.squareRoot()
        let long = addToLongRTT(shortRTT)
        if long / shortRTT > 2 {
            longRTT *= 0.9
        }
        guard Double(inFlight) >= estimate / 2 else { return limit }
        let gradient = max(0.5, min(1.0, configuration.tolerance * long / shortRTT))
        let target = estimate * gradient + queueSize
        setEstimate(estimate * (1 - configuration.smoothing) + target * configuration.smoothing)
        return limit
    }

    private mutating func addToLongRTT(_ sample: Double) -> Double {
        if longRTTSamples < min(Self.warmupSamples, max(1, configuration.longWindow)) {
            longRTTSamples += 1
            longRTT += (sample - longRTT) / Double(longRTTSamples)
        } else {
            let factor = 2 / (Double(max(1, configuration.longWindow)) + 1)
            longRTT = longRTT * (1 - factor) + sample * factor
        }
        return longRTT
    }

    /// Clamps `value` to the configured bounds and updates `limit`; a non-finite value (only an
    /// invalid configuration produces one) is ignored.
    private mutating func setEstimate(_ value: Double) {
        guard value.isFinite else { return }
        let lower = Double(configuration.minLimit)
        let upper = Double(configuration.maxLimit)
        estimate = max(lower, min(upper, value))
        // Int(Double(Int.max)) would trap: 2^63 is not representable.
        let truncated = estimate >= 0x1p63 ? Int.max : estimate <= -0x1p63 ? Int.min : Int(estimate)
        limit = max(configuration.minLimit, min(configuration.maxLimit, truncated))
    }
}
