import ReliableDB
import Testing

@testable import ReliableDBPool

@Suite("Pool state machine: connection lifecycle")
struct PoolConnectionTests {
    @Test func discardedConnectionClosesAndItsSlotServesAWaiterOnceClosed() {
        var machine = makeMachine(maximumConnections: 1)
        let id = machine.warmUp(1, now: t0)[0]
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        #expect(machine.lease(request: 2, timeoutAt: nil, now: t0).connects.isEmpty)
        let release = machine.release(connection: id, discard: true, now: t0 + 1)
        #expect(release.closes == [PoolClose(connection: id, reason: .broken)])
        #expect(release.grant == nil && release.connects.isEmpty, "closing still holds the only slot")
        #expect(machine.statistics.closing == 1 && machine.statistics.total == 1)
        let closed = machine.closed(connection: id, now: t0 + 2)
        #expect(closed.connects.count == 1)
        #expect(machine.connected(connection: closed.connects[0].connection, now: t0 + 3).grant?.request == 2)
        #expect(machine.statistics.closes.broken == 1 && machine.statistics.closed == 1)
    }

    @Test func releaseOfAnUnknownOrIdleConnectionIsIgnored() {
        var machine = makeMachine()
        let id = machine.warmUp(1, now: t0)[0]
        #expect(machine.release(connection: id, now: t0 + 1) == PoolActions())
        #expect(machine.release(connection: 99, now: t0 + 1) == PoolActions())
        #expect(machine.state(of: id) == .idle(since: t0, lastChecked: t0))
    }

    @Test func idleConnectionClosesAfterTheIdleTimeout() {
        var machine = makeMachine(idleTimeout: .seconds(30))
        let id = machine.warmUp(1, now: t0)[0]
        let lease = machine.lease(request: 1, timeoutAt: nil, now: t0 + 1_000)
        #expect(lease.wakeAt == nil, "a leased connection has no idle timer")
        let release = machine.release(connection: id, now: t0 + 2_000)
        #expect(release.wakeAt == t0 + 32_000)
        #expect(machine.tick(now: t0 + 31_999).closes.isEmpty)
        let tick = machine.tick(now: t0 + 32_000)
        #expect(tick.closes == [PoolClose(connection: id, reason: .idle)])
        #expect(tick.wakeAt == nil)
        #expect(machine.statistics.closes.idle == 1)
    }

    @Test func zeroIdleTimeoutClosesOnReleaseWhenNobodyWaits() {
        var machine = makeMachine(idleTimeout: .zero)
        let actions = machine.lease(request: 1, timeoutAt: nil, now: t0)
        let connected = machine.connected(connection: actions.connects[0].connection, now: t0)
        #expect(connected.grant != nil)
        let release = machine.release(connection: 0, now: t0 + 1)
        #expect(release.closes == [PoolClose(connection: 0, reason: .idle)])
    }

    @Test func keepAliveProbesAnIdleConnectionAndKeepsItsIdleClock() {
        var machine = makeMachine(
            idleTimeout: .seconds(100),
            keepAliveAfter: .seconds(30),
            keepAliveTimeout: .seconds(5)
        )
        let id = machine.warmUp(1, now: t0)[0]
        #expect(machine.tick(now: t0).wakeAt == t0 + 30_000)
        let tick = machine.tick(now: t0 + 30_000)
        #expect(tick.keepAlives == [id])
        #expect(tick.wakeAt == t0 + 35_000)
        #expect(machine.statistics.keepAlive == 1 && machine.statistics.idle == 0)
        let done = machine.keepAliveDone(connection: id, alive: true, now: t0 + 30_010)
        #expect(machine.state(of: id) == .idle(since: t0, lastChecked: t0 + 30_010))
        #expect(done.wakeAt == t0 + 60_010)
        _ = machine.tick(now: t0 + 60_010)
        _ = machine.keepAliveDone(connection: id, alive: true, now: t0 + 60_020)
        _ = machine.tick(now: t0 + 90_020)
        _ = machine.keepAliveDone(connection: id, alive: true, now: t0 + 90_030)
        #expect(machine.tick(now: t0 + 100_000).closes == [PoolClose(connection: id, reason: .idle)])
    }

    @Test func failedOrTimedOutKeepAliveClosesTheConnection() {
        var machine = makeMachine(maximumConnections: 2, keepAliveAfter: .seconds(1), keepAliveTimeout: .seconds(2))
        let ids = machine.warmUp(2, now: t0)
        #expect(machine.tick(now: t0 + 1_000).keepAlives.count == 2)
        let dead = machine.keepAliveDone(connection: ids[0], alive: false, now: t0 + 1_500)
        #expect(dead.closes == [PoolClose(connection: ids[0], reason: .keepAliveFailed)])
        let timeout = machine.tick(now: t0 + 3_000)
        #expect(timeout.closes == [PoolClose(connection: ids[1], reason: .keepAliveFailed)])
        #expect(machine.keepAliveDone(connection: ids[1], alive: true, now: t0 + 3_001).grant == nil)
        #expect(machine.state(of: ids[1]) == .closing(.keepAliveFailed), "a late result is ignored")
        #expect(machine.statistics.closes.keepAliveFailed == 2)
    }

    @Test func aRequestArrivingDuringAKeepAliveGetsTheConnectionAfterIt() {
        var machine = makeMachine(maximumConnections: 1, keepAliveAfter: .seconds(1))
        let id = machine.warmUp(1, now: t0)[0]
        _ = machine.tick(now: t0 + 1_000)
        let lease = machine.lease(request: 1, timeoutAt: nil, now: t0 + 1_001)
        #expect(lease.grant == nil && lease.connects.isEmpty)
        let done = machine.keepAliveDone(connection: id, alive: true, now: t0 + 1_005)
        #expect(done.grant == PoolGrant(request: 1, connection: id, waited: .milliseconds(4)))
    }

    @Test func lifetimeRetiresALeasedConnectionOnRelease() {
        var machine = makeMachine(maximumConnections: 1, maxLifetime: .seconds(60))
        let id = machine.warmUp(1, now: t0)[0]
        #expect(machine.tick(now: t0).wakeAt == t0 + 60_000)
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0 + 59_000)
        _ = machine.lease(request: 2, timeoutAt: nil, now: t0 + 59_000)
        let release = machine.release(connection: id, now: t0 + 61_000)
        #expect(release.closes == [PoolClose(connection: id, reason: .lifetime)])
        #expect(release.grant == nil)
        #expect(machine.closed(connection: id, now: t0 + 61_001).connects.count == 1)
    }

    @Test func lifetimeRetiresAnIdleConnectionOnTime() {
        var machine = makeMachine(maxLifetime: .seconds(10), lifetimeJitterFraction: 0.5)
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        _ = machine.connected(connection: 0, now: t0, lifetimeJitter: 1)
        let release = machine.release(connection: 0, now: t0 + 1_000)
        #expect(release.wakeAt == t0 + 5_000, "10 s less half of it at full jitter")
        #expect(machine.tick(now: t0 + 5_000).closes == [PoolClose(connection: 0, reason: .lifetime)])
    }

    @Test func anExpiredIdleConnectionIsNeverHandedOut() {
        var machine = makeMachine(maximumConnections: 2, maxLifetime: .seconds(10))
        _ = machine.warmUp(1, now: t0)
        let lease = machine.lease(request: 1, timeoutAt: nil, now: t0 + 10_000)
        #expect(lease.grant == nil)
        #expect(lease.closes == [PoolClose(connection: 0, reason: .lifetime)])
        #expect(lease.connects.count == 1)
    }

    @Test func zeroLifetimeMeansOneUsePerConnection() {
        var machine = makeMachine(maximumConnections: 1, maxLifetime: .zero)
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        _ = machine.lease(request: 2, timeoutAt: nil, now: t0)
        #expect(machine.connected(connection: 0, now: t0).grant?.request == 1)
        let release = machine.release(connection: 0, now: t0)
        #expect(release.closes == [PoolClose(connection: 0, reason: .lifetime)] && release.grant == nil)
        #expect(machine.closed(connection: 0, now: t0).connectIDs == [1])
        #expect(machine.connected(connection: 1, now: t0).grant?.request == 2)
    }

    @Test func aConnectionClosingOnItsOwnCountsAsBroken() {
        var machine = makeMachine(maximumConnections: 2)
        let ids = machine.warmUp(2, now: t0)
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        let leased = machine.connectionStates.first { if case .leased = $0.value { true } else { false } }!.key
        let idle = ids.first { $0 != leased }!
        #expect(machine.closed(connection: leased, now: t0 + 1).closes.isEmpty)
        #expect(machine.closed(connection: idle, now: t0 + 1).closes.isEmpty)
        #expect(machine.release(connection: leased, now: t0 + 2) == PoolActions(), "the late release is ignored")
        let statistics = machine.statistics
        #expect(statistics.total == 0 && statistics.closes.broken == 2 && statistics.closed == 2)
    }

    @Test func aClosedSlotStartsAConnectForAWaiter() {
        var machine = makeMachine(maximumConnections: 1)
        let id = machine.warmUp(1, now: t0)[0]
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        _ = machine.lease(request: 2, timeoutAt: nil, now: t0)
        let closed = machine.closed(connection: id, now: t0 + 1)
        #expect(closed.connectIDs == [1])
    }
}
