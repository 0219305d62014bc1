import Foundation

/// How failed attempts are retried: exponential backoff with full jitter, capped.
///
/// Full jitter (a uniformly random delay between zero and the exponential bound) spreads the
/// retries of many callers that failed together, so a recovering database is not hit by a
/// synchronized wave.
public struct RetryConfiguration: Sendable, Equatable {
    /// Total attempts including the first one; 1 disables retries.
    public var attempts: Int
    /// The bound of the first backoff delay.
    public var initialDelay: Duration
    /// The largest bound any backoff delay may have.
    public var maxDelay: Duration
    /// The growth of the bound from one retry to the next.
    public var backoffMultiplier: Double

    public init(
        attempts: Int = 3,
        initialDelay: Duration = .milliseconds(100),
        maxDelay: Duration = .seconds(5),
        backoffMultiplier: Double = 2
    ) {
        self.attempts = attempts
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
        self.backoffMultiplier = backoffMultiplier
    }

    /// Retries switched off.
    public static let none = RetryConfiguration(attempts: 1)

    /// The upper bound of the delay before retry number `retry` (1 for the first retry):
    /// `min(maxDelay, initialDelay × backoffMultiplier^(retry − 1))`.
    ///
    /// Total over its whole domain: zero delays, a multiplier of infinity, a `maxDelay` at the top
    /// of `Duration`'s range and any retry number give a bound in `0...maxDelay`, never a trap.
    public func delayBound(forRetry retry: Int) -> Duration {
        let initial = max(0, initialDelay.nanosecondsClamped)
        let cap = max(0, maxDelay.nanosecondsClamped)
        guard initial > 0, cap > 0 else { return .zero }
        let exponent = Double(max(0, retry - 1))
        // 0 × ∞ cannot happen (initial > 0); an infinite or NaN product means "past the cap".
        let bound = Double(initial) * pow(backoffMultiplier, exponent)
        guard bound.isFinite, bound < Double(cap) else { return .nanoseconds(cap) }
        return .nanoseconds(min(cap, Int64(bound)))
    }

    /// A delay drawn uniformly from `0...delayBound(forRetry:)` (full jitter).
    public func delay(forRetry retry: Int, using generator: inout some RandomNumberGenerator) -> Duration {
        let bound = delayBound(forRetry: retry).nanosecondsClamped
        guard bound > 0 else { return .zero }
        return .nanoseconds(Int64.random(in: 0...bound, using: &generator))
    }

    /// The configuration problems, empty when valid.
    public var validationProblems: [String] {
        var problems: [String] = []
        if attempts < 1 { problems.append("retry.attempts must be at least 1, got \(attempts)") }
        if initialDelay < .zero { problems.append("retry.initialDelay must not be negative") }
        if maxDelay < initialDelay { problems.append("retry.maxDelay must be at least retry.initialDelay") }
        if !(backoffMultiplier >= 1) { problems.append("retry.backoffMultiplier must be at least 1") }
        return problems
    }
}

/// A small, fast, seedable generator (SplitMix64) so jitter is reproducible in tests.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
