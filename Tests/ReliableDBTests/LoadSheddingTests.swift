import Testing

@testable import ReliableDB

@Suite("LoadShedding: bulkhead state machine")
struct LoadSheddingBulkheadTests {
    typealias Machine = BulkheadStateMachine
    let t0 = MonotonicTime(nanoseconds: 1_000_000_000)

    @Test func admitsUpToTheLimitThenQueuesThenRejects() {
        var machine = Machine(maxConcurrent: 2, maxWaiting: 1, maxWait: .seconds(1))
        #expect(machine.admit(id: 1, at: t0) == .admitted)
        #expect(machine.admit(id: 2, at: t0) == .admitted)
        #expect(machine.admit(id: 3, at: t0) == .queued(until: t0 + .seconds(1)))
        #expect(machine.admit(id: 4, at: t0) == .rejected(.queueFull))
        #expect(machine.inFlight == 2)
        #expect(machine.waiting == 1)
        #expect(machine.nextDeadline == t0 + .seconds(1))
    }

    @Test func releaseAdmitsWaitersInArrivalOrder() {
        var machine = Machine(maxConcurrent: 1, maxWaiting: 3, maxWait: .seconds(10))
        #expect(machine.admit(id: 1, at: t0) == .admitted)
        for id in UInt64(2)...4 {
            #expect(
                machine.admit(id: id, at: t0 + .milliseconds(Int64(id)))
                    == .queued(until: t0 + .seconds(10) + .milliseconds(Int64(id)))
            )
        }
        #expect(machine.nextDeadline == t0 + .seconds(10) + .milliseconds(2))
        let later = t0 + .seconds(1)
        #expect(machine.release(at: later) == 2)
        #expect(machine.release(at: later) == 3)
        #expect(machine.release(at: later) == 4)
        #expect(machine.release(at: later) == nil)
        #expect(machine.inFlight == 0)
        #expect(machine.nextDeadline == nil)
        #expect(machine.release(at: later) == nil, "a release with nothing in flight is ignored")
        #expect(machine.inFlight == 0)
    }

    @Test func aWaiterExpiresAtExactlyItsDeadline() {
        var machine = Machine(maxConcurrent: 1, maxWaiting: 2, maxWait: .milliseconds(100))
        #expect(machine.admit(id: 1, at: t0) == .admitted)
        #expect(machine.admit(id: 2, at: t0) == .queued(until: t0 + .milliseconds(100)))
        #expect(machine.admit(id: 3, at: t0 + .milliseconds(50)) == .queued(until: t0 + .milliseconds(150)))
        #expect(machine.expire(at: t0 + .milliseconds(100) - .nanoseconds(1)) == [])
        #expect(machine.expire(at: t0 + .milliseconds(100)) == [2])
        #expect(machine.waiting == 1)
        #expect(machine.nextDeadline == t0 + .milliseconds(150))
        #expect(machine.expire(at: t0 + .milliseconds(150)) == [3])
        #expect(machine.waiting == 0)
        #expect(machine.nextDeadline == nil)
    }

    @Test func aReleaseNeverAdmitsAWaiterWhoseDeadlineHasCome() {
        var machine = Machine(maxConcurrent: 1, maxWaiting: 2, maxWait: .milliseconds(100))
        _ = machine.admit(id: 1, at: t0)
        _ = machine.admit(id: 2, at: t0)
        _ = machine.admit(id: 3, at: t0 + .milliseconds(50))
        // The timer for waiter 2 has not fired yet: the slot goes to waiter 3, and 2 stays for expire.
        #expect(machine.release(at: t0 + .milliseconds(100)) == 3)
        #expect(machine.waiterIDs == [2])
        #expect(machine.nextDeadline == t0 + .milliseconds(100))
        #expect(machine.expire(at: t0 + .milliseconds(100)) == [2])
        #expect(machine.admit(id: 4, at: t0 + .milliseconds(100)) == .queued(until: t0 + .milliseconds(200)))
        // Waiter 4 alone, and past its deadline: the freed slot stays free.
        #expect(machine.release(at: t0 + .milliseconds(200)) == nil)
        #expect(machine.inFlight == 0)
        #expect(machine.waiterIDs == [4])
        #expect(machine.expire(at: t0 + .milliseconds(200)) == [4])
    }

    @Test func aFreeSlotGoesToANewcomerOnlyWhenNobodyLiveWaits() {
        var machine = Machine(maxConcurrent: 1, maxWaiting: 2, maxWait: .milliseconds(100))
        _ = machine.admit(id: 1, at: t0)
        _ = machine.admit(id: 2, at: t0)
        // Waiter 2's deadline has come but expire has not run: the release frees the slot...
        #expect(machine.release(at: t0 + .milliseconds(200)) == nil)
        // ...and a newcomer takes it, not the expired waiter.
        #expect(machine.admit(id: 3, at: t0 + .milliseconds(200)) == .admitted)
        #expect(machine.expire(at: t0 + .milliseconds(200)) == [2])
    }

    @Test func zeroMaxWaitRejectsAtOnceInsteadOfQueueing() {
        var machine = Machine(maxConcurrent: 1, maxWaiting: 10, maxWait: .zero)
        #expect(machine.admit(id: 1, at: t0) == .admitted)
        #expect(machine.admit(id: 2, at: t0) == .rejected(.waitingDisabled))
        #expect(machine.waiting == 0)
        #expect(machine.nextDeadline == nil)
        #expect(machine.inFlight == 1)
    }

    @Test func cancelRemovesAWaiter() {
        var machine = Machine(maxConcurrent: 1, maxWaiting: 3, maxWait: .seconds(1))
        _ = machine.admit(id: 1, at: t0)
        for id in UInt64(2)...4 { _ = machine.admit(id: id, at: t0 + .milliseconds(Int64(id))) }
        #expect(machine.cancel(id: 3) == true)
        #expect(machine.cancel(id: 3) == false, "already gone")
        #expect(machine.cancel(id: 1) == false, "admitted, not waiting")
        #expect(machine.cancel(id: 99) == false, "never seen")
        #expect(machine.waiterIDs == [2, 4])
        #expect(machine.cancel(id: 2) == true)
        #expect(machine.nextDeadline == t0 + .seconds(1) + .milliseconds(4))
        #expect(machine.admit(id: 5, at: t0) == .queued(until: t0 + .seconds(1) + .milliseconds(4)))
        #expect(machine.release(at: t0) == 4)
        #expect(machine.release(at: t0) == 5)
    }

    @Test func loweringTheLimitRevokesNothingAndAdmitsNoOneUntilUnderIt() {
        var machine = Machine(maxConcurrent: 4, maxWaiting: 2, maxWait: .seconds(1))
        for id in UInt64(1)...4 { #expect(machine.admit(id: id, at: t0) == .admitted) }
        #expect(machine.setLimit(2, at: t0) == [])
        #expect(machine.limit == 2)
        #expect(machine.inFlight == 4)
        #expect(machine.admit(id: 5, at: t0) == .queued(until: t0 + .seconds(1)))
        #expect(machine.release(at: t0) == nil)
        #expect(machine.inFlight == 3)
        #expect(machine.release(at: t0) == nil)
        #expect(machine.inFlight == 2)
        #expect(machine.release(at: t0) == 5)
        #expect(machine.inFlight == 2)
    }

    @Test func raisingTheLimitAdmitsWaitersInOrder() {
        var machine = Machine(maxConcurrent: 1, maxWaiting: 3, maxWait: .seconds(1))
        _ = machine.admit(id: 1, at: t0)
        for id in UInt64(2)...4 { _ = machine.admit(id: id, at: t0) }
        #expect(machine.setLimit(3, at: t0) == [2, 3])
        #expect(machine.inFlight == 3)
        #expect(machine.waiterIDs == [4])
        #expect(machine.setLimit(10, at: t0 + .seconds(1)) == [], "waiter 4's deadline has come")
        #expect(machine.expire(at: t0 + .seconds(1)) == [4])
    }

    @Test func aZeroLimitQueuesEveryone() {
        var machine = Machine(maxConcurrent: 0, maxWaiting: 1, maxWait: .seconds(1))
        #expect(machine.admit(id: 1, at: t0) == .queued(until: t0 + .seconds(1)))
        #expect(machine.setLimit(1, at: t0) == [1])
    }

    /// The model the random test checks the machine against.
    struct Model {
        var running: [UInt64] = []
        var queued: [(id: UInt64, deadline: MonotonicTime)] = []

        func live(at now: MonotonicTime) -> [(id: UInt64, deadline: MonotonicTime)] {
            queued.filter { $0.deadline > now }
        }

        mutating func admitFromQueue(_ ids: [UInt64]) {
            queued.removeAll { ids.contains($0.id) }
            running += ids
        }
    }

    /// 1000 random admits, releases, expiries, cancels and limit changes with time moving on; the
    /// machine must agree with a straightforward model and keep the invariants after every event.
    @Test(arguments: 0..<20)
    func randomEventsKeepTheInvariants(seed: Int) {
        var random = SplitMix64(seed: 0x10AD_5EED &+ UInt64(seed))
        let maxWaiting = Int.random(in: 0...6, using: &random)
        let maxWait: Duration =
            Int.random(in: 0..<4, using: &random) == 0 ? .zero : .milliseconds(Int64.random(in: 1...50, using: &random))
        var limit = Int.random(in: 0...5, using: &random)
        var machine = Machine(maxConcurrent: limit, maxWaiting: maxWaiting, maxWait: maxWait)
        var model = Model()
        var now = t0
        var nextID: UInt64 = 1

        for step in 0..<1000 {
            switch Int.random(in: 0..<4, using: &random) {
            case 0: break
            case 1: now = now + .nanoseconds(Int64.random(in: 1...1_000, using: &random))
            case 2: now = now + .microseconds(Int64.random(in: 1...20_000, using: &random))
            default: if let deadline = machine.nextDeadline, deadline > now { now = deadline }  // exactly a deadline
            }
            let before = machine.inFlight
            let live = model.live(at: now)
            var admitted: [UInt64] = []
            var fromQueue: [UInt64] = []

            switch Int.random(in: 0..<100, using: &random) {
            case 0..<40:
                let id = nextID
                nextID += 1
                switch machine.admit(id: id, at: now) {
                case .admitted:
                    #expect(before < limit && live.isEmpty, "admitted only into a free slot nobody waits for")
                    model.running.append(id)
                    admitted = [id]
                case .queued(let deadline):
                    #expect(before >= limit || !live.isEmpty)
                    #expect(maxWait > .zero && model.queued.count < maxWaiting)
                    #expect(deadline >= now + maxWait)
                    #expect(deadline >= model.queued.last?.deadline ?? deadline)
                    model.queued.append((id, deadline))
                case .rejected(.waitingDisabled):
                    #expect(before >= limit && maxWait == .zero)
                case .rejected(.queueFull):
                    #expect(before >= limit && maxWait > .zero && model.queued.count >= maxWaiting)
                }
            case 40..<65:
                guard !model.running.isEmpty else {
                    #expect(machine.release(at: now) == nil)
                    break
                }
                model.running.remove(at: Int.random(in: 0..<model.running.count, using: &random))
                let next = machine.release(at: now)
                #expect(next == (model.running.count < limit ? live.first?.id : nil), "FIFO among live waiters")
                if let next { fromQueue = [next] }
            case 65..<80:
                let due = model.queued.filter { $0.deadline <= now }.map(\.id)
                #expect(machine.expire(at: now) == due)
                model.queued.removeAll { $0.deadline <= now }
            case 80..<90:
                let candidates = model.queued.map(\.id) + model.running + [nextID + 1_000]
                let id = candidates[Int.random(in: 0..<candidates.count, using: &random)]
                let wasQueued = model.queued.contains { $0.id == id }
                #expect(machine.cancel(id: id) == wasQueued)
                model.queued.removeAll { $0.id == id }
            default:
                limit = Int.random(in: 0...6, using: &random)
                fromQueue = machine.setLimit(limit, at: now)
                #expect(fromQueue == live.prefix(max(0, limit - model.running.count)).map(\.id))
            }
            for id in fromQueue {
                let waiter = model.queued.first { $0.id == id }
                #expect(waiter != nil, "admitted from the queue")
                #expect(waiter.map { $0.deadline > now } ?? false, "never admitted at or after its deadline")
            }
            model.admitFromQueue(fromQueue)
            admitted += fromQueue

            // The timer shell, sometimes a little late: fires when the earliest deadline is due.
            if let deadline = machine.nextDeadline, deadline <= now, Bool.random(using: &random) {
                let due = model.queued.filter { $0.deadline <= now }.map(\.id)
                #expect(machine.expire(at: now) == due)
                model.queued.removeAll { $0.deadline <= now }
                #expect(machine.nextDeadline.map { $0 > now } ?? true, "nobody waits past the deadline")
            }

            // Invariants.
            #expect(machine.limit == limit)
            #expect(machine.inFlight == model.running.count, "step \(step)")
            if machine.inFlight > limit {
                #expect(machine.inFlight <= before, "over the limit only after lowering it, and only shrinking")
                #expect(admitted.isEmpty, "no admission while over the limit")
            }
            #expect(machine.waiting == model.queued.count)
            #expect(machine.waiting <= maxWaiting)
            #expect(machine.waiterIDs == model.queued.map(\.id), "FIFO")
            #expect(Set(model.running).isDisjoint(with: model.queued.map(\.id)), "never admitted and queued at once")
            #expect(machine.nextDeadline == model.queued.map(\.deadline).min())
            if !model.live(at: now).isEmpty {
                #expect(machine.inFlight >= limit, "nobody waits while a slot is free")
            }
        }

        // Past every deadline, the timer rejects everyone still waiting.
        let end = now + maxWait
        #expect(machine.expire(at: end) == model.queued.map(\.id))
        #expect(machine.waiting == 0 && machine.nextDeadline == nil)
    }
}

@Suite("LoadShedding: adaptive concurrency limit (Gradient2)")
struct LoadSheddingAdaptiveLimitTests {
    typealias Limit = AdaptiveConcurrencyLimit
    let t0 = MonotonicTime(nanoseconds: 1_000_000_000)

    /// Feeds `count` samples of `rtt`, each with as many operations in flight as the limit
    /// (`inFlight` nil: not app-limited) or the given number. Returns the last limit.
    @discardableResult
    func feed(_ limit: inout Limit, rtt: Duration, count: Int, inFlight: Int? = nil) -> Int {
        for index in 0..<count {
            limit.sample(
                rtt: rtt,
                inFlight: inFlight ?? limit.limit,
                didDrop: false,
                at: t0 + .milliseconds(Int64(index))
            )
        }
        return limit.limit
    }

    @Test func defaultsAreGradient2sAndValid() {
        let configuration = Limit.Configuration()
        #expect(configuration.validationProblems.isEmpty)
        #expect(configuration.initialLimit == 20)
        #expect(configuration.minLimit == 1)
        #expect(configuration.maxLimit == 200)
        #expect(configuration.smoothing == 0.2)
        #expect(configuration.tolerance == 1.5)
        #expect(configuration.longWindow == 600)
        #expect(Limit().limit == 20)
    }

    @Test func growsWhileLatencyIsSteadyAndTheLimitIsUsed() {
        var limit = Limit()
        let grown = feed(&limit, rtt: .milliseconds(10), count: 50)
        #expect(grown > 20)
        feed(&limit, rtt: .milliseconds(10), count: 2_000)
        #expect(limit.limit == 200, "up to maxLimit")
    }

    @Test func shrinksWhenRTTRisesWellAboveTheLongTermRTT() {
        var limit = Limit()
        let steady = feed(&limit, rtt: .milliseconds(10), count: 100)
        var previous = steady
        for _ in 0..<10 {
            let next = feed(&limit, rtt: .milliseconds(50), count: 1)
            #expect(next < previous)
            previous = next
        }
        #expect(previous < steady)
        // No sample takes more than half of the limit (plus the smoothing): one outlier cannot collapse it.
        var fresh = Limit(.init(initialLimit: 100))
        feed(&fresh, rtt: .milliseconds(10), count: 20)
        let beforeOutlier = fresh.limit
        let afterOutlier = feed(&fresh, rtt: .seconds(100), count: 1)
        #expect(Double(afterOutlier) >= Double(beforeOutlier) * 0.9 - 1)
    }

    @Test func recoversWhenRTTReturnsToNormalUnderLoad() {
        var limit = Limit()
        feed(&limit, rtt: .milliseconds(10), count: 100)
        let loaded = feed(&limit, rtt: .milliseconds(80), count: 100)
        let recovered = feed(&limit, rtt: .milliseconds(10), count: 100)
        #expect(recovered > loaded)
        #expect(recovered >= 100)
    }

    @Test func theLongTermRTTFallsQuicklyAfterAProlongedOverload() {
        var limit = Limit()
        feed(&limit, rtt: .milliseconds(100), count: 600)
        #expect(limit.longRTT > 90_000_000)
        feed(&limit, rtt: .milliseconds(10), count: 30)
        // The exponential average alone would still be near 90 ms after 30 samples.
        #expect(limit.longRTT <= 20_000_000)
    }

    @Test func doesNotGrowWhenAppLimited() {
        var limit = Limit(.init(initialLimit: 100))
        #expect(feed(&limit, rtt: .milliseconds(10), count: 200, inFlight: 49) == 100)
        #expect(feed(&limit, rtt: .milliseconds(10), count: 1, inFlight: 50) == 102, "half the limit in flight counts")
    }

    @Test func dropsShrinkTheLimitMultiplicatively() {
        var limit = Limit()
        #expect(limit.sample(rtt: .seconds(5), inFlight: 20, didDrop: true, at: t0) == 18)
        #expect(limit.sample(rtt: .seconds(5), inFlight: 1, didDrop: true, at: t0) == 16, "also when app-limited")
        #expect(limit.longRTT == 0, "a timeout's RTT measures the timeout, not the database")
        for _ in 0..<100 { limit.sample(rtt: .seconds(5), inFlight: 20, didDrop: true, at: t0) }
        #expect(limit.limit == 1, "down to minLimit, not below")
    }

    /// Random RTTs (zero, one nanosecond, huge, anything), in-flight counts and drops, over random
    /// valid configurations: the limit never leaves [minLimit, maxLimit] and nothing traps.
    @Test(arguments: 0..<5)
    func staysWithinItsBoundsOverRandomSamples(seed: Int) {
        var random = SplitMix64(seed: 0xAD_A971 &+ UInt64(seed))
        let minLimit = Int.random(in: 1...50, using: &random)
        let maxLimit = [minLimit, minLimit + Int.random(in: 1...500, using: &random), 1_000_000, Int.max][seed % 4]
        let configuration = Limit.Configuration(
            initialLimit: Int.random(in: minLimit...min(maxLimit, 1_000), using: &random),
            minLimit: minLimit,
            maxLimit: maxLimit,
            smoothing: [1, 0.2, Double.random(in: 0.001...1, using: &random)][seed % 3],
            tolerance: [1, 1.5, Double.random(in: 1...100, using: &random)][seed % 3],
            longWindow: [1, 600, Int.random(in: 1...10_000, using: &random)][seed % 3],
            backoffRatio: [1, 0.9, Double.random(in: 0.01...1, using: &random)][seed % 3]
        )
        #expect(configuration.validationProblems.isEmpty)
        var limit = Limit(configuration)
        var now = t0
        for _ in 0..<10_000 {
            let rtt: Duration =
                switch Int.random(in: 0..<6, using: &random) {
                case 0: .zero
                case 1: .nanoseconds(1)
                case 2: .seconds(Int64.max)
                case 3: .nanoseconds(Int64.random(in: 1...Int64.max, using: &random))
                case 4: .nanoseconds(-Int64.random(in: 1...1_000, using: &random))
                default: .microseconds(Int64.random(in: 100...100_000, using: &random))
                }
            let inFlight = Int.random(in: 0...(limit.limit * 2), using: &random)
            now = now + .microseconds(Int64.random(in: 0...1_000, using: &random))
            let result = limit.sample(rtt: rtt, inFlight: inFlight, didDrop: random.next() % 10 == 0, at: now)
            #expect(result == limit.limit)
            #expect(result >= minLimit && result <= maxLimit)
            #expect(limit.longRTT.isFinite && limit.longRTT >= 0)
        }
    }

    @Test func validationRejectsBadSettings() {
        func problems(_ configuration: Limit.Configuration) -> [String] { configuration.validationProblems }
        #expect(problems(.init(minLimit: 50, maxLimit: 10)).contains { $0.contains("must not exceed") })
        #expect(problems(.init(initialLimit: 0, minLimit: 0)).contains { $0.contains("minLimit must be at least 1") })
        #expect(problems(.init(initialLimit: 0, maxLimit: 0)).contains { $0.contains("maxLimit must be at least 1") })
        #expect(problems(.init(initialLimit: 0)).contains { $0.contains("initialLimit") })
        #expect(problems(.init(initialLimit: 500)).contains { $0.contains("initialLimit") })
        for smoothing: Double in [0, -0.1, 1.01, .nan, .infinity] {
            #expect(problems(.init(smoothing: smoothing)).contains { $0.contains("smoothing") }, "\(smoothing)")
        }
        #expect(problems(.init(smoothing: 1)).isEmpty)
        for tolerance: Double in [0.99, 0, -1, .nan, .infinity] {
            #expect(problems(.init(tolerance: tolerance)).contains { $0.contains("tolerance") }, "\(tolerance)")
        }
        #expect(problems(.init(tolerance: 1)).isEmpty)
        #expect(problems(.init(longWindow: 0)).contains { $0.contains("longWindow") })
        for ratio: Double in [0, 1.5, .nan] {
            #expect(problems(.init(backoffRatio: ratio)).contains { $0.contains("backoffRatio") }, "\(ratio)")
        }
    }

    @Test func anInvalidConfigurationDoesNotTrap() {
        var limit = Limit(.init(initialLimit: 5, minLimit: 50, maxLimit: 10, smoothing: .nan, tolerance: .nan))
        #expect(limit.limit == 50)
        for index in 0..<100 {
            limit.sample(rtt: .milliseconds(Int64(index)), inFlight: 100, didDrop: index % 7 == 0, at: t0)
        }
        #expect(limit.limit == 50)
    }
}
