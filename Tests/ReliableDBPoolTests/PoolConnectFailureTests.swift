import ReliableDB
import Testing

@testable import ReliableDBPool

@Suite("Pool state machine: connect failures and backoff")
struct PoolConnectFailureTests {
    @Test func withNoConnectionOpenEveryWaiterFailsAtOnce() {
        var machine = makeMachine(maximumConnections: 2)
        _ = machine.lease(request: 1, timeoutAt: t0 + 10_000, now: t0)
        _ = machine.lease(request: 2, timeoutAt: nil, now: t0)
        _ = machine.lease(request: 3, timeoutAt: nil, now: t0)
        let failed = machine.connectFailed(connection: 0, now: t0 + 5)
        #expect(failed.failures.map(\.request) == [1, 2, 3])
        #expect(failed.failures.allSatisfy { $0.reason == .connectFailed })
        #expect(failed.connects.isEmpty)
        #expect(failed.wakeAt == nil, "nobody waits, so no retry is due")
        let statistics = machine.statistics
        #expect(statistics.failedByConnect == 3 && statistics.connectFailures == 1 && statistics.connecting == 1)
    }

    @Test func withAConnectionOpenWaitersKeepWaitingForTheRetry() {
        var machine = makeMachine(maximumConnections: 2)
        let open = machine.warmUp(1, now: t0)[0]
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        let connect = machine.lease(request: 2, timeoutAt: nil, now: t0).connects[0].connection
        let failed = machine.connectFailed(connection: connect, now: t0 + 10)
        #expect(failed.failures.isEmpty)
        #expect(failed.wakeAt == t0 + 110)
        #expect(machine.tick(now: t0 + 109).connects.isEmpty)
        let retry = machine.tick(now: t0 + 110)
        #expect(retry.connects.count == 1)
        #expect(machine.connected(connection: retry.connectIDs[0], now: t0 + 120).grant?.request == 2)
        #expect(machine.consecutiveConnectFailures == 0)
        _ = open
    }

    @Test func aServerReachedAnotherWayEndsTheBackoffAtOnce() {
        var machine = makeMachine(maximumConnections: 2)
        let open = machine.warmUp(1, now: t0)[0]
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        var connect = machine.lease(request: 2, timeoutAt: nil, now: t0).connects[0].connection
        var now = t0
        for _ in 0..<5 {  // the backoff grows to its 2 s cap
            now = now + 10
            let failed = machine.connectFailed(connection: connect, now: now)
            now = failed.wakeAt ?? now
            connect = machine.tick(now: now).connectIDs[0]
        }
        let failed = machine.connectFailed(connection: connect, now: now + 10)
        #expect(failed.wakeAt.map { $0 - (now + 10) } == .seconds(2), "the next retry is 2 s away")
        let reachable = machine.serverReachable(now: now + 20)
        #expect(reachable.connects.count == 1, "connects at once instead")
        #expect(machine.consecutiveConnectFailures == 0)
        #expect(machine.serverReachable(now: now + 30).connects.isEmpty, "nothing more to do when nothing failed")
        _ = open
    }

    @Test func backoffDoublesUpToItsCap() {
        var machine = makeMachine(maximumConnections: 2)
        _ = machine.warmUp(1, now: t0)
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        var connect = machine.lease(request: 2, timeoutAt: nil, now: t0).connectIDs[0]
        var now = t0
        var delays: [Duration] = []
        for _ in 0..<7 {
            let failed = machine.connectFailed(connection: connect, now: now)
            let wake = failed.wakeAt!
            delays.append(wake - now)
            now = wake
            connect = machine.tick(now: now).connectIDs[0]
        }
        #expect(delays == [100, 200, 400, 800, 1_600, 2_000, 2_000].map { .milliseconds($0) })
    }

    @Test func whileFailingOnlyOneConnectIsInFlight() {
        var machine = makeMachine(maximumConnections: 5)
        _ = machine.warmUp(1, now: t0)
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        let first = machine.lease(request: 2, timeoutAt: nil, now: t0).connectIDs[0]
        _ = machine.connectFailed(connection: first, now: t0)
        for request in 3...6 {
            #expect(machine.lease(request: request, timeoutAt: nil, now: t0 + 1).connects.isEmpty)
        }
        let retry = machine.tick(now: t0 + 100)
        #expect(retry.connects.count == 1)
        #expect(machine.lease(request: 7, timeoutAt: nil, now: t0 + 101).connects.isEmpty)
        // Success ends the backoff: the remaining waiters get their connects (up to the limit).
        let connected = machine.connected(connection: retry.connectIDs[0], now: t0 + 102)
        #expect(connected.grant?.request == 2)
        #expect(connected.connects.count == 3, "five waiting, three slots left under the limit")
        #expect(machine.statistics.total == 5)
    }

    @Test func aLeaseAfterTheBackoffConnectsAtOnce() {
        var machine = makeMachine(maximumConnections: 2)
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        _ = machine.connectFailed(connection: 0, now: t0)
        #expect(machine.lease(request: 2, timeoutAt: nil, now: t0 + 50).connects.isEmpty)
        #expect(machine.tick(now: t0 + 100).connects.count == 1)
        _ = machine.connectFailed(connection: 1, now: t0 + 100)
        #expect(machine.lease(request: 3, timeoutAt: nil, now: t0 + 300).connects.count == 1)
    }

    /// A circuit breaker's trial tries the database at once: waiting out a 2 s backoff would time
    /// it out and keep the breaker open for another whole timeout. It still never adds a second
    /// connect while one is in flight.
    @Test func aBreakerTrialStartsTheRetryBeforeTheBackoffEnds() {
        var machine = makeMachine(maximumConnections: 3)
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        var now = t0
        for connection in 0..<5 {  // the backoff grows to its 2 s cap
            _ = machine.connectFailed(connection: connection, now: now)
            now = now + 1_000
            _ = machine.lease(request: 10 + connection, timeoutAt: nil, now: now, bypassingBackoff: true)
        }
        _ = machine.connectFailed(connection: 5, now: now)
        let ordinary = machine.lease(request: 2, timeoutAt: now + 800, now: now + 10)
        #expect(ordinary.connects.isEmpty, "an ordinary caller waits")
        let trial = machine.lease(request: 3, timeoutAt: now + 810, now: now + 10, bypassingBackoff: true)
        #expect(trial.connects.count == 1, "the trial connects now, 2 s before the backoff ends")
        let second = machine.lease(request: 4, timeoutAt: now + 810, now: now + 10, bypassingBackoff: true)
        #expect(second.connects.isEmpty, "one connect in flight at a time")
        let connected = machine.connected(connection: trial.connectIDs[0], now: now + 20)
        #expect(connected.grant?.request == 2, "the longest waiter is served first")
        #expect(machine.consecutiveConnectFailures == 0)
    }

    @Test func aConnectingConnectionThatClosesCountsAsAFailedConnect() {
        var machine = makeMachine()
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        let closed = machine.closed(connection: 0, now: t0 + 1)
        #expect(closed.failures == [PoolFailure(request: 1, reason: .connectFailed)])
        #expect(machine.statistics.connectFailures == 1 && machine.statistics.total == 0)
    }

    @Test func staleConnectResultsAreIgnored() {
        var machine = makeMachine()
        let id = machine.warmUp(1, now: t0)[0]
        #expect(machine.connected(connection: id, now: t0 + 1) == PoolActions())
        #expect(machine.connectFailed(connection: id, now: t0 + 1) == PoolActions())
        #expect(machine.connected(connection: 42, now: t0 + 1) == PoolActions())
        #expect(machine.statistics.opened == 1 && machine.statistics.connectFailures == 0)
    }
}

@Suite("Pool state machine: evicting every connection")
struct PoolEvictionTests {
    /// A demoted primary keeps its connections open: after `evictAll` none of them serves a caller
    /// again. Idle ones close at once, a leased one on release, a probing one when its keep-alive
    /// answers; a connect in flight is kept.
    @Test func noConnectionOpenAtTheEvictionIsGrantedAgain() {
        var machine = makeMachine(maximumConnections: 4, keepAliveAfter: .milliseconds(100))
        let ids = machine.warmUp(3, now: t0)
        #expect(machine.tick(now: t0 + 100).keepAlives.sorted() == ids.sorted())
        _ = machine.keepAliveDone(connection: ids[0], alive: true, now: t0 + 100)
        _ = machine.keepAliveDone(connection: ids[1], alive: true, now: t0 + 100)
        let leased = machine.lease(request: 1, timeoutAt: nil, now: t0 + 100).grant!.connection
        let idle = [ids[0], ids[1]].first { $0 != leased }!
        let probing = ids[2]
        let connect = machine.lease(request: 2, timeoutAt: nil, now: t0 + 100).connectIDs
        #expect(connect.isEmpty, "the idle one serves it")
        _ = machine.release(connection: idle, now: t0 + 100)
        _ = machine.lease(request: 3, timeoutAt: nil, now: t0 + 100)
        _ = machine.lease(request: 4, timeoutAt: nil, now: t0 + 100)
        let connecting = machine.connectionStates.first { $0.value == .connecting }!.key

        let evicted = machine.evictAll(refused: leased, now: t0 + 101)
        #expect(evicted.closed.isEmpty, "the idle one was leased again")
        #expect(machine.release(connection: leased, now: t0 + 102).closed == [leased: .evicted])
        #expect(machine.release(connection: idle, now: t0 + 102).closed == [idle: .evicted])
        #expect(machine.keepAliveDone(connection: probing, alive: true, now: t0 + 103).closed == [probing: .evicted])
        let fresh = machine.connected(connection: connecting, now: t0 + 104)
        #expect(fresh.grant?.connection == connecting, "the connect in flight serves its caller")
        #expect(machine.statistics.closes.evicted == 3)
    }

    @Test func idleConnectionsCloseAtOnceAndTheNextCallerGetsANewOne() {
        var machine = makeMachine(maximumConnections: 2)
        let ids = machine.warmUp(2, now: t0)
        let evicted = machine.evictAll(refused: ids[0], now: t0 + 1)
        #expect(evicted.closed == Dictionary(uniqueKeysWithValues: ids.map { ($0, .evicted) }))
        _ = machine.closed(connection: ids[0], now: t0 + 2)
        #expect(machine.lease(request: 1, timeoutAt: nil, now: t0 + 3).connects.count == 1)
    }

    @Test func aRefusalByAConnectionAlreadyRetiredKeepsTheConnectionsOpenedSince() {
        var machine = makeMachine(maximumConnections: 3)
        let old = machine.warmUp(2, now: t0)
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0 + 1)  // holds one old connection
        let held = old.first { if case .leased = machine.state(of: $0) { true } else { false } }!
        let first = machine.evictAll(refused: held, now: t0 + 2)
        #expect(first.closed.count == 1, "the idle old one")
        let fresh = machine.lease(request: 2, timeoutAt: nil, now: t0 + 3).connectIDs[0]
        _ = machine.connected(connection: fresh, now: t0 + 4)
        _ = machine.release(connection: fresh, now: t0 + 5)
        // The held old connection is refused too, later: the new one stays.
        #expect(machine.evictAll(refused: held, now: t0 + 6).closed.isEmpty)
        #expect(machine.lease(request: 3, timeoutAt: nil, now: t0 + 7).grant?.connection == fresh)
        // A refusal by a connection opened after the eviction is a new demotion.
        #expect(machine.evictAll(refused: fresh, now: t0 + 8).closed.isEmpty, "leased: retired on release")
        #expect(machine.release(connection: fresh, now: t0 + 9).closed == [fresh: .evicted])
    }
}
