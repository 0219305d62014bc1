import Synchronization

/// While a breaker is open, asks the server whether it answers again, so the breaker closes when
/// the database is back rather than when its timeout has run out (Sources/ReliableDB/Documentation.docc/Breaker.md).
///
/// The first probe goes out about 100 ms after the breaker opened, the next ones twice as late
/// each time, jittered by ±20%, up to about a second apart: an open breaker costs at most about
/// one connection attempt per second per instance. A probe that completes a round trip on a fresh
/// connection turns the breaker HALF_OPEN (``CircuitBreaker/serverAnswered(by:)``). The loop ends
/// when the breaker is no longer OPEN, whoever moved it. While a server answers in another role
/// than the one needed (a standby not promoted yet), probes go every 200 ms instead. The backoff
/// carries over when a trial
/// fails and the breaker opens again (a server that answers `SELECT 1` but fails the work, as
/// under timeouts): it starts from 100 ms again only once the breaker has closed, so such a
/// breaker cycles at most about once a second.
final class BreakerProber: Sendable {
    /// When the first probe goes out after the breaker opened.
    static let firstDelay = Duration.milliseconds(100)
    /// The longest time between two probes.
    static let maxDelay = Duration.seconds(1)
    /// Between probes while a server answers in another role than the one needed (a standby of
    /// a failover that is not promoted yet): a connection to a live server is cheap, and the
    /// promotion is what writes wait for, so they go on as soon as it is done.
    static let promotionDelay = Duration.milliseconds(200)

    /// What one probe found.
    enum Outcome: Sendable {
        /// A round trip completed on a fresh connection.
        case answered
        case failed
        /// No server of the needed role, but one answered in another (a failover in progress).
        case awaitingPromotion
    }

    private let breaker: CircuitBreaker
    private let clock: any ReliabilityClock
    /// One round trip on a fresh connection, bounded by its own deadline.
    private let probe: @Sendable () async -> Outcome
    private let state: Mutex<State>

    private struct State {
        var task: Task<Void, Never>?
        var stopped = false
        var jitter: SplitMix64
        var probes = 0
        /// The bound of the next delay; back to ``BreakerProber/firstDelay`` when the breaker closes.
        var bound = BreakerProber.firstDelay
    }

    init(
        breaker: CircuitBreaker,
        clock: any ReliabilityClock,
        jitterSeed: UInt64,
        probe: @escaping @Sendable () async -> Outcome
    ) {
        self.breaker = breaker
        self.clock = clock
        self.probe = probe
        state = Mutex(State(jitter: SplitMix64(seed: jitterSeed)))
    }

    /// Probes sent so far, for tests and the breaker's figures.
    var probes: Int { state.withLock { $0.probes } }

    /// Starts the probe loop unless one runs.
    func start() {
        state.withLock { current in
            guard !current.stopped, current.task == nil else { return }
            current.task = Task { [self] in
                await loop()
                state.withLock { $0.task = nil }
                // The breaker may have opened again between the loop's last look and now.
                if breaker.awaitsEvidence { start() }
            }
        }
    }

    /// Follows the breaker: probing starts when it opens (not when an operator forced it open:
    /// that open waits out its timeout), and the backoff starts over when it closes.
    func observe(_ transition: CircuitTransition) {
        switch transition.to {
        case .open where transition.reason != .forced:
            start()
        case .closed:
            state.withLock { $0.bound = Self.firstDelay }
        default:
            break
        }
    }

    /// Ends the loop for good (the database is shutting down).
    func stop() {
        let task = state.withLock { state in
            state.stopped = true
            defer { state.task = nil }
            return state.task
        }
        task?.cancel()
    }

    private func loop() async {
        // Intervals run from one probe's start to the next, so a probe that hangs until its
        // deadline (a partition) does not push the next one later.
        var previousStart = clock.now
        while breaker.awaitsEvidence, !Task.isCancelled {
            let delay = state.withLock { state in
                defer { state.bound = min(Self.maxDelay, state.bound * 2) }
                return state.bound * Double.random(in: 0.8...1.2, using: &state.jitter)
            }
            do {
                try await clock.sleep(until: previousStart + delay)
            } catch {
                return
            }
            guard breaker.awaitsEvidence else { return }
            state.withLock { $0.probes += 1 }
            previousStart = clock.now
            let outcome = await probe()
            // Stopped while the probe ran (shutdown): its answer is for nobody.
            guard !Task.isCancelled else { return }
            switch outcome {
            case .answered:
                // The breaker reads where calls go now: an answer from a new server starts it over.
                breaker.serverAnswered()
                return
            case .awaitingPromotion:
                state.withLock { $0.bound = Self.promotionDelay }
            case .failed:
                break
            }
        }
    }
}
