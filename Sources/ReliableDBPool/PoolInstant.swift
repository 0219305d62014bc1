/// A point on the pool's monotonic timeline, in nanoseconds from an arbitrary origin.
///
/// ``PoolStateMachine`` never reads a clock: every event carries `now`, so a test replays an exact
/// schedule and the I/O shell decides which clock is real. A plain `Int64` keeps the lease fast path to
/// integer compares, and the arithmetic saturates so that "no deadline in practice" (a huge timeout
/// added to `now`) lands on the far end of the timeline instead of wrapping into the past.
package struct PoolInstant: Hashable, Comparable, Sendable, CustomStringConvertible {
    package var nanoseconds: Int64

    package init(nanoseconds: Int64) {
        self.nanoseconds = nanoseconds
    }

    package static let zero = PoolInstant(nanoseconds: 0)

    package static func < (lhs: PoolInstant, rhs: PoolInstant) -> Bool {
        lhs.nanoseconds < rhs.nanoseconds
    }

    /// Moves the instant by `duration`, saturating at the ends of the timeline.
    package static func + (lhs: PoolInstant, rhs: Duration) -> PoolInstant {
        lhs.advanced(byNanoseconds: rhs.poolNanoseconds)
    }

    /// Moves the instant by `delta` nanoseconds, saturating at the ends of the timeline.
    func advanced(byNanoseconds delta: Int64) -> PoolInstant {
        let (sum, overflow) = nanoseconds.addingReportingOverflow(delta)
        guard overflow else { return PoolInstant(nanoseconds: sum) }
        return PoolInstant(nanoseconds: delta > 0 ? .max : .min)
    }

    /// The time from `rhs` to `lhs`, saturating at the ends of `Int64` nanoseconds.
    package static func - (lhs: PoolInstant, rhs: PoolInstant) -> Duration {
        let (difference, overflow) = lhs.nanoseconds.subtractingReportingOverflow(rhs.nanoseconds)
        guard overflow else { return .nanoseconds(difference) }
        return .nanoseconds(lhs.nanoseconds > rhs.nanoseconds ? Int64.max : Int64.min)
    }

    package var description: String { "\(nanoseconds)ns" }
}

/// The earlier of two optional instants, where `nil` means "never".
func earliest(_ lhs: PoolInstant?, _ rhs: PoolInstant?) -> PoolInstant? {
    guard let lhs else { return rhs }
    guard let rhs else { return lhs }
    return Swift.min(lhs, rhs)
}

extension Duration {
    /// The duration in whole nanoseconds, saturating at `Int64` bounds.
    var poolNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        let (sum, overflow2) = scaled.addingReportingOverflow(attoseconds / 1_000_000_000)
        if overflow2 { return seconds < 0 ? .min : .max }
        return sum
    }
}
