import ReliableDBTesting
import Testing

@testable import ReliableDB

@Suite("Retry backoff and budget")
struct RetryTests {
    @Test func retriesAreSetBesideTheBreakerAndValidatedThere() {
        let configuration = ReliabilityConfiguration(retry: .init(attempts: 7))
        #expect(configuration.retry.attempts == 7)
        #expect(configuration.circuitBreaker == CircuitBreakerConfiguration())
        let invalid = ReliabilityConfiguration(retry: .init(attempts: 0))
        #expect(invalid.validationProblems.contains { $0.contains("attempts") })
    }

    /// The old spelling, inside the breaker's configuration, still works for one release.
    @available(*, deprecated)
    @Test func theDeprecatedSpellingInsideTheBreakerStillSetsTheRetries() async throws {
        let configuration = ReliabilityConfiguration(circuitBreaker: .init(failureThreshold: 3, retry: .none))
        #expect(configuration.retry == .none)
        #expect(configuration.circuitBreaker.failureThreshold == 3)
        var breaker = CircuitBreakerConfiguration()
        breaker.retry = .init(attempts: 4)
        #expect(ReliabilityConfiguration(circuitBreaker: breaker).retry.attempts == 4)
        // And the pipeline runs by it: one attempt, no retry.
        var noTimeouts = configuration
        noTimeouts.timeouts.enabled = false
        let db = try ReliableDatabase(backend: ScriptedBackend(), configuration: noTimeouts, clock: ManualClock())
        let script = Script([.failure(.init(errorClass: .transientTransaction)), .success(1)])
        await #expect(throws: ClassifiedError.self) {
            try await db.execute(OperationOptions("once", kind: .transaction)) { _ in try script.next() }
        }
        #expect(script.calls.count == 1)
    }
    @Test func backoffDelaysStayWithinTheirBoundsForManySeeds() {
        let configurations = [
            RetryConfiguration(
                attempts: 8,
                initialDelay: .milliseconds(100),
                maxDelay: .seconds(5),
                backoffMultiplier: 2
            ),
            RetryConfiguration(
                attempts: 20,
                initialDelay: .milliseconds(500),
                maxDelay: .seconds(10),
                backoffMultiplier: 2
            ),
            RetryConfiguration(
                attempts: 6,
                initialDelay: .milliseconds(1),
                maxDelay: .milliseconds(50),
                backoffMultiplier: 3.5
            ),
            RetryConfiguration(attempts: 4, initialDelay: .zero, maxDelay: .zero, backoffMultiplier: 1),
        ]
        var seeds = SplitMix64(seed: 7)
        for configuration in configurations {
            var previousBound = Duration.zero
            for retry in 1..<configuration.attempts {
                let bound = configuration.delayBound(forRetry: retry)
                #expect(bound <= configuration.maxDelay)
                #expect(bound >= previousBound, "bounds never shrink")
                previousBound = bound
                for _ in 0..<500 {
                    var generator = SplitMix64(seed: seeds.next())
                    let delay = configuration.delay(forRetry: retry, using: &generator)
                    #expect(delay >= .zero && delay <= bound)
                }
            }
        }
    }

    @Test func boundGrowsExponentiallyUntilCapped() {
        let configuration = RetryConfiguration(
            attempts: 10,
            initialDelay: .milliseconds(100),
            maxDelay: .seconds(1),
            backoffMultiplier: 2
        )
        let bounds = (1...6).map { configuration.delayBound(forRetry: $0) }
        #expect(
            bounds == [
                .milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1),
                .seconds(1),
            ]
        )
    }

    @Test func fullJitterSpreadsDelaysAcrossTheRange() {
        let configuration = RetryConfiguration(initialDelay: .seconds(1), maxDelay: .seconds(1))
        var generator = SplitMix64(seed: 1)
        let delays = (0..<2000).map { _ in configuration.delay(forRetry: 1, using: &generator).milliseconds }
        let mean = delays.reduce(0, +) / Double(delays.count)
        #expect(abs(mean - 500) < 30, "full jitter is uniform on [0, bound]: mean ≈ bound / 2, got \(mean)")
        #expect(delays.min()! < 50 && delays.max()! > 950)
    }

    @Test func budgetAllowsAFractionOfRecentRequests() {
        var budget = RetryBudget(.init(ratio: 0.2, minRetriesPerSecond: 0, window: .seconds(10)))
        let now = MonotonicTime(nanoseconds: 5_000_000_000)
        for _ in 0..<100 { budget.recordRequest(at: now) }
        let granted = (0..<50).filter { _ in budget.tryAcquireRetry(at: now) }.count
        #expect(granted == 20)
    }

    @Test func budgetRefillsAsTheWindowSlides() {
        var budget = RetryBudget(.init(ratio: 0.5, minRetriesPerSecond: 0, window: .seconds(10)))
        let start = MonotonicTime(nanoseconds: 100_000_000_000)
        for _ in 0..<10 { budget.recordRequest(at: start) }
        let grantedAtStart = (0..<10).filter { _ in budget.tryAcquireRetry(at: start) }.count
        #expect(grantedAtStart == 5)
        let later = start + .seconds(11)
        let grantedWithEmptyWindow = budget.tryAcquireRetry(at: later)
        #expect(!grantedWithEmptyWindow, "old requests left the window with their retries")
        for _ in 0..<4 { budget.recordRequest(at: later) }
        let grantedLater = (0..<10).filter { _ in budget.tryAcquireRetry(at: later) }.count
        #expect(grantedLater == 2)
    }

    @Test func budgetFloorAllowsRetriesWhenQuiet() {
        var budget = RetryBudget(.init(ratio: 0, minRetriesPerSecond: 1, window: .seconds(10)))
        let now = MonotonicTime(nanoseconds: 1)
        let granted = (0..<20).filter { _ in budget.tryAcquireRetry(at: now) }.count
        #expect(granted == 10)
    }
}
