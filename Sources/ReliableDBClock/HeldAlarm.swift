/// A clock alarm kept in its owner's locked state together with the instant it is armed for.
///
/// For owners whose alarm action holds them strongly (``DeadlineScheduler``, the PostgreSQL pool):
/// a weak reference would give the owner a side table and slow every retain of it
/// (Sources/ReliableDB/Documentation.docc/Performance.md), so ``detach()`` is what ends the cycle. Called under the owner's lock.
package struct HeldAlarm: Sendable {
    private var alarm: (any ClockAlarm)?
    /// The instant the alarm is armed for; nil while disarmed, after it fired, or once detached.
    private var armedAt: MonotonicTime?

    package init() {}

    /// Takes `alarm` (made by the owner's clock with an action that holds the owner).
    package mutating func hold(_ alarm: any ClockAlarm) {
        self.alarm = alarm
    }

    /// Arms the alarm for `instant` unless it is already armed for that instant or an earlier one:
    /// done under the owner's lock, two events cannot leave it at the later instant. Does nothing
    /// once detached.
    package mutating func arm(notLaterThan instant: MonotonicTime) {
        guard let alarm, armedAt.map({ instant < $0 }) ?? true else { return }
        armedAt = instant
        alarm.arm(at: instant)
    }

    /// Disarms the alarm if it is armed, for an owner with nothing left due. Called under the
    /// owner's lock like ``arm(notLaterThan:)``: outside it, the disarm could undo the arming of an
    /// event that came in between.
    package mutating func disarm() {
        guard let alarm, armedAt != nil else { return }
        armedAt = nil
        alarm.disarm()
    }

    /// The alarm fired: the next ``arm(notLaterThan:)`` arms it whatever the instant.
    package mutating func fired() {
        armedAt = nil
    }

    /// Lets go of the alarm, ending the cycle through its action, and returns it so that the caller
    /// disarms it outside the lock. Nothing is armed afterwards.
    package mutating func detach() -> (any ClockAlarm)? {
        armedAt = nil
        defer { alarm = nil }
        return alarm
    }
}
