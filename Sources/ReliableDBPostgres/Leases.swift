import Logging
import ReliableDB
import Synchronization

/// Who leased a connection: the operation's name and where it was called from, captured by the
/// caller's `#fileID` and `#line` (static strings: nothing is formatted until a warning needs it).
public struct LeaseHolder: Sendable, CustomStringConvertible {
    public var operation: String
    public var file: StaticString
    public var line: UInt

    public init(operation: String, file: StaticString = #fileID, line: UInt = #line) {
        self.operation = operation
        self.file = file
        self.line = line
    }

    /// `orders.list (App/Orders.swift:42)`.
    public var description: String { "\(operation) (\(file):\(line))" }
}

/// The connections leased now, who holds each and since when: what names the holders in a pool
/// timeout's error and finds leases held past `DB_LEAK_DETECTION_THRESHOLD`
/// (Sources/ReliableDBPostgres/Documentation.docc/DayTwo.md, "Leaks"). With a threshold, one
/// alarm is armed for the earliest lease that could pass it, and none while nothing is leased.
final class LeaseRegistry: Sendable {
    struct Lease: Sendable {
        var holder: LeaseHolder
        var since: MonotonicTime
        /// Whether the leak warning was logged (once per lease).
        var reported = false
    }

    private struct State {
        /// By lease number: a connection's next lease may begin before its last one is forgotten.
        var leases: [UInt64: Lease] = [:]
        var nextLease: UInt64 = 0
        /// When the armed alarm fires; nil when it is not armed.
        var checkAt: MonotonicTime?
    }

    /// The most holders a pool timeout's error names, the longest-held first.
    static let namedInErrors = 5

    /// Leases held this long are reported; nil turns leak detection off.
    let threshold: Duration?
    private let clock: any ReliabilityClock
    private let state = Mutex(State())
    private let alarm = Mutex<(any ClockAlarm)?>(nil)
    private let logger: Logger
    /// Where leaks are counted (`db_connection_leaks_total`), once the backend has instruments.
    let instruments = Mutex<ReliabilityInstruments?>(nil)

    init(threshold: Duration?, clock: any ReliabilityClock, logger: Logger) {
        self.threshold = threshold.flatMap { $0 > .zero ? $0 : nil }
        self.clock = clock
        self.logger = logger
        if self.threshold != nil {
            let made = clock.makeAlarm { [weak self] in self?.check() }
            alarm.withLock { $0 = made }
        }
    }

    /// A lease began; give what this returns to ``returned(_:)`` when it ends.
    func leased(by holder: LeaseHolder, at now: MonotonicTime) -> UInt64 {
        let (number, arm): (UInt64, MonotonicTime?) = state.withLock { state in
            let number = state.nextLease
            state.nextLease &+= 1
            state.leases[number] = Lease(holder: holder, since: now)
            guard let threshold, state.checkAt == nil else { return (number, nil) }
            state.checkAt = now + threshold
            return (number, state.checkAt)
        }
        if let arm { alarm.withLock { $0?.arm(at: arm) } }
        return number
    }

    /// The lease ended; one reported as a leak logs that it came back.
    func returned(_ number: UInt64) {
        let lease = state.withLock { $0.leases.removeValue(forKey: number) }
        guard let lease, lease.reported else { return }
        logger.notice(
            "the connection held by \(lease.holder) came back after \(formatDuration(clock.now - lease.since))",
            metadata: ["operation": "\(lease.holder.operation)"]
        )
    }

    /// Reports the leases past the threshold and arms the alarm for the next one that could be.
    private func check() {
        guard let threshold else { return }
        let now = clock.now
        let (found, next): ([Lease], MonotonicTime?) = state.withLock { state in
            let found = Self.markLeaks(in: &state.leases, olderThan: threshold, at: now)
            let earliest = state.leases.values.filter { !$0.reported }.map(\.since).min()
            state.checkAt = earliest.map { max($0 + threshold, now) }
            return (found, state.checkAt)
        }
        if let next { alarm.withLock { $0?.arm(at: next) } }
        guard !found.isEmpty else { return }
        let instruments = self.instruments.withLock { $0 }
        for lease in found {
            instruments?.recordConnectionLeak()
            logger.warning(
                """
                a connection has been held for \(formatDuration(now - lease.since)) by \(lease.holder), \
                past DB_LEAK_DETECTION_THRESHOLD (\(formatDuration(threshold))): a leaked lease, or slow work \
                (a stream left open, an external call) inside the operation
                """,
                metadata: ["operation": "\(lease.holder.operation)"]
            )
        }
    }

    /// The leases held for `threshold` or longer at `now` not reported yet, now marked reported,
    /// the longest-held first.
    static func markLeaks(
        in leases: inout [UInt64: Lease],
        olderThan threshold: Duration,
        at now: MonotonicTime
    ) -> [Lease] {
        var found: [Lease] = []
        for (key, lease) in leases where !lease.reported && now - lease.since >= threshold {
            leases[key]?.reported = true
            found.append(lease)
        }
        return found.sorted { $0.since < $1.since }
    }

    /// The holders of the longest-held leases, with for how long, for a pool timeout's error:
    /// at most ``namedInErrors``, then how many more; names and call sites only, never values.
    func holders(at now: MonotonicTime) -> [String] {
        let all = state.withLock { Array($0.leases.values) }.sorted { $0.since < $1.since }
        var named = all.prefix(Self.namedInErrors).map { "\($0.holder) for \(formatDuration(now - $0.since))" }
        if all.count > Self.namedInErrors { named.append("\(all.count - Self.namedInErrors) more") }
        return named
    }

    /// Stops the alarm (the backend shuts down).
    func stop() {
        alarm.withLock { $0?.disarm() }
    }
}
