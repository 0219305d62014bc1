import ReliableDBClock

/// A point on the pool's monotonic timeline: the library's ``MonotonicTime``.
///
/// ``PoolStateMachine`` never reads a clock: every event carries `now`, so a test replays an exact
/// schedule and the I/O shell decides which clock is real. A plain `Int64` keeps the lease fast path to
/// integer compares, and the arithmetic saturates so that "no deadline in practice" (a huge timeout
/// added to `now`) lands on the far end of the timeline instead of wrapping into the past.
package typealias PoolInstant = MonotonicTime

extension MonotonicTime {
    /// Moves the instant by `delta` nanoseconds, saturating at the ends of the timeline.
    func advanced(byNanoseconds delta: Int64) -> MonotonicTime {
        let (sum, overflow) = nanoseconds.addingReportingOverflow(delta)
        guard overflow else { return MonotonicTime(nanoseconds: sum) }
        return MonotonicTime(nanoseconds: delta > 0 ? .max : .min)
    }
}

/// The earlier of two optional instants, where `nil` means "never".
func earliest(_ lhs: PoolInstant?, _ rhs: PoolInstant?) -> PoolInstant? {
    guard let lhs else { return rhs }
    guard let rhs else { return lhs }
    return Swift.min(lhs, rhs)
}
