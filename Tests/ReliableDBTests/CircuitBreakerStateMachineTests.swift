import Testing

@testable import ReliableDB

@Suite("Circuit breaker state machine")
struct CircuitBreakerStateMachineTests {
    typealias Machine = CircuitBreakerStateMachine
    let t0 = MonotonicTime(nanoseconds: 1_000_000_000)

    func permit(_ machine: inout Machine, at now: MonotonicTime) -> Machine.Permit? {
        if case .permitted(let permit) = machine.acquire(at: now).0 { return permit }
        return nil
    }

    func fail(_ machine: inout Machine, times: Int, at now: MonotonicTime) -> CircuitTransition? {
        var last: CircuitTransition?
        for _ in 0..<times {
            guard let permit = permit(&machine, at: now) else { return last }
            last = machine.record(permit, outcome: .failure, duration: .milliseconds(5), at: now) ?? last
        }
        return last
    }

    @Test func opensAfterFailureThresholdWithinMonitorWindow() {
        var machine = Machine(configuration: .init(failureThreshold: 3))
        #expect(fail(&machine, times: 2, at: t0) == nil)
        #expect(machine.state == .closed)
        let transition = fail(&machine, times: 1, at: t0 + .seconds(1))
        #expect(transition?.to == .open)
        #expect(transition?.reason == .failureThreshold)
        #expect(machine.state == .open)
    }

    @Test func failuresOlderThanTheMonitorWindowAreForgotten() {
        var machine = Machine(configuration: .init(failureThreshold: 3, monitorWindow: .seconds(60)))
        _ = fail(&machine, times: 2, at: t0)
        _ = fail(&machine, times: 2, at: t0 + .seconds(90))
        #expect(machine.state == .closed)
        #expect(machine.windowFailures(at: t0 + .seconds(90)) == 2)
    }

    @Test func rejectsWhileOpenAndSaysWhenItWillProbe() {
        var machine = Machine(configuration: .init(failureThreshold: 1, timeout: .seconds(30)))
        _ = fail(&machine, times: 1, at: t0)
        let (decision, _) = machine.acquire(at: t0 + .seconds(10))
        #expect(decision == .rejected(state: .open, retryAfter: .seconds(20)))
        #expect(machine.counters.rejected == 1)
    }

    @Test func halfOpenAfterTimeoutThenClosesAfterSuccessThreshold() {
        var machine = Machine(
            configuration: .init(
                failureThreshold: 1,
                successThreshold: 2,
                timeout: .seconds(30),
                maxConcurrentProbes: 1
            )
        )
        _ = fail(&machine, times: 1, at: t0)
        let later = t0 + .seconds(30)
        let (first, transition) = machine.acquire(at: later)
        #expect(transition?.to == .halfOpen)
        guard case .permitted(let probe) = first else {
            Issue.record("expected a probe permit")
            return
        }
        #expect(probe.isProbe)
        // A second caller is rejected while the only probe slot is taken.
        #expect(permit(&machine, at: later) == nil)
        #expect(machine.record(probe, outcome: .success, duration: .zero, at: later) == nil)
        let second = permit(&machine, at: later)!
        let closing = machine.record(second, outcome: .success, duration: .zero, at: later)
        #expect(closing?.to == .closed)
        #expect(closing?.reason == .probesSucceeded)
    }

    @Test func failedProbeReopens() {
        var machine = Machine(configuration: .init(failureThreshold: 1, timeout: .seconds(5)))
        _ = fail(&machine, times: 1, at: t0)
        let probe = permit(&machine, at: t0 + .seconds(5))!
        let transition = machine.record(probe, outcome: .failure, duration: .zero, at: t0 + .seconds(5))
        #expect(transition?.to == .open)
        #expect(transition?.reason == .probeFailed)
        #expect(machine.openUntil == t0 + .seconds(10))
    }

    @Test func ignoredOutcomesNeverOpenTheBreaker() {
        var machine = Machine(configuration: .init(failureThreshold: 1))
        for _ in 0..<100 {
            let permit = permit(&machine, at: t0)!
            #expect(machine.record(permit, outcome: .ignored, duration: .zero, at: t0) == nil)
        }
        #expect(machine.state == .closed)
        #expect(machine.counters.ignored == 100)
    }

    @Test func outcomesFromBeforeTheLastTransitionAreIgnored() {
        var machine = Machine(configuration: .init(failureThreshold: 1, successThreshold: 1, timeout: .seconds(1)))
        let slowCall = permit(&machine, at: t0)!
        _ = fail(&machine, times: 1, at: t0)
        #expect(machine.state == .open)
        // The call that began while closed succeeds after the breaker opened: it must not count.
        #expect(machine.record(slowCall, outcome: .success, duration: .seconds(2), at: t0 + .seconds(2)) == nil)
        #expect(machine.state == .open)
        #expect(machine.counters.stale == 1)
    }

    @Test func failureRateModeWaitsForMinimumCalls() {
        var machine = Machine(
            configuration: .init(failureRateThreshold: 50, minimumNumberOfCalls: 10, slidingWindow: .count(10))
        )
        _ = fail(&machine, times: 5, at: t0)
        #expect(machine.state == .closed, "5 calls are below the minimum of 10")
        for _ in 0..<4 {
            let permit = permit(&machine, at: t0)!
            _ = machine.record(permit, outcome: .success, duration: .zero, at: t0)
        }
        let transition = fail(&machine, times: 1, at: t0)
        #expect(transition?.reason == .failureRate, "6 failures in 10 calls = 60% ≥ 50%")
    }

    @Test func countWindowForgetsOldCalls() {
        var machine = Machine(
            configuration: .init(failureRateThreshold: 50, minimumNumberOfCalls: 4, slidingWindow: .count(4))
        )
        _ = fail(&machine, times: 1, at: t0)
        for _ in 0..<6 {
            let permit = permit(&machine, at: t0)!
            _ = machine.record(permit, outcome: .success, duration: .zero, at: t0)
        }
        // The window is the last 4 calls: all successes, so one more failure is 25%.
        #expect(fail(&machine, times: 1, at: t0) == nil)
        #expect(machine.state == .closed)
    }

    @Test func slowCallsOpenTheBreaker() {
        var machine = Machine(
            configuration: .init(
                minimumNumberOfCalls: 4,
                slidingWindow: .count(4),
                slowCallDurationThreshold: .milliseconds(100),
                slowCallRateThreshold: 75
            )
        )
        var last: CircuitTransition?
        for duration in [Duration.milliseconds(500), .milliseconds(10), .milliseconds(500), .milliseconds(500)] {
            let permit = permit(&machine, at: t0)!
            last = machine.record(permit, outcome: .success, duration: duration, at: t0) ?? last
        }
        #expect(last?.reason == .slowCallRate)
        #expect(machine.counters.slowCalls == 3)
    }

    @Test func operatorStates() {
        var machine = Machine(configuration: .init(failureThreshold: 1, timeout: .seconds(1)))
        _ = machine.force(.forcedOpen, at: t0)
        #expect(machine.acquire(at: t0 + .seconds(3600)).0 == .rejected(state: .forcedOpen, retryAfter: nil))
        _ = machine.force(.disabled, at: t0)
        let permit = permit(&machine, at: t0)!
        #expect(!permit.isCounted)
        _ = machine.force(.open, at: t0)
        #expect(machine.openUntil == t0 + .seconds(1), "forcing OPEN behaves like a trip and recovers")
        _ = machine.reset(at: t0)
        #expect(machine.state == .closed)
        #expect(machine.windowFailures(at: t0) == 0)
    }
}
