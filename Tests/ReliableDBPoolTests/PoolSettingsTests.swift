import ReliableDB
import Testing

@testable import ReliableDBPool

/// Property-style checks over each numeric setting across its range, extremes included.
@Suite("Pool state machine: settings across their range")
struct PoolSettingsTests {
    static let huge = Duration.seconds(Int64.max)

    @Test(arguments: [1, 2, 7, 1_000, 100_000])
    func neverOpensMoreThanTheMaximum(maximum: Int) {
        var machine = makeMachine(maximumConnections: maximum)
        var connects = 0
        let requests = Swift.min(maximum, 500) + 3
        for request in 0..<requests {
            connects += machine.lease(request: request, timeoutAt: nil, now: t0).connects.count
        }
        #expect(connects == Swift.min(requests, maximum))
        #expect(machine.statistics.total == connects && machine.statistics.waiting == requests)
    }

    @Test(arguments: [Int.min, -1, 0])
    func aMaximumBelowOneMeansOne(maximum: Int) {
        var machine = makeMachine(maximumConnections: maximum)
        #expect(machine.configuration.maximumConnections == 1)
        #expect(machine.lease(request: 1, timeoutAt: nil, now: t0).connects.count == 1)
        #expect(machine.lease(request: 2, timeoutAt: nil, now: t0).connects.isEmpty)
    }

    @Test(arguments: [Duration?.none, .zero, .nanoseconds(1), .seconds(30), huge, .seconds(-5)])
    func idleTimeoutAcrossItsRange(timeout: Duration?) {
        var machine = makeMachine(idleTimeout: timeout)
        let id = machine.warmUp(1, now: t0)[0]
        let wake = machine.tick(now: t0).wakeAt
        switch timeout {
        case nil:
            #expect(wake == nil)
            #expect(machine.tick(now: PoolInstant(nanoseconds: .max)).closes.isEmpty)
        case let timeout? where timeout <= .zero:
            #expect(machine.state(of: id) == .closing(.idle), "closed on the release that idled it")
        case let timeout?:
            #expect(wake == t0 + timeout)
            #expect(wake! > t0)
            #expect(machine.tick(now: wake!).closes == [PoolClose(connection: id, reason: .idle)])
        }
    }

    @Test(arguments: [Duration?.none, .zero, .seconds(1), huge])
    func lifetimeAcrossItsRange(lifetime: Duration?) {
        var machine = makeMachine(maximumConnections: 1, maxLifetime: lifetime, lifetimeJitterFraction: 0.2)
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        #expect(machine.connected(connection: 0, now: t0, lifetimeJitter: 0.5).grant?.request == 1)
        let release = machine.release(connection: 0, now: t0 + 500)
        if let lifetime, lifetime == .zero {
            #expect(release.closes == [PoolClose(connection: 0, reason: .lifetime)])
        } else if let lifetime, lifetime == Self.huge {
            #expect(release.closes.isEmpty)
            #expect(release.wakeAt! > t0 + 500, "saturates instead of wrapping into the past")
        } else if lifetime != nil {
            #expect(release.wakeAt == t0 + 900, "1 s less 0.2 x 0.5 of it")
        } else {
            #expect(release.closes.isEmpty && release.wakeAt == nil)
        }
    }

    @Test(arguments: [Double.nan, -1, 0, 0.25, 1, 2, .infinity])
    func jitterIsClampedToTheUnitInterval(value: Double) {
        let configuration = PoolConfiguration(maxLifetime: .seconds(100), lifetimeJitterFraction: value).normalized
        #expect((0...1).contains(configuration.lifetimeJitterFraction))
        for jitter in [value, 0, 1] {
            let lifetime = configuration.lifetime(jitter: jitter)!
            #expect(lifetime >= .zero && lifetime <= .seconds(100))
        }
    }

    @Test(arguments: [PoolInstant(nanoseconds: .min), t0 + -1, t0, t0 + 1, PoolInstant(nanoseconds: .max)])
    func deadlinesAcrossTheTimeline(deadline: PoolInstant) {
        var machine = makeMachine(maximumConnections: 1)
        let id = machine.warmUp(1, now: t0)[0]
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        let lease = machine.lease(request: 2, timeoutAt: deadline, now: t0)
        if deadline <= t0 {
            #expect(lease.failures == [PoolFailure(request: 2, reason: .timedOut)])
        } else {
            #expect(lease.failures.isEmpty && lease.wakeAt == deadline)
            let later = machine.tick(now: deadline)
            #expect(later.failures == [PoolFailure(request: 2, reason: .timedOut)])
            #expect(machine.release(connection: id, now: deadline).grant == nil)
        }
    }

    @Test(arguments: [
        (Duration.zero, Duration.zero), (.milliseconds(100), .seconds(2)), (.seconds(5), .seconds(1)), (huge, huge),
    ])
    func backoffAcrossItsRange(initial: Duration, maximum: Duration) {
        let configuration = PoolConfiguration(connectBackoffInitial: initial, connectBackoffMaximum: maximum).normalized
        var previous = Duration.zero
        for failures in [1, 2, 3, 10, 64, 1_000, Int.max] {
            let delay = configuration.connectBackoff(afterFailures: failures)
            #expect(delay >= previous && delay <= configuration.connectBackoffMaximum)
            previous = delay
        }
        let first = Swift.min(initial, configuration.connectBackoffMaximum)
        #expect(configuration.connectBackoff(afterFailures: 1) == .nanoseconds(first.nanosecondsClamped))
    }

    @Test func zeroBackoffRetriesOnTheSameEvent() {
        var machine = makeMachine(maximumConnections: 2, connectBackoffInitial: .zero, connectBackoffMaximum: .zero)
        _ = machine.warmUp(1, now: t0)
        _ = machine.lease(request: 1, timeoutAt: nil, now: t0)
        _ = machine.lease(request: 2, timeoutAt: nil, now: t0)
        #expect(machine.connectFailed(connection: 1, now: t0).connects.count == 1)
    }

    @Test(arguments: [Duration?.none, .zero, .seconds(-1)])
    func keepAliveOffWhenNotPositive(after: Duration?) {
        var machine = makeMachine(keepAliveAfter: after, keepAliveTimeout: .zero)
        #expect(machine.configuration.keepAliveAfter == nil)
        #expect(machine.configuration.keepAliveTimeout == .nanoseconds(1))
        _ = machine.warmUp(1, now: t0)
        #expect(machine.tick(now: PoolInstant(nanoseconds: .max)).keepAlives.isEmpty)
    }

    @Test func instantArithmeticSaturates() {
        let end = PoolInstant(nanoseconds: .max)
        let start = PoolInstant(nanoseconds: .min)
        #expect(end + .seconds(1) == end)
        #expect(start + .seconds(-1) == start)
        #expect(t0 + Self.huge == end)
        #expect(end - start == .nanoseconds(Int64.max))
        #expect(start - end == .nanoseconds(Int64.min))
        #expect((t0 + 5) - t0 == .milliseconds(5))
    }
}
