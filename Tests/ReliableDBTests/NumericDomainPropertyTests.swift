import Foundation
import PropertyBased
import ReliableDBTesting
import Testing

@testable import ReliableDB

/// Every numeric setting of backoff, jitter, the retry budget and the breaker over its whole
/// domain: zero, unlimited and extreme values included. Each property runs `cases` random inputs
/// drawn half from the edges and half from the whole range.
@Suite("Numeric settings over their whole domain (property-based)")
struct NumericDomainPropertyTests {
    static let cases = 1_000

    /// Nanoseconds with the edges (0, 1, Int64.max) drawn as often as the rest of the range.
    static let nanoseconds = Gen.int(in: 0...5).map { pick -> Int64 in
        switch pick {
        case 0: 0
        case 1: 1
        case 2: .max
        case 3: .max / 2
        default: -1  // replaced by a uniform draw below
        }
    }
    static let anyNanoseconds = zip(nanoseconds, Gen.int64(in: 0...Int64.max)).map { edge, uniform in
        edge >= 0 ? edge : uniform
    }
    /// Multipliers: exactly 1, large, infinite, or anywhere in 1...1e6.
    static let multipliers = zip(Gen.int(in: 0...4), Gen.double(in: 1...1e6)).map { pick, uniform -> Double in
        switch pick {
        case 0: 1
        case 1: 1e300
        case 2: .infinity
        case 3: .greatestFiniteMagnitude
        default: uniform
        }
    }
    static let retries = zip(Gen.int(in: 0...2), Gen.int(in: 1...Int.max)).map { pick, uniform -> Int in
        switch pick {
        case 0: 1
        case 1: .max
        default: uniform
        }
    }

    @Test func backoffBoundsStayWithinZeroAndMaxDelayAndNeverShrink() async {
        await propertyCheck(
            count: Self.cases,
            input: Self.anyNanoseconds,
            Self.anyNanoseconds,
            Self.multipliers,
            Self.retries
        ) { a, b, multiplier, retry in
            let configuration = RetryConfiguration(
                attempts: 3,
                initialDelay: .nanoseconds(min(a, b)),
                maxDelay: .nanoseconds(max(a, b)),
                backoffMultiplier: multiplier
            )
            #expect(configuration.validationProblems.isEmpty)
            let bound = configuration.delayBound(forRetry: retry)
            #expect(bound >= .zero && bound <= configuration.maxDelay)
            if retry < Int.max {
                #expect(configuration.delayBound(forRetry: retry + 1) >= bound, "the bound never shrinks")
            }
            var generator = SplitMix64(seed: UInt64(truncatingIfNeeded: a ^ b))
            let delay = configuration.delay(forRetry: retry, using: &generator)
            #expect(delay >= .zero && delay <= bound, "full jitter stays within the bound")
        }
    }

    @Test func invalidBackoffIsRejectedWithAMessage() async {
        await propertyCheck(count: Self.cases, input: Gen.int64(in: -1_000...1_000), Gen.double(in: -10...0.999)) {
            nanoseconds,
            multiplier in
            let configuration = RetryConfiguration(
                attempts: 0,
                initialDelay: .nanoseconds(nanoseconds),
                maxDelay: .nanoseconds(nanoseconds - 1),
                backoffMultiplier: multiplier
            )
            let problems = configuration.validationProblems
            #expect(problems.contains { $0.contains("attempts") })
            #expect(problems.contains { $0.contains("backoffMultiplier") })
            #expect(problems.contains { $0.contains("maxDelay") })
        }
        #expect(!RetryConfiguration(backoffMultiplier: .nan).validationProblems.isEmpty)
    }

    @Test func theRetryBudgetNeverTrapsAndBoundsRetriesByItsAllowance() async {
        let ratios = zip(Gen.int(in: 0...3), Gen.double(in: 0...100)).map { pick, uniform -> Double in
            switch pick {
            case 0: 0
            case 1: .infinity
            case 2: .greatestFiniteMagnitude
            default: uniform
            }
        }
        let floors = zip(Gen.int(in: 0...2), Gen.int(in: 0...1_000)).map { pick, uniform -> Int in
            pick == 0 ? 0 : pick == 1 ? Int.max : uniform
        }
        await propertyCheck(count: Self.cases, input: ratios, floors, Self.anyNanoseconds, Gen.int(in: 0...200)) {
            ratio,
            floor,
            windowNanoseconds,
            requests in
            let window = Duration.nanoseconds(max(1, windowNanoseconds))
            let configuration = RetryBudget.Configuration(ratio: ratio, minRetriesPerSecond: floor, window: window)
            #expect(configuration.validationProblems.isEmpty)
            var budget = RetryBudget(configuration)
            let now = MonotonicTime(nanoseconds: 1_000_000_000)
            for _ in 0..<requests { budget.recordRequest(at: now) }
            var granted = 0
            for _ in 0..<300 where budget.tryAcquireRetry(at: now) { granted += 1 }
            let allowance = Double(floor) * window.seconds + (requests == 0 ? 0 : ratio * Double(requests))
            if ratio == .infinity {
                #expect(granted == 300, "an infinite ratio is unlimited, also with no requests counted")
            } else {
                #expect(Double(granted) <= max(0, allowance.rounded(.up)), "never more than the allowance")
                #expect(granted == min(300, Int(min(allowance.rounded(.up), 300))), "and exactly the allowance")
            }
        }
        #expect(!RetryBudget.Configuration(ratio: -1).validationProblems.isEmpty)
        #expect(!RetryBudget.Configuration(ratio: .nan).validationProblems.isEmpty)
        #expect(!RetryBudget.Configuration(minRetriesPerSecond: -1).validationProblems.isEmpty)
        #expect(!RetryBudget.Configuration(window: .zero).validationProblems.isEmpty)
    }

    /// A configuration validation accepts opens the breaker under enough consecutive failures; one
    /// that could never open is rejected.
    @Test func everyAcceptedBreakerConfigurationCanOpen() async {
        let windows = zip(Gen.int(in: 0...2), Gen.int(in: -2...60)).map { pick, size -> SlidingWindowKind? in
            switch pick {
            case 0: nil
            case 1: .count(size)
            default: .time(.seconds(max(0, size)))
            }
        }
        let rates = zip(Gen.bool, Gen.double(in: -1...101)).map { useRate, rate -> Double? in useRate ? rate : nil }
        await propertyCheck(
            count: Self.cases,
            input: Gen.int(in: -1...50),
            Gen.int(in: -1...50),
            windows,
            rates,
            Gen.int(in: 0...3)
        ) { failureThreshold, minimumCalls, window, rate, timeoutPick in
            let timeout: Duration = [.zero, .milliseconds(1), .seconds(60), .seconds(Int64.max)][timeoutPick]
            let configuration = CircuitBreakerConfiguration(
                failureThreshold: failureThreshold,
                timeout: timeout,
                failureRateThreshold: rate,
                minimumNumberOfCalls: minimumCalls,
                slidingWindow: window
            )
            guard configuration.validationProblems.isEmpty else { return }
            var machine = CircuitBreakerStateMachine(configuration: configuration)
            let now = MonotonicTime(nanoseconds: 1_000_000_000)
            for _ in 0..<120 where machine.state == .closed {
                guard case (.permitted(let permit), _) = machine.acquire(at: now) else { break }
                _ = machine.record(permit, outcome: .failure, duration: .milliseconds(1), at: now)
            }
            #expect(machine.state == .open, "accepted, so it must open: \(configuration)")
            // However long the open period, it ends in the future, never wrapped into the past.
            let later = timeout > .seconds(1) ? now + .seconds(1) : now
            if case (.rejected(let state, _), _) = machine.acquire(at: later) {
                #expect(state == .open)
            } else {
                Issue.record("an open breaker admitted a call within its timeout (\(timeout))")
            }
        }
        let unreachable = CircuitBreakerConfiguration(failureThreshold: 10, slidingWindow: .count(5))
        #expect(unreachable.validationProblems.contains { $0.contains("can never be reached") })
        let tooFewCalls = CircuitBreakerConfiguration(
            failureRateThreshold: 50,
            minimumNumberOfCalls: 20,
            slidingWindow: .count(10)
        )
        #expect(tooFewCalls.validationProblems.contains { $0.contains("minimumNumberOfCalls") })
        #expect(!CircuitBreakerConfiguration(slidingWindow: .count(.max)).validationProblems.isEmpty)
    }

    @Test func aDatabaseRefusesAConfigurationThatCouldNeverOpenNamingTheProblem() {
        let configuration = ReliabilityConfiguration(
            circuitBreaker: .init(failureThreshold: 10, slidingWindow: .count(5)),
            retryBudget: .init(ratio: -1)
        )
        do {
            _ = try ReliableDatabase(backend: ScriptedBackend(), configuration: configuration, clock: ManualClock())
            Issue.record("accepted a breaker that can never open")
        } catch {
            #expect(error.problems.count == 2, "every problem at once: \(error)")
            #expect(
                error.description.contains("failureThreshold 10 can never be reached in a sliding window of 5 calls")
            )
            #expect(error.description.contains("retryBudget.ratio"))
        }
    }

    @Test func monotonicTimeSaturatesInsteadOfWrapping() async {
        await propertyCheck(count: Self.cases, input: Self.anyNanoseconds, Self.anyNanoseconds) { start, span in
            let instant = MonotonicTime(nanoseconds: start)
            #expect(instant + .nanoseconds(span) >= instant)
            #expect(instant - .nanoseconds(span) <= instant)
        }
    }
}
