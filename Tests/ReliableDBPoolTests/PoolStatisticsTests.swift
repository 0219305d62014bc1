import ReliableDB
import Testing

@testable import ReliableDBPool

@Suite("Pool state machine: statistics")
struct PoolStatisticsTests {
    @Test func gaugesFollowTheConnectionStates() {
        var machine = makeMachine(maximumConnections: 4, keepAliveAfter: .seconds(1))
        let ids = machine.warmUp(3, now: t0)
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        let leased = machine.connectionStates.filter { if case .leased = $0.value { true } else { false } }.keys.first!
        _ = machine.release(connection: leased, discard: true, now: t0)
        _ = machine.lease(request: 2, timeoutAt: nil, now: t0)
        _ = machine.lease(request: 3, timeoutAt: nil, now: t0)
        _ = machine.lease(request: 4, timeoutAt: nil, now: t0)
        var statistics = machine.statistics
        #expect(statistics.idle == 0 && statistics.active == 2 && statistics.closing == 1)
        #expect(statistics.connecting == 1 && statistics.waiting == 1 && statistics.total == 4)
        #expect(statistics.open == 2)

        _ = machine.closed(connection: leased, now: t0)
        for id in ids where id != leased { _ = machine.release(connection: id, now: t0) }
        _ = machine.tick(now: t0 + 1_000)
        statistics = machine.statistics
        #expect(statistics.keepAlive == 1 && statistics.active == 1 && statistics.waiting == 0)
        #expect(statistics.requests == 7 && statistics.granted == 7)
        #expect(statistics.connectsStarted == 4 && statistics.opened == 3)
        #expect(statistics.closes.broken == 1 && statistics.closed == 1)
    }

    @Test func closeCountsIndexByReason() {
        var counts = PoolCloseCounts()
        for (offset, reason) in PoolCloseReason.allCases.enumerated() { counts[reason] += offset + 1 }
        #expect(counts.idle == 1 && counts.lifetime == 2 && counts.broken == 3)
        #expect(counts.keepAliveFailed == 4 && counts.shutdown == 5 && counts.evicted == 6 && counts.resized == 7)
        #expect(counts.total == 28)
    }

    @Test func actionListsHoldOneElementInlineAndGrowPastIt() {
        var list = PoolActionList<Int>()
        #expect(list.isEmpty)
        list.append(1)
        #expect(Array(list) == [1])
        list.append(2)
        list.append(3)
        #expect(Array(list) == [1, 2, 3] && list.count == 3 && list == [1, 2, 3])
    }
}
