import ReliableDBTesting
import Synchronization
import Testing

@testable import ReliableDB

/// The one deadline mechanism: interrupts registered with a deadline, fired by a clock alarm.
/// Driven by a ``ManualClock``, so every firing is at a known instant.
@Suite("Deadline scheduler on the clock's alarm")
struct DeadlineSchedulerTests {
    @Test func anInterruptFiresOnceWhenItsDeadlinePassesAndNotBefore() {
        let clock = ManualClock()
        let scheduler = DeadlineScheduler(clock: clock)
        let fired = Mutex(0)
        let token = scheduler.register(clock.now + .seconds(2)) { fired.withLock { $0 += 1 } }
        #expect(token != nil)
        #expect(clock.sleeperCount == 1, "one alarm armed")
        clock.advance(by: .milliseconds(1999))
        #expect(fired.withLock { $0 } == 0)
        clock.advance(by: .milliseconds(1))
        #expect(fired.withLock { $0 } == 1)
        clock.advance(by: .seconds(10))
        #expect(fired.withLock { $0 } == 1)
        #expect(scheduler.unregister(token!), "unregister reports that it fired")
        #expect(clock.sleeperCount == 0, "nothing armed once nothing is registered")
    }

    @Test func aPassedDeadlineRegistersNothing() {
        let clock = ManualClock()
        let scheduler = DeadlineScheduler(clock: clock)
        #expect(scheduler.register(clock.now) {} == nil)
        #expect(clock.sleeperCount == 0)
    }

    @Test func anEarlierDeadlineReArmsAndALaterOneDoesNot() {
        let clock = ManualClock()
        let scheduler = DeadlineScheduler(clock: clock)
        let order = Mutex<[Int]>([])
        _ = scheduler.register(clock.now + .seconds(10)) { order.withLock { $0.append(10) } }
        _ = scheduler.register(clock.now + .seconds(20)) { order.withLock { $0.append(20) } }
        _ = scheduler.register(clock.now + .seconds(5)) { order.withLock { $0.append(5) } }
        #expect(clock.sleeperCount == 1, "one alarm however many deadlines")
        clock.advance(by: .seconds(5))
        #expect(order.withLock { $0 } == [5])
        clock.advance(by: .seconds(5))
        #expect(order.withLock { $0 } == [5, 10])
        clock.advance(by: .seconds(10))
        #expect(order.withLock { $0 } == [5, 10, 20])
    }

    /// The alarm's action holds the scheduler's core strongly (no weak reference, Sources/ReliableDB/Documentation.docc/Performance.md):
    /// dropping the scheduler must still free it and disarm its alarm.
    @Test func aDroppedSchedulerIsFreedAndItsAlarmDisarmed() {
        let clock = ManualClock()
        let fired = Mutex(false)
        weak var dropped: DeadlineScheduler?
        do {
            let scheduler = DeadlineScheduler(clock: clock)
            dropped = scheduler
            _ = scheduler.register(clock.now + .seconds(1)) { fired.withLock { $0 = true } }
            #expect(clock.sleeperCount == 1)
        }
        #expect(dropped == nil, "no cycle through the alarm keeps it alive")
        #expect(clock.sleeperCount == 0, "its alarm is disarmed")
        clock.advance(by: .seconds(2))
        #expect(!fired.withLock { $0 })
    }

    @Test func aStoppedSchedulerFiresNothing() {
        let clock = ManualClock()
        let scheduler = DeadlineScheduler(clock: clock)
        let fired = Mutex(false)
        _ = scheduler.register(clock.now + .seconds(1)) { fired.withLock { $0 = true } }
        scheduler.stop()
        clock.advance(by: .seconds(2))
        #expect(!fired.withLock { $0 })
    }

    /// Random registrations, unregistrations and clock moves: an interrupt fires exactly when its
    /// deadline passed while it was registered, once, and never after it was unregistered.
    @Test(arguments: 0..<20)
    func randomSequencesFireExactlyTheDueInterrupts(seed: Int) {
        var random = SplitMix64(seed: UInt64(seed))
        let clock = ManualClock()
        let scheduler = DeadlineScheduler(clock: clock)
        let firings = Mutex<[Int: Int]>([:])
        var live: [(id: Int, token: DeadlineScheduler.Token, deadline: MonotonicTime)] = []
        var nextID = 0
        for _ in 0..<500 {
            switch random.next() % 3 {
            case 0:
                let id = nextID
                nextID += 1
                let deadline = clock.now + .milliseconds(Int64(1 + random.next() % 100))
                let token = scheduler.register(deadline) { firings.withLock { $0[id, default: 0] += 1 } }
                live.append((id, token!, deadline))
            case 1 where !live.isEmpty:
                let entry = live.remove(at: Int(random.next() % UInt64(live.count)))
                let fired = scheduler.unregister(entry.token)
                #expect(fired == (clock.now >= entry.deadline), "fired exactly when due")
                #expect(firings.withLock { $0[entry.id] ?? 0 } == (fired ? 1 : 0))
            default:
                clock.advance(by: .milliseconds(Int64(random.next() % 40)))
            }
            let counts = firings.withLock { $0 }
            for entry in live {
                #expect(counts[entry.id, default: 0] == (clock.now >= entry.deadline ? 1 : 0))
            }
            #expect(counts.values.allSatisfy { $0 <= 1 }, "no interrupt fires twice")
            #expect(clock.sleeperCount <= 1)
        }
    }
}
