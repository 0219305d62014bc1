import Dispatch

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

    /// An alarm that calls `action` when the instant it is armed for arrives.
    ///
    /// Deadlines and pool timers fire from alarms rather than from a sleeping task or a thread of
    /// their own, so nothing runs in the background while nothing is armed, and a ``ManualClock``
    /// fires them during ``ManualClock/advance(by:)``.
    func makeAlarm(_ action: @escaping @Sendable () -> Void) -> any ClockAlarm
}

/// A re-armable one-shot timer made by ``ReliabilityClock/makeAlarm(_:)``.
///
/// Arming replaces the previous instant; the action runs once per arming that is not replaced or
/// disarmed first (one already on its way may still run: actions must tolerate an early or a
/// spare call). It never runs on the caller's thread inside `arm`, so `arm` may be called under the
/// lock the action takes.
public protocol ClockAlarm: AnyObject, Sendable {
    func arm(at instant: MonotonicTime)
    func disarm()
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

    public func makeAlarm(_ action: @escaping @Sendable () -> Void) -> any ClockAlarm {
        DispatchAlarm(clock: self, action: action)
    }
}

/// A ``SystemClock`` alarm: a libdispatch timer source on a serial queue of its own. It fires on
/// time while every cooperative thread is busy (the queue does not run on Swift's cooperative
/// pool), and it costs no thread while disarmed.
final class DispatchAlarm: ClockAlarm, @unchecked Sendable {
    // @unchecked: a dispatch source is thread-safe; it is only set up in init.
    private let timer: any DispatchSourceTimer
    private let clock: SystemClock

    init(clock: SystemClock, action: @escaping @Sendable () -> Void) {
        self.clock = clock
        timer = DispatchSource.makeTimerSource(flags: .strict, queue: DispatchQueue(label: "reliabledb.alarm"))
        timer.setEventHandler(handler: action)
        timer.schedule(deadline: .distantFuture, leeway: .milliseconds(1))
        timer.activate()
    }

    deinit {
        timer.setEventHandler(handler: nil)
        timer.cancel()
    }

    func arm(at instant: MonotonicTime) {
        let remaining = max(0, instant.nanoseconds &- clock.now.nanoseconds)
        let clamped = Int(min(remaining, Int64(Int.max)))
        timer.schedule(deadline: .now() + .nanoseconds(clamped), leeway: .milliseconds(1))
    }

    func disarm() {
        timer.schedule(deadline: .distantFuture, leeway: .milliseconds(1))
    }
}
