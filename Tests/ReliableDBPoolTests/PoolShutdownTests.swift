import ReliableDB
import Testing

@testable import ReliableDBPool

@Suite("Pool state machine: shutdown")
struct PoolShutdownTests {
    @Test func shutdownFailsWaitersAndClosesTheRestAsTheyComeBack() {
        var machine = makeMachine(maximumConnections: 3)
        let ids = machine.warmUp(2, now: t0)
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        _ = machine.lease(request: 2, timeoutAt: nil, now: t0)
        let connecting = machine.lease(request: 3, timeoutAt: nil, now: t0).connectIDs
        _ = machine.lease(request: 4, timeoutAt: t0 + 100, now: t0)
        #expect(connecting.count == 1 && machine.statistics.waiting == 2)

        let shutdown = machine.shutdown()
        #expect(shutdown.failed == [3: .shutdown, 4: .shutdown])
        #expect(shutdown.closes.isEmpty && shutdown.connects.isEmpty)
        #expect(shutdown.wakeAt == nil && !shutdown.shutDownCompleted)
        #expect(machine.isShuttingDown && !machine.isShutDownComplete)

        #expect(
            machine.lease(request: 5, timeoutAt: nil, now: t0 + 1).failures == [
                PoolFailure(request: 5, reason: .shutdown)
            ]
        )
        #expect(
            machine.release(connection: ids[0], now: t0 + 2).closes == [
                PoolClose(connection: ids[0], reason: .shutdown)
            ]
        )
        let connected = machine.connected(connection: connecting[0], now: t0 + 3)
        #expect(connected.grant == nil)
        #expect(connected.closes == [PoolClose(connection: connecting[0], reason: .shutdown)])
        #expect(machine.closed(connection: ids[0], now: t0 + 4).shutDownCompleted == false)
        #expect(machine.closed(connection: ids[1], now: t0 + 4).shutDownCompleted == false, "leased, closed by peer")
        let last = machine.closed(connection: connecting[0], now: t0 + 5)
        #expect(last.shutDownCompleted)
        #expect(machine.isShutDownComplete)
        #expect(machine.statistics.total == 0 && machine.statistics.failedByShutdown == 3)
        #expect(machine.tick(now: t0 + 6) == PoolActions(), "nothing after completion")
        #expect(machine.shutdown() == PoolActions())
    }

    @Test func shutdownClosesIdleConnectionsAtOnce() {
        var machine = makeMachine(maximumConnections: 3)
        let ids = machine.warmUp(3, now: t0)
        let shutdown = machine.shutdown()
        #expect(shutdown.closed == Dictionary(uniqueKeysWithValues: ids.map { ($0, PoolCloseReason.shutdown) }))
        for id in ids.dropLast() { #expect(!machine.closed(connection: id, now: t0).shutDownCompleted) }
        #expect(machine.closed(connection: ids.last!, now: t0).shutDownCompleted)
    }

    @Test func shutdownOfAnEmptyPoolCompletesAtOnce() {
        var machine = makeMachine()
        let shutdown = machine.shutdown()
        #expect(shutdown.shutDownCompleted && machine.isShutDownComplete)
    }

    @Test func aFailedConnectDuringShutdownCompletesItWithoutBackoff() {
        var machine = makeMachine()
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        _ = machine.shutdown()
        let failed = machine.connectFailed(connection: 0, now: t0 + 1)
        #expect(failed.shutDownCompleted && failed.failures.isEmpty && failed.wakeAt == nil)
        #expect(machine.consecutiveConnectFailures == 0)
    }

    @Test func shutdownClosesAConnectionBeingProbed() {
        var machine = makeMachine(keepAliveAfter: .seconds(1))
        let id = machine.warmUp(1, now: t0)[0]
        #expect(machine.tick(now: t0 + 1_000).keepAlives == [id])
        #expect(machine.shutdown().closes == [PoolClose(connection: id, reason: .shutdown)])
        #expect(machine.keepAliveDone(connection: id, alive: true, now: t0 + 1_001).grant == nil)
        #expect(machine.closed(connection: id, now: t0 + 1_002).shutDownCompleted)
    }

    @Test func discardDuringShutdownStillCountsAsBroken() {
        var machine = makeMachine()
        let id = machine.warmUp(1, now: t0)[0]
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        _ = machine.shutdown()
        #expect(
            machine.release(connection: id, discard: true, now: t0).closes == [
                PoolClose(connection: id, reason: .broken)
            ]
        )
    }
}
