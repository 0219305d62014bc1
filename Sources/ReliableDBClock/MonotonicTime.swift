/// A point on a monotonic timeline, in nanoseconds from an arbitrary origin.
///
/// The reliability state machines take time as an input instead of reading a clock, so that tests
/// can drive them with a ``ManualClock`` and production code with ``SystemClock``. A plain 64-bit
/// count keeps the fast path cheap: comparing and adding instants is integer arithmetic.
public struct MonotonicTime: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) {
        self.nanoseconds = nanoseconds
    }

    public static let zero = MonotonicTime(nanoseconds: 0)

    public static func < (lhs: MonotonicTime, rhs: MonotonicTime) -> Bool {
        lhs.nanoseconds < rhs.nanoseconds
    }

    /// Saturates at the ends of the timeline, so a deadline or an open period of an enormous
    /// duration lies far in the future instead of wrapping into the past.
    public static func + (lhs: MonotonicTime, rhs: Duration) -> MonotonicTime {
        let (sum, overflow) = lhs.nanoseconds.addingReportingOverflow(rhs.nanosecondsClamped)
        guard overflow else { return MonotonicTime(nanoseconds: sum) }
        return MonotonicTime(nanoseconds: rhs > .zero ? .max : .min)
    }

    public static func - (lhs: MonotonicTime, rhs: Duration) -> MonotonicTime {
        let (difference, overflow) = lhs.nanoseconds.subtractingReportingOverflow(rhs.nanosecondsClamped)
        guard overflow else { return MonotonicTime(nanoseconds: difference) }
        return MonotonicTime(nanoseconds: rhs > .zero ? .min : .max)
    }

    /// The time from `rhs` to `lhs`, saturating at the ends of `Int64` nanoseconds.
    public static func - (lhs: MonotonicTime, rhs: MonotonicTime) -> Duration {
        let (difference, overflow) = lhs.nanoseconds.subtractingReportingOverflow(rhs.nanoseconds)
        guard overflow else { return .nanoseconds(difference) }
        return .nanoseconds(lhs.nanoseconds > rhs.nanoseconds ? Int64.max : Int64.min)
    }

    public var description: String { "\(nanoseconds)ns" }
}

extension Duration {
    /// The duration in whole nanoseconds, saturating at `Int64` bounds.
    public var nanosecondsClamped: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        let (sum, overflow2) = scaled.addingReportingOverflow(attoseconds / 1_000_000_000)
        if overflow2 { return seconds < 0 ? .min : .max }
        return sum
    }

    /// The duration in milliseconds as a floating-point number, the unit of the health JSON.
    public var milliseconds: Double {
        Double(nanosecondsClamped) / 1_000_000
    }

    /// The duration in seconds as a floating-point number, the unit of Prometheus histograms.
    public var seconds: Double {
        Double(nanosecondsClamped) / 1_000_000_000
    }
}
