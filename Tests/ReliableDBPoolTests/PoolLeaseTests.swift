import ReliableDB
import Testing

@testable import ReliableDBPool

@Suite("Pool state machine: leasing")
struct PoolLeaseTests {
    @Test func leaseTakesAnIdleConnectionAtOnce() {
        var machine = makeMachine()
        let ids = machine.warmUp(1, now: t0)
        let actions = machine.lease(request: 1, timeoutAt: t0 + 1_000, now: t0 + 5)
        #expect(actions.grant == PoolGrant(request: 1, connection: ids[0], waited: .zero))
        #expect(actions.failures.isEmpty && actions.connects.isEmpty && actions.closes.isEmpty)
        #expect(actions.wakeAt == nil)
        #expect(machine.state(of: ids[0]) == .leased(request: 1, since: t0 + 5))
    }

    @Test func leaseWithoutIdleConnectionConnectsAndIsGrantedWithItsWaitTime() {
        var machine = makeMachine()
        let lease = machine.lease(request: 1, timeoutAt: t0 + 1_000, now: t0, preferredLoop: 7)
        #expect(lease.grant == nil && lease.failures.isEmpty)
        #expect(lease.connects == [PoolConnect(connection: 0, loopKey: 7)])
        #expect(lease.wakeAt == t0 + 1_000)
        #expect(machine.statistics.connecting == 1 && machine.statistics.waiting == 1)

        let connected = machine.connected(connection: 0, now: t0 + 30)
        #expect(connected.grant == PoolGrant(request: 1, connection: 0, waited: .milliseconds(30)))
        #expect(connected.wakeAt == nil)
        #expect(machine.statistics.active == 1 && machine.statistics.waiting == 0)
    }

    @Test func startsOneConnectPerUnservedWaiterUpToTheLimit() {
        var machine = makeMachine(maximumConnections: 2)
        #expect(machine.lease(request: 1, timeoutAt: nil, now: t0).connectIDs == [0])
        #expect(machine.lease(request: 2, timeoutAt: nil, now: t0).connectIDs == [1])
        #expect(machine.lease(request: 3, timeoutAt: nil, now: t0).connectIDs.isEmpty)
        #expect(machine.statistics.total == 2 && machine.statistics.waiting == 3)
        // One connection frees a slot for nobody: the two connecting still serve two of three waiters.
        let first = machine.connected(connection: 0, now: t0 + 1)
        #expect(first.grant?.request == 1 && first.connects.isEmpty)
    }

    @Test func waitersAreServedFirstInFirstOut() {
        var machine = makeMachine(maximumConnections: 1)
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        for request in 2...5 { _ = machine.lease(request: request, timeoutAt: nil, now: t0 + request) }
        #expect(machine.connected(connection: 0, now: t0 + 10).grant?.request == 1)
        var order: [Int] = []
        for step in 0..<4 {
            let grant = machine.release(connection: 0, now: t0 + 20 + step).grant
            order.append(grant!.request)
            #expect(grant!.waited == (t0 + 20 + step) - (t0 + grant!.request))
        }
        #expect(order == [2, 3, 4, 5])
    }

    @Test(arguments: [-1_000, -1, 0])
    func deadlineAtOrBeforeNowFailsAtOnceWithoutConnecting(offset: Int) {
        var machine = makeMachine()
        let actions = machine.lease(request: 1, timeoutAt: t0 + offset, now: t0)
        #expect(actions.failures == [PoolFailure(request: 1, reason: .timedOut)])
        #expect(actions.connects.isEmpty && actions.grant == nil)
        #expect(machine.statistics.acquireTimeouts == 1 && machine.statistics.waiting == 0)
    }

    @Test func pastDeadlineFailsEvenWhenAConnectionIsIdle() {
        var machine = makeMachine()
        _ = machine.warmUp(1, now: t0)
        let actions = machine.lease(request: 1, timeoutAt: t0, now: t0)
        #expect(actions.failures == [PoolFailure(request: 1, reason: .timedOut)])
        #expect(machine.statistics.idle == 1)
    }

    @Test func tickFailsOverdueWaitersAndWakesForTheNextDeadline() {
        var machine = makeMachine(maximumConnections: 1)
        _ = machine.lease(request: 1, timeoutAt: t0 + 300, now: t0)
        _ = machine.lease(request: 2, timeoutAt: t0 + 100, now: t0)
        let third = machine.lease(request: 3, timeoutAt: t0 + 200, now: t0)
        #expect(third.wakeAt == t0 + 100)
        #expect(machine.tick(now: t0 + 99).failures.isEmpty)
        let tick = machine.tick(now: t0 + 200)
        #expect(tick.failed == [2: .timedOut, 3: .timedOut])
        #expect(tick.wakeAt == t0 + 300)
        #expect(machine.waitingRequests == [1])
    }

    @Test func anyEventFailsOverdueWaitersBeforeGranting() {
        var machine = makeMachine(maximumConnections: 1)
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        _ = machine.connected(connection: 0, now: t0)
        _ = machine.lease(request: 2, timeoutAt: t0 + 50, now: t0)
        _ = machine.lease(request: 3, timeoutAt: t0 + 500, now: t0)
        let release = machine.release(connection: 0, now: t0 + 50)
        #expect(release.failures == [PoolFailure(request: 2, reason: .timedOut)])
        #expect(release.grant?.request == 3)
    }

    @Test func cancelAnswersAWaitingRequestOnce() {
        var machine = makeMachine(maximumConnections: 1)
        _ = machine.lease(request: 1, timeoutAt: t0 + 100, now: t0)
        _ = machine.lease(request: 2, timeoutAt: t0 + 200, now: t0)
        let cancel = machine.cancel(request: 1)
        #expect(cancel.failures == [PoolFailure(request: 1, reason: .cancelled)])
        #expect(cancel.wakeAt == t0 + 200)
        #expect(machine.cancel(request: 1).failures.isEmpty)
        #expect(machine.connected(connection: 0, now: t0 + 1).grant?.request == 2)
        #expect(machine.cancel(request: 2).failures.isEmpty, "a granted request is released, not cancelled")
        #expect(machine.statistics.cancelled == 1)
    }

    @Test func requestIDsMayBeReusedOnceAnswered() {
        var machine = makeMachine(maximumConnections: 1)
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        _ = machine.cancel(request: 1)
        _ = machine.lease(request: 1, timeoutAt: t0 + 10, now: t0)
        #expect(machine.tick(now: t0 + 10).failures == [PoolFailure(request: 1, reason: .timedOut)])
        #expect(machine.waitingRequests.isEmpty)
    }

    @Test func prefersAnIdleConnectionOnTheCallersLoop() {
        var machine = makeMachine(maximumConnections: 3)
        let ids = machine.warmUp(loops: [1, 2, 1], now: t0)
        #expect(machine.lease(request: 1, timeoutAt: nil, now: t0 + 2, preferredLoop: 2).grant?.connection == ids[1])
        _ = machine.release(connection: ids[2], now: t0 + 3)  // not leased: ignored
        let onOne = machine.lease(request: 2, timeoutAt: nil, now: t0 + 4, preferredLoop: 1).grant?.connection
        #expect(onOne == ids[0] || onOne == ids[2])
        #expect(machine.lease(request: 3, timeoutAt: nil, now: t0 + 4, preferredLoop: 2).grant != nil, "else any")
    }

    @Test func takesTheMostRecentlyReleasedConnection() {
        var machine = makeMachine(maximumConnections: 3)
        _ = machine.warmUp(3, now: t0, loop: 1)
        let held = machine.lease(request: 1, timeoutAt: nil, now: t0 + 1).grant!.connection
        _ = machine.release(connection: held, now: t0 + 9)
        #expect(machine.lease(request: 2, timeoutAt: nil, now: t0 + 10, preferredLoop: 5).grant?.connection == held)
        let sameLoop = machine.lease(request: 3, timeoutAt: nil, now: t0 + 10, preferredLoop: 1).grant!.connection
        _ = machine.release(connection: sameLoop, now: t0 + 20)
        #expect(machine.lease(request: 4, timeoutAt: nil, now: t0 + 21, preferredLoop: 1).grant?.connection == sameLoop)
    }

    @Test func connectedMayReportTheLoopTheShellChose() {
        var machine = makeMachine(maximumConnections: 2)
        #expect(
            machine.lease(request: 1, timeoutAt: nil, now: t0).connects == [PoolConnect(connection: 0, loopKey: nil)]
        )
        #expect(machine.lease(request: 2, timeoutAt: nil, now: t0, preferredLoop: 9).connects.first?.loopKey == 9)
        _ = machine.connected(connection: 0, loop: 4, now: t0)
        _ = machine.connected(connection: 1, now: t0)
        _ = machine.release(connection: 0, now: t0)
        _ = machine.release(connection: 1, now: t0)
        #expect(machine.lease(request: 3, timeoutAt: nil, now: t0 + 2, preferredLoop: 4).grant?.connection == 0)
        #expect(machine.lease(request: 4, timeoutAt: nil, now: t0 + 2, preferredLoop: 9).grant?.connection == 1)
    }

    @Test func anIdleConnectionAndAWaiterNeverCoexist() {
        var machine = makeMachine(maximumConnections: 2)
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        _ = machine.lease(request: 2, timeoutAt: nil, now: t0)
        _ = machine.connected(connection: 0, now: t0)
        _ = machine.connected(connection: 1, now: t0)
        _ = machine.lease(request: 3, timeoutAt: nil, now: t0)
        let release = machine.release(connection: 0, now: t0 + 1)
        #expect(release.grant == PoolGrant(request: 3, connection: 0, waited: .milliseconds(1)))
        #expect(machine.statistics.idle == 0 && machine.statistics.waiting == 0)
    }

    @Test func theEarlierOfTheTwoEndsEndsTheWaitAndEachIsCountedApart() {
        var machine = makeMachine(maximumConnections: 1)
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        _ = machine.connected(connection: 0, now: t0)
        _ = machine.lease(request: 2, timeoutAt: t0 + 100, deadline: t0 + 300, now: t0)
        _ = machine.lease(request: 3, timeoutAt: t0 + 300, deadline: t0 + 200, now: t0)
        let tied = machine.lease(request: 4, timeoutAt: t0 + 400, deadline: t0 + 400, now: t0)
        _ = machine.lease(request: 5, timeoutAt: nil, deadline: t0 + 500, now: t0)
        #expect(tied.wakeAt == t0 + 100)
        #expect(machine.tick(now: t0 + 100).failed == [2: .timedOut])
        #expect(machine.tick(now: t0 + 200).failed == [3: .deadlineReached])
        #expect(machine.tick(now: t0 + 400).failed == [4: .deadlineReached], "on a tie, the deadline")
        #expect(machine.tick(now: t0 + 500).failed == [5: .deadlineReached])
        let statistics = machine.statistics
        #expect(statistics.acquireTimeouts == 1, "only the pool's own limit is an acquire timeout")
        #expect(statistics.deadlinesReached == 3 && statistics.failed == 4)
    }

    @Test func aDeadlineAlreadyPassedFailsAtOnceAsTheDeadline() {
        var machine = makeMachine()
        _ = machine.warmUp(1, now: t0)
        let actions = machine.lease(request: 1, timeoutAt: t0 + 1_000, deadline: t0, now: t0)
        #expect(actions.failures == [PoolFailure(request: 1, reason: .deadlineReached)])
        #expect(machine.statistics.deadlinesReached == 1 && machine.statistics.acquireTimeouts == 0)
        #expect(machine.statistics.idle == 1)
    }

    @Test func acquireWaitsAreSummedOverEveryGrant() {
        var machine = makeMachine(maximumConnections: 1)
        _ = machine.warmUp(1, now: t0)
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        _ = machine.lease(request: 2, timeoutAt: nil, now: t0)
        _ = machine.lease(request: 3, timeoutAt: nil, now: t0 + 10)
        _ = machine.release(connection: 0, now: t0 + 30)
        _ = machine.release(connection: 0, now: t0 + 40)
        let statistics = machine.statistics
        #expect(statistics.granted == 4, "the warm-up's lease and three more")
        #expect(statistics.acquireWaitNanoseconds == Duration.milliseconds(60).nanosecondsClamped)
        #expect(statistics.maxAcquireWait == .milliseconds(30))
        #expect(statistics.averageAcquireWait == .milliseconds(15))
    }

    /// A lowered maximum caps the minimum idle; raised again, the minimum asked for comes back.
    /// Idle connections beyond the new maximum close at once; a leased one only when it is back.
    @Test func aResizeKeepsTheMinimumIdleAskedForAndNeverClosesALease() {
        var machine = PoolStateMachine(configuration: PoolConfiguration(maximumConnections: 10, minimumIdle: 5))
        let warm = machine.tick(now: t0)
        #expect(warm.connectIDs == [0, 1], "two at a time")
        for id in [0, 1] { _ = machine.connected(connection: id, now: t0) }
        let lease = machine.lease(request: 1, timeoutAt: nil, now: t0)
        #expect(lease.grant != nil)
        let shrink = machine.resize(maximumConnections: 1, now: t0)
        #expect(machine.configuration.maximumConnections == 1 && machine.configuration.minimumIdle == 1)
        #expect(shrink.closes.map(\.reason) == [.resized], "the idle one closes, not the lease")
        let leased = lease.grant!.connection
        #expect(machine.state(of: leased) == .leased(request: 1, since: t0))
        // The connects in flight were chosen to leave (they served nobody yet): they close as
        // they open, and the lease goes on, then back to idle.
        let connecting = machine.connectionStates.filter { $0.value == .connecting }.keys.sorted()
        #expect(connecting.count == 2)
        for id in connecting {
            #expect(machine.connected(connection: id, now: t0 + 5).closes.map(\.reason) == [.resized])
        }
        #expect(machine.release(connection: leased, now: t0 + 10).closes.isEmpty)
        #expect(machine.statistics.idle == 1 && machine.statistics.active == 0)
        _ = machine.resize(maximumConnections: 10, now: t0 + 20)
        #expect(machine.configuration.minimumIdle == 5, "the minimum asked for is back")
    }

    @Test func prewarmOpensIdleConnectionsWithoutARequest() {
        var machine = makeMachine(maximumConnections: 2)
        let prewarm = machine.prewarm(count: 5, now: t0)
        #expect(prewarm.connectIDs == [0, 1], "no more than the limit")
        #expect(machine.connected(connection: 0, now: t0).grant == nil)
        #expect(machine.state(of: 0) == .idle(since: t0, lastChecked: t0))
        #expect(machine.statistics.requests == 0 && machine.statistics.granted == 0)
        _ = machine.shutdown()
        #expect(machine.prewarm(count: 1, now: t0).connects.isEmpty)
    }
}
