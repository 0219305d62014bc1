import ReliableDB
import ReliableDBTesting
import Synchronization

/// Counts calls across concurrent tasks.
final class Counter: Sendable {
    private let value = Atomic<Int>(0)

    @discardableResult
    func increment() -> Int { value.add(1, ordering: .relaxed).newValue }

    var count: Int { value.load(ordering: .relaxed) }
}

/// A scripted sequence of outcomes: each call takes the next one; the last repeats.
final class Script: Sendable {
    private let outcomes: Mutex<[Result<Int, ClassifiedError>]>
    let calls = Counter()

    init(_ outcomes: [Result<Int, ClassifiedError>]) {
        self.outcomes = Mutex(outcomes)
    }

    func next() throws -> Int {
        calls.increment()
        let outcome = outcomes.withLock { outcomes in
            outcomes.count > 1 ? outcomes.removeFirst() : outcomes[0]
        }
        return try outcome.get()
    }
}

func makeDatabase(
    clock: ManualClock,
    breaker: CircuitBreakerConfiguration = .init(),
    retry: RetryConfiguration = .init(),
    timeouts: TimeoutConfiguration = .init(),
    budget: RetryBudget.Configuration = .unlimited,
    circuitBreakerEnabled: Bool = true
) -> ReliableDatabase<ScriptedBackend> {
    // The tests' configurations are valid; an invalid one is a bug in the test.
    try! ReliableDatabase(
        backend: ScriptedBackend(),
        configuration: ReliabilityConfiguration(
            circuitBreakerEnabled: circuitBreakerEnabled,
            circuitBreaker: breaker,
            retry: retry,
            retryBudget: budget,
            timeouts: timeouts
        ),
        clock: clock,
        jitterSeed: 42
    )
}

/// Runs `work` in a task and keeps advancing `clock` whenever something sleeps on it, until the
/// work finishes. Lets tests run retry loops with backoff without real time passing.
func driving<T: Sendable>(
    _ clock: ManualClock,
    step: Duration = .seconds(1),
    _ work: @escaping @Sendable () async throws -> T
) async throws -> T {
    let task = Task { try await work() }
    let driver = Task {
        while !Task.isCancelled {
            if await clock.waitForSleepers(count: 1) {
                clock.advance(by: step)
            }
        }
    }
    defer { driver.cancel() }
    return try await task.value
}

/// Tracks how many tasks are inside a region at once, and the most there ever were.
final class Gauge: Sendable {
    private let state = Mutex<(current: Int, peak: Int)>((0, 0))

    func enter() {
        state.withLock {
            $0.current += 1
            $0.peak = max($0.peak, $0.current)
        }
    }

    func leave() {
        state.withLock { $0.current -= 1 }
    }

    var peak: Int { state.withLock { $0.peak } }
    var current: Int { state.withLock { $0.current } }
}

/// A one-way switch tasks can poll.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)

    func set() { value.store(true, ordering: .releasing) }

    var isSet: Bool { value.load(ordering: .acquiring) }
}
