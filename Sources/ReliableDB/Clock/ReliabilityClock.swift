#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The source of time for breakers, retries, deadlines and health checks.
///
/// Everything that waits or measures goes through this protocol, so a test can replace real time
/// with a ``ManualClock`` and check timing logic without sleeping.
public protocol ReliabilityClock: Sendable {
    /// The current monotonic time.
    var now: MonotonicTime { get }

    /// Suspends until `deadline`, or throws `CancellationError` when the task is cancelled first.
    func sleep(until deadline: MonotonicTime) async throws
}

extension ReliabilityClock {
    /// Suspends for `duration` from now.
    public func sleep(for duration: Duration) async throws {
        try await sleep(until: now + duration)
    }
}

/// Real monotonic time (`CLOCK_MONOTONIC`), unaffected by wall-clock changes.
public struct SystemClock: ReliabilityClock {
    public init() {}

    @inlinable
    public var now: MonotonicTime {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return MonotonicTime(nanoseconds: Int64(spec.tv_sec) &* 1_000_000_000 &+ Int64(spec.tv_nsec))
    }

    public func sleep(until deadline: MonotonicTime) async throws {
        let remaining = deadline.nanoseconds - now.nanoseconds
        if remaining > 0 {
            try await Task.sleep(nanoseconds: UInt64(remaining))
        } else {
            try Task.checkCancellation()
        }
    }
}
