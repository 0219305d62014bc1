import ReliableDBTesting
import Synchronization
import Testing

@testable import ReliableDB

@Suite("Circuit breaker under concurrency")
struct CircuitBreakerConcurrencyTests {
    @Test(arguments: [1, 3])
    func halfOpenAdmitsAtMostNProbesAmongThousandCallers(maxProbes: Int) async {
        let clock = ManualClock()
        let breaker = CircuitBreaker(
            configuration: .init(failureThreshold: 1, timeout: .seconds(10), maxConcurrentProbes: maxProbes),
            clock: clock
        )
        breaker.forceState(.open)
        clock.advance(by: .seconds(10))

        let admitted = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<1000 {
                group.addTask {
                    if case .permitted = breaker.acquire() { return true }
                    return false
                }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(admitted == maxProbes)
        #expect(breaker.state == .halfOpen)
        #expect(breaker.metrics.rejected == 1000 - maxProbes)
    }

    /// Readiness follows `isRejectingCalls`: an open breaker stops rejecting when its timeout has
    /// elapsed, although it reads `OPEN` until a call arrives to turn it half-open.
    @Test func anOpenBreakerStopsRejectingWhenItsTimeoutElapses() {
        let clock = ManualClock()
        let breaker = CircuitBreaker(configuration: .init(failureThreshold: 1, timeout: .seconds(10)), clock: clock)
        #expect(!breaker.isRejectingCalls)
        breaker.forceState(.open)
        #expect(breaker.isRejectingCalls)
        clock.advance(by: .seconds(10) - .nanoseconds(1))
        #expect(breaker.isRejectingCalls)
        clock.advance(by: .nanoseconds(1))
        #expect(!breaker.isRejectingCalls)
        #expect(breaker.state == .open, "still open until the next call")
        breaker.forceState(.forcedOpen)
        clock.advance(by: .seconds(3600))
        #expect(breaker.isRejectingCalls, "forced open rejects until an operator says otherwise")
    }

    @Test func pipelineNeverHasMoreThanNProbesInFlight() async throws {
        let clock = ManualClock()
        let db = makeDatabase(
            clock: clock,
            breaker: .init(failureThreshold: 1, timeout: .seconds(10), maxConcurrentProbes: 2),
            retry: .none,
            timeouts: .init(enabled: false)
        )
        db.circuitBreaker.forceState(.open)
        clock.advance(by: .seconds(10))

        let inFlight = Gauge()
        let released = Flag()
        let results = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<1000 {
                group.addTask {
                    do {
                        _ = try await db.execute(OperationOptions("probe")) { _ in
                            inFlight.enter()
                            // Hold the probe until every caller has tried.
                            while !released.isSet { await Task.yield() }
                            inFlight.leave()
                            return 1
                        }
                        return true
                    } catch {
                        #expect(error is DatabaseCircuitBreakerError)
                        return false
                    }
                }
            }
            // Wait until all but the probes were rejected, then let the probes finish.
            while db.circuitBreaker.metrics.rejected < 1000 - 2 { await Task.yield() }
            released.set()
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(results.filter { $0 }.count == 2)
        #expect(inFlight.peak <= 2)
    }
}
