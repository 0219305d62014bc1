import ReliableDB

@testable import ReliableDBPool

/// One randomized run: a ``PoolStateMachine``, a simulated clock, and a model of the I/O shell built
/// only from the actions the machine returned. After every event the model and the machine are
/// checked against each other and against the invariants the machine promises.
///
/// Violations are collected as strings (cheaper than one `#expect` per check across 400,000 events)
/// and carry the seed, so a failure replays exactly.
struct PoolSimulation {
    enum Event: Equatable {
        /// A request; `trial` when it stands for a circuit breaker's trial (``PoolStateMachine/lease(request:timeoutAt:deadline:now:preferredLoop:bypassingBackoff:)``).
        case lease(Int, trial: Bool = false)
        case prewarm(Int)
        case cancel(Int)
        case release(Int, discard: Bool)
        case connected(Int)
        case connectFailed(Int)
        case closed(Int)
        case keepAliveDone(Int, alive: Bool)
        case tick
        case serverReachable
        case evictAll(refused: Int)
        case resize(Int)
        case shutdown
    }

    /// How often interesting things happened, summed over runs, so a test can show the random runs
    /// reach every path.
    struct Coverage {
        var grants = 0
        var queuedGrants = 0
        var timeouts = 0
        var deadlines = 0
        var cancels = 0
        var failFast = 0
        var shutdowns = 0
        var keepAlives = 0
        var closes: [PoolCloseReason: Int] = [:]
        var maxWaiting = 0
        var fullPool = 0
        /// Checks made while a minimum idle was being opened.
        var warmUps = 0
        /// Maximums lowered below the connections open.
        var shrinks = 0
    }

    let seed: UInt64
    var rng: SplitMix64
    var machine: PoolStateMachine
    var now = t0
    var step = 0
    /// A reference, so that `expect` need not be `mutating` and its message may read the model.
    final class ViolationLog {
        var messages: [String] = []
    }

    let log = ViolationLog()
    var violations: [String] { log.messages }
    var coverage = Coverage()

    // The shell's view, built from actions only.
    var pendingConnects: Set<Int> = []
    var pendingCloses: Set<Int> = []
    var pendingKeepAlives: Set<Int> = []
    var holders: [Int: Int] = [:]
    /// The two ends of one request's wait, as the shell passed them.
    struct Wait {
        var timeoutAt: PoolInstant?
        var deadline: PoolInstant?
        var enqueuedAt: PoolInstant

        /// When the wait ends: the earlier of the two.
        var end: PoolInstant? { earliest(timeoutAt, deadline) }

        /// What ends it: the operation's deadline when it is not later than the pool timeout.
        var endReason: PoolFailureReason {
            guard let deadline else { return .timedOut }
            return timeoutAt.map { deadline <= $0 } ?? true ? .deadlineReached : .timedOut
        }
    }

    var waiting: [Int: Wait] = [:]
    /// Failures seen, by reason, to check the machine counts each failed request exactly once.
    var failuresSeen: [PoolFailureReason: Int] = [:]
    /// The queue waits of the grants seen, summed and largest, in nanoseconds.
    var waitedTotal: Int64 = 0
    var waitedMax: Int64 = 0
    var answered: Set<Int> = []
    var requestsMade = 0
    var knownConnections: Set<Int> = []
    var shutdownCalled = false
    var completions = 0
    var wakeAt: PoolInstant?
    var grants = 0
    var leaseWait = Wait(enqueuedAt: t0)
    /// Connections that were open at an `evictAll`: none may be granted again.
    var evicted: Set<Int> = []
    /// The model's own `evictedBelow`: a refusal by a connection older than the last eviction
    /// retires nothing.
    var modelEvictedBelow = 0
    /// The most connections that may exist: the maximum, or more right after it was lowered,
    /// falling to it as the ones beyond leave (never rising but by a resize).
    var allowedTotal: Int?

    init(seed: UInt64) {
        self.seed = seed
        rng = SplitMix64(seed: seed)
        machine = PoolStateMachine(configuration: Self.randomConfiguration(&rng))
    }

    static func randomConfiguration(_ rng: inout SplitMix64) -> PoolConfiguration {
        func milliseconds(_ range: ClosedRange<Int>) -> Duration { .milliseconds(Int.random(in: range, using: &rng)) }
        let idle: Duration? = [nil, .zero, milliseconds(1...2_000), milliseconds(1...2_000)].randomElement(using: &rng)!
        let keepAlive: Duration? = [nil, milliseconds(1...800)].randomElement(using: &rng)!
        let lifetime: Duration? = [nil, .zero, milliseconds(1...5_000), milliseconds(100...3_000)].randomElement(
            using: &rng
        )!
        let initial: Duration = [.zero, .milliseconds(100), milliseconds(1...50)].randomElement(using: &rng)!
        return PoolConfiguration(
            maximumConnections: [1, 1, 2, 3, 4, 8, 64].randomElement(using: &rng)!,
            minimumIdle: [0, 0, 0, 1, 2, 5, 100].randomElement(using: &rng)!,
            idleTimeout: idle,
            keepAliveAfter: keepAlive,
            keepAliveTimeout: milliseconds(1...300),
            maxLifetime: lifetime,
            lifetimeJitterFraction: [0, 0.1, 0.5, 1].randomElement(using: &rng)!,
            connectBackoffInitial: initial,
            connectBackoffMaximum: milliseconds(0...2_000)
        )
    }

    // MARK: Driving

    mutating func run(events: Int) {
        for _ in 0..<events where violations.isEmpty { randomStep() }
        if violations.isEmpty { drain() }
    }

    private mutating func chance(_ probability: Double) -> Bool {
        Double.random(in: 0..<1, using: &rng) < probability
    }

    private mutating func randomDeadline() -> PoolInstant? {
        switch Int.random(in: 0..<20, using: &rng) {
        case 0, 1: nil
        case 2: now + .milliseconds(-Int.random(in: 0...1_000, using: &rng))
        case 3: now
        case 4: PoolInstant(nanoseconds: .max)
        default: now + .milliseconds(Int.random(in: 1...600, using: &rng))
        }
    }

    mutating func randomStep() {
        step += 1
        if chance(0.35) {
            let jump = chance(0.03) ? Int.random(in: 0...5_000, using: &rng) : Int.random(in: 0...40, using: &rng)
            now = now + .milliseconds(jump)
        }
        let roll = Int.random(in: 0..<100, using: &rng)
        switch roll {
        case 0..<25:
            lease()
        case 25..<35:
            // Follow the shell's timer, but not to the end of the timeline (a `.max` deadline means
            // "never"; at `.max` itself saturated timers cannot lie after now).
            if let wakeAt, wakeAt > now, wakeAt - now < .seconds(3_600), chance(0.7) { now = wakeAt }
            perform(.tick) { $0.tick(now: $1) }
        case 35..<50:
            if let connection = holders.keys.sorted().randomElement(using: &rng) {
                let discard = chance(0.1)
                perform(.release(connection, discard: discard)) {
                    $0.release(connection: connection, discard: discard, now: $1)
                }
            } else {
                lease()
            }
        case 50..<63:
            completeConnect()
        case 63..<72:
            if let connection = pendingCloses.sorted().randomElement(using: &rng) {
                perform(.closed(connection)) { $0.closed(connection: connection, now: $1) }
            }
        case 72..<78:
            if let connection = pendingKeepAlives.sorted().randomElement(using: &rng) {
                let alive = chance(0.8)
                perform(.keepAliveDone(connection, alive: alive)) {
                    $0.keepAliveDone(connection: connection, alive: alive, now: $1)
                }
            }
        case 78..<82:
            let open = machine.connectionStates.filter {
                switch $0.value {
                case .idle, .leased, .keepAlive: true
                case .connecting, .closing: false
                }
            }
            if let connection = open.keys.sorted().randomElement(using: &rng) {
                perform(.closed(connection)) { $0.closed(connection: connection, now: $1) }
            }
        case 82..<89:
            let request =
                chance(0.8)
                ? waiting.keys.sorted().randomElement(using: &rng) : Int.random(in: 0...requestsMade, using: &rng)
            if let request {
                perform(.cancel(request), hasNow: false) { machine, _ in machine.cancel(request: request) }
            }
        case 89..<98:
            staleEvent()
        default:
            if !shutdownCalled && chance(0.3) {
                shutdown()
            } else if chance(0.1) {
                let count = Int.random(in: 0...3, using: &rng)
                perform(.prewarm(count)) { $0.prewarm(count: count, now: $1) }
            } else if chance(0.25) {
                let maximum = [1, 2, 3, 4, 8, 64].randomElement(using: &rng)!
                perform(.resize(maximum)) { $0.resize(maximumConnections: maximum, now: $1) }
            } else if chance(0.5) {
                perform(.serverReachable) { $0.serverReachable(now: $1) }
            } else if chance(0.4) {
                let refused = Int.random(in: 0...max(0, machine.nextConnectionID - 1), using: &rng)
                if refused >= modelEvictedBelow {
                    modelEvictedBelow = machine.nextConnectionID
                    for (id, state) in machine.connectionStates {
                        switch state {
                        case .idle, .leased, .keepAlive: evicted.insert(id)
                        case .connecting, .closing: break
                        }
                    }
                }
                perform(.evictAll(refused: refused)) { $0.evictAll(refused: refused, now: $1) }
            } else {
                perform(.tick) { $0.tick(now: $1) }
            }
        }
    }

    private mutating func lease() {
        let request = requestsMade
        requestsMade += 1
        // Half the requests carry an operation deadline besides the pool timeout, so either may
        // end the wait first (or both at once).
        let timeoutAt = randomDeadline()
        let deadline: PoolInstant? =
            switch Int.random(in: 0..<6, using: &rng) {
            case 0, 1, 2: nil
            case 3: timeoutAt
            default: randomDeadline()
            }
        leaseWait = Wait(timeoutAt: timeoutAt, deadline: deadline, enqueuedAt: now)
        let loop: Int? = chance(0.2) ? nil : Int.random(in: 0...3, using: &rng)
        let trial = chance(0.1)
        perform(.lease(request, trial: trial)) {
            $0.lease(
                request: request,
                timeoutAt: timeoutAt,
                deadline: deadline,
                now: $1,
                preferredLoop: loop,
                bypassingBackoff: trial
            )
        }
    }

    private mutating func completeConnect() {
        guard let connection = pendingConnects.sorted().randomElement(using: &rng) else { return }
        let roll = Int.random(in: 0..<10, using: &rng)
        if roll < 7 {
            let jitter = Double.random(in: 0...1, using: &rng)
            let loop: Int? = chance(0.5) ? nil : Int.random(in: 0...3, using: &rng)
            perform(.connected(connection)) {
                $0.connected(connection: connection, loop: loop, now: $1, lifetimeJitter: jitter)
            }
        } else if roll < 9 {
            perform(.connectFailed(connection)) { $0.connectFailed(connection: connection, now: $1) }
        } else {
            perform(.closed(connection)) { $0.closed(connection: connection, now: $1) }
        }
    }

    /// Reports about connections in the wrong state, or unknown: the machine must ignore them.
    private mutating func staleEvent() {
        let states = machine.connectionStates
        let candidates = Array(states.keys.sorted()) + [knownConnections.count + 5]
        let connection = candidates.randomElement(using: &rng)!
        let state = states[connection]
        switch Int.random(in: 0..<4, using: &rng) {
        case 0:
            guard state.map({ if case .leased = $0 { false } else { true } }) ?? true else { return }
            perform(.release(connection, discard: false)) { $0.release(connection: connection, now: $1) }
        case 1:
            guard state != .connecting else { return }
            perform(.connected(connection)) { $0.connected(connection: connection, now: $1) }
        case 2:
            guard state != .connecting else { return }
            perform(.connectFailed(connection)) { $0.connectFailed(connection: connection, now: $1) }
        default:
            guard !pendingKeepAlives.contains(connection) else { return }
            perform(.keepAliveDone(connection, alive: true)) {
                $0.keepAliveDone(connection: connection, alive: true, now: $1)
            }
        }
    }

    private mutating func shutdown() {
        shutdownCalled = true
        coverage.shutdowns += 1
        perform(.shutdown, hasNow: false) { machine, _ in machine.shutdown() }
    }

    /// Shuts down and answers everything the shell still owes, until the machine is empty.
    mutating func drain() {
        if !shutdownCalled { shutdown() }
        var rounds = 0
        while !machine.isShutDownComplete && violations.isEmpty && rounds < 10_000 {
            rounds += 1
            now = now + .milliseconds(Int.random(in: 0...5, using: &rng))
            if let connection = holders.keys.min() {
                perform(.release(connection, discard: false)) { $0.release(connection: connection, now: $1) }
            } else if pendingConnects.isEmpty == false {
                completeConnect()
            } else if let connection = pendingKeepAlives.min() {
                perform(.keepAliveDone(connection, alive: true)) {
                    $0.keepAliveDone(connection: connection, alive: true, now: $1)
                }
            } else if let connection = pendingCloses.min() {
                perform(.closed(connection)) { $0.closed(connection: connection, now: $1) }
            } else {
                break
            }
        }
        expect(machine.isShutDownComplete, "shutdown never completed")
        expect(completions == 1, "shutdown completed \(completions) times")
        expect(waiting.isEmpty, "requests still waiting after shutdown: \(waiting.keys.sorted())")
        expect(answered.count == requestsMade, "\(requestsMade - answered.count) requests never answered")
        expect(machine.statistics.total == 0, "connections left after shutdown")
    }

    // MARK: Checking

    func expect(_ condition: Bool, _ message: @autoclosure () -> String) {
        guard !condition, log.messages.count < 10 else { return }
        log.messages.append("seed \(seed) step \(step) at \(now): \(message())")
    }

    private mutating func perform(
        _ event: Event,
        hasNow: Bool = true,
        _ body: (inout PoolStateMachine, PoolInstant) -> PoolActions
    ) {
        let before = machine.connectionStates
        let actions = body(&machine, now)
        apply(actions, for: event, before: before, hasNow: hasNow)
        checkInvariants(after: event, hasNow: hasNow)
    }
}
