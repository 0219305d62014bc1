import Foundation
import Synchronization
import Tracing

/// A database client wrapped in the reliability pipeline.
///
/// Every operation goes: options resolved → deadline set → retry loop { breaker permit → backend
/// call bounded by the remaining deadline → outcome classified and recorded } → metrics. The
/// breaker sits inside the retry loop, so a breaker that opens stops further attempts at once, and
/// one deadline bounds every attempt and every backoff sleep. Backend modules add typed `query`
/// and `transaction` methods in extensions; ``execute(_:_:)`` is the shared core.
public final class ReliableDatabase<Backend: DatabaseBackend>: Sendable {
    /// The wrapped backend, for work that must bypass the pipeline.
    public let raw: Backend
    /// The backend as a ``StandbyRouting`` one, when it adopts that capability and can send reads
    /// to a standby; nil otherwise.
    let standbyRouting: (any StandbyRouting)?
    /// The settings in force: those given at construction, with the timeouts, retries and
    /// slow-query threshold of the last ``reconfigure(_:)``.
    public var configuration: ReliabilityConfiguration { live.configuration }
    /// What every operation reads of the configuration, without a lock.
    let live: LivePipelineSettings
    /// `DB_CIRCUIT_BREAKER`: fixed at start.
    let circuitBreakerEnabled: Bool
    /// The environment's configuration this database was built from (`.postgres(configuration:)`,
    /// `.sqlite(configuration:)`), kept so the health monitor and the Vapor and Hummingbird
    /// integrations apply the same interval, thresholds and alert settings without being told
    /// twice; nil for a database built from pipeline settings alone.
    public let environmentConfiguration: ReliableDBConfiguration?
    /// The breaker of the primary: every operation but reads that go to a standby.
    public let circuitBreaker: CircuitBreaker
    /// The breaker of reads that go to a standby (``StandbyRouting/standbyReads``), so that
    /// writes failing while the primary is gone do not stop reads a standby can serve; nil when
    /// the backend has no standby.
    public let standbyCircuitBreaker: CircuitBreaker?
    public let operationMetrics: OperationMetricsRecorder
    /// Event metrics for an exporter; nil records nothing beyond ``operationMetrics``.
    public let instruments: ReliabilityInstruments?
    public let events = EventBroadcaster<PipelineEvent>()
    public let clock: any ReliabilityClock
    /// Fires the deadlines of operations in flight.
    package let deadlines: DeadlineScheduler
    /// The bulkhead in front of the database, when load shedding is on.
    let loadShedder: LoadShedder?
    /// What ``withFallback(_:_:)`` serves when the database fails a read.
    let lastGoodResults = LastGoodResults()

    /// What load shedding is doing now; nil when it is off.
    public var loadShedding: LoadSheddingSnapshot? { loadShedder?.snapshot }
    /// Records a span per operation; nil when no tracer is bootstrapped (then tracing costs one
    /// nil check).
    private let tracer: (any Tracer)?
    private let spanTarget: DatabaseSpanTarget
    private let retryBudget: Mutex<RetryBudget>
    private let jitter: Mutex<SplitMix64>
    /// Asks the server whether it answers while the primary's breaker is open.
    let prober: BreakerProber
    /// The same for the standby's breaker, when there is one.
    let standbyProber: BreakerProber?

    // MARK: - Construction

    /// - Parameters:
    ///   - backend: the database client the pipeline runs operations on.
    ///   - configuration: the breaker, retry, timeout and load-shedding settings.
    ///   - clock: the clock deadlines, backoff and the breaker's windows are measured on.
    ///   - instruments: where event metrics go (see ReliableDBPrometheus); nil for none.
    ///   - jitterSeed: fixes the backoff jitter sequence, for reproducible tests.
    ///   - tracer: where operation spans go; the bootstrapped `InstrumentationSystem.tracer` by
    ///     default, and none when that is the no-op tracer.
    ///   - environmentConfiguration: the environment's configuration `configuration` came from,
    ///     for the monitor and integrations (``environmentConfiguration``).
    /// - Throws: ``ConfigurationError`` naming every problem of `configuration`, including
    ///   combinations that are valid field by field but could never open the breaker.
    public init(
        backend: Backend,
        configuration: ReliabilityConfiguration = .init(),
        clock: any ReliabilityClock = SystemClock(),
        instruments: ReliabilityInstruments? = nil,
        jitterSeed: UInt64? = nil,
        tracer: (any Tracer)? = nil,
        environmentConfiguration: ReliableDBConfiguration? = nil
    ) throws(ConfigurationError) {
        try Self.validate(configuration)
        raw = backend
        let standbyRouting = (backend as? any StandbyRouting).flatMap { $0.standbyReads == .unavailable ? nil : $0 }
        self.standbyRouting = standbyRouting
        self.environmentConfiguration = environmentConfiguration
        let chosen = tracer ?? InstrumentationSystem.tracer
        self.tracer = chosen is NoOpTracer ? nil : chosen
        spanTarget = backend.spanTarget
        live = LivePipelineSettings(configuration)
        circuitBreakerEnabled = configuration.circuitBreakerEnabled
        self.clock = clock
        self.instruments = instruments
        circuitBreaker = CircuitBreaker(
            configuration: configuration.circuitBreaker,
            clock: clock,
            instruments: instruments,
            currentServer: { [backend] in backend.currentServer }
        )
        // Its state is in the snapshot and /api/health; the breaker gauges stay the primary's.
        standbyCircuitBreaker =
            standbyRouting == nil ? nil : CircuitBreaker(configuration: configuration.circuitBreaker, clock: clock)
        if let instruments { backend.attach(instruments) }
        operationMetrics = OperationMetricsRecorder(
            slowQueryThreshold: configuration.slowQueryThreshold,
            maxOperationNames: configuration.maxOperationNames
        )
        retryBudget = Mutex(RetryBudget(configuration.retryBudget))
        jitter = Mutex(SplitMix64(seed: jitterSeed ?? UInt64.random(in: .min ... .max)))
        let deadlines = DeadlineScheduler(clock: clock)
        self.deadlines = deadlines
        loadShedder =
            configuration.loadShedding.enabled ? LoadShedder(configuration.loadShedding, clock: clock) : nil
        let probeTimeout = configuration.timeouts.timeout(for: .healthCheck) ?? .seconds(5)
        /// One probe bounded by the health-check timeout, and what it found.
        @Sendable func probing(
            _ body: @escaping @Sendable (AttemptContext) async throws -> Void
        ) -> @Sendable () async -> BreakerProber.Outcome {
            { [clock, backend] in
                let attempt = AttemptContext(
                    scheduler: deadlines,
                    attempt: 1,
                    deadline: clock.now + probeTimeout,
                    isBreakerProbe: true
                )
                do {
                    try await body(attempt)
                    return .answered
                } catch {
                    return backend.awaitsPromotion(error) ? .awaitingPromotion : .failed
                }
            }
        }
        let seed = jitterSeed ?? UInt64.random(in: .min ... .max)
        prober = BreakerProber(
            breaker: circuitBreaker,
            clock: clock,
            jitterSeed: seed &+ 1,
            probe: probing { [backend] in try await backend.probeServer(within: $0) }
        )
        circuitBreaker.onTransition { [weak prober] in prober?.observe($0) }
        if let standbyCircuitBreaker, let standbyRouting {
            let standbyProber = BreakerProber(
                breaker: standbyCircuitBreaker,
                clock: clock,
                jitterSeed: seed &+ 2,
                probe: probing { try await standbyRouting.probeStandby(within: $0) }
            )
            standbyCircuitBreaker.onTransition { [weak standbyProber] in standbyProber?.observe($0) }
            self.standbyProber = standbyProber
        } else {
            standbyProber = nil
        }
    }

    deinit {
        prober.stop()
        standbyProber?.stop()
        deadlines.stop()
    }

    // MARK: - Running an operation

    /// Runs `operation` through the pipeline.
    ///
    /// `operation` may run more than once (see ``OperationOptions/idempotent``); each run is one
    /// attempt and must do the whole unit of work, a transaction from its start. It runs inline in
    /// the caller's task; to be stoppable at the deadline it attaches an interrupt through the
    /// ``AttemptContext`` (the backends' typed methods do this), or wraps task-cancellable work
    /// in ``AttemptContext/cancellingAtDeadline(_:)``.
    public func execute<R>(
        _ options: OperationOptions,
        _ operation: (AttemptContext) async throws -> R
    ) async throws -> R {
        // Health probes are never shed: the monitor must see the database under load too.
        if let loadShedder, options.kind != .healthCheck {
            return try await shedding(loadShedder, options, operation)
        }
        guard let tracer, options.kind != .healthCheck else {
            return try await run(options, OperationSpan(span: nil), operation)
        }
        return try await traced(tracer, options, operation)
    }

    private func traced<R>(
        _ tracer: any Tracer,
        _ options: OperationOptions,
        _ operation: (AttemptContext) async throws -> R
    ) async throws -> R {
        // A child of the caller's span (a request's), through the task-local service context.
        let span = tracer.startSpan(
            options.name,
            context: ServiceContext.current ?? .topLevel,
            ofKind: .client
        )
        span.attributes = OperationSpan.attributes(for: options, target: spanTarget)
        defer { span.end() }
        // A read of a read-your-writes session says where its position sent it.
        guard options.readOnly, ConsistencySession.current?.position != nil else {
            return try await ServiceContext.withValue(span.context) {
                try await run(options, OperationSpan(span: span), operation)
            }
        }
        let note = ConsistencyRouteNote()
        defer {
            span.attributes["reliabledb.consistency.routed"] = true
            if let route = note.noted { span.attributes["reliabledb.consistency.route"] = route }
        }
        return try await ConsistencyRouteNote.$current.withValue(note) {
            try await ServiceContext.withValue(span.context) {
                try await run(options, OperationSpan(span: span), operation)
            }
        }
    }

    /// An operation under load shedding: a slot first (or ``DatabaseOverloadedError`` at once),
    /// the operation's latency and outcome fed back to the adaptive limit.
    private func shedding<R>(
        _ shedder: LoadShedder,
        _ options: OperationOptions,
        _ operation: (AttemptContext) async throws -> R
    ) async throws -> R {
        let permit: LoadShedder.Permit
        do {
            permit = try await shedder.acquire(options.name)
        } catch let error as DatabaseOverloadedError {
            operationMetrics.operationStarted()
            finish(options, duration: error.waited, outcome: .shed)
            throw error
        }
        let start = clock.now
        do {
            let result: R
            if let tracer {
                result = try await traced(tracer, options, operation)
            } else {
                result = try await run(options, OperationSpan(span: nil), operation)
            }
            shedder.release(permit, latency: clock.now - start, dropped: false)
            return result
        } catch {
            let dropped = error is DatabaseTimeoutError || classify(error).errorClass == .overload
            shedder.release(permit, latency: clock.now - start, dropped: dropped)
            throw error
        }
    }

    /// The pipeline itself; `trace` records its events on the operation's span, if any.
    @inline(__always)
    private func run<R>(
        _ options: OperationOptions,
        _ trace: OperationSpan,
        _ operation: (AttemptContext) async throws -> R
    ) async throws -> R {
        let start = clock.now
        operationMetrics.operationStarted()
        let timeout = live.timeout(for: options)
        let deadline = timeout.map { start + $0 }
        let useBreaker = options.useCircuitBreaker && circuitBreakerEnabled
        let circuitBreaker = breaker(for: options)
        let maxAttempts = options.retries ? live.retryAttempts : 1
        if maxAttempts > 1 {
            retryBudget.withLock { $0.recordRequest(at: start) }
        }

        var attempt = 0
        var attemptStart = start
        /// Whether an attempt of this operation lost its connection (ErrorClassification.connectionScoped):
        /// the first such retry goes at once, later ones after the usual backoff.
        var lostConnectionBefore = false
        while true {
            attempt += 1
            var permit: CircuitBreakerPermit?
            if useBreaker {
                switch circuitBreaker.acquire(at: attemptStart) {
                case .permitted(let granted):
                    permit = granted
                case .rejected(let state, let retryAfter):
                    trace.rejected(state: state)
                    finish(options, duration: clock.now - start, outcome: .rejected)
                    throw DatabaseCircuitBreakerError(
                        operation: options.name,
                        state: state,
                        retryAfter: retryAfter,
                        nextAttempt: retryAfter.map { Date().addingTimeInterval($0.seconds) }
                    )
                }
            }

            do {
                let context = AttemptContext(
                    scheduler: deadline == nil ? nil : deadlines,
                    attempt: attempt,
                    deadline: deadline,
                    isBreakerProbe: permit?.isProbe ?? false
                )
                let value = try await operation(context)
                let end = clock.now
                if let permit {
                    circuitBreaker.record(permit, outcome: .success, duration: end - attemptStart, at: end)
                }
                finish(options, duration: end - start, outcome: .success)
                return value
            } catch {
                let end = clock.now
                let expired = deadline.map { end >= $0 } ?? false
                let classification = expired ? ErrorClassification(.timeout) : classify(error)
                let errorClass = classification.errorClass
                // A lost connection says nothing about the server: the breaker counts what a fresh
                // connection finds, on the retry (Sources/ReliableDB/Documentation.docc/Breaker.md).
                let lostConnection = classification.connectionScoped && errorClass == .connection
                if let permit {
                    let counts = errorClass.countsAgainstBreaker && !lostConnection
                    circuitBreaker.record(
                        permit,
                        outcome: counts ? .failure : .ignored,
                        duration: end - attemptStart,
                        at: end
                    )
                }
                if errorClass == .timeout, let timeout {
                    trace.failed(errorType: errorClass.rawValue, statusCode: nil)
                    finish(options, duration: end - start, outcome: .failure(.timeout))
                    events.emit(.timedOut(operation: options.name, elapsed: end - start))
                    throw DatabaseTimeoutError(
                        operation: options.name,
                        kind: options.kind,
                        timeout: timeout,
                        elapsed: end - start,
                        commitOutcomeUnknown: error is CommitOutcomeUnknownError
                    )
                }

                let verdict = retryVerdict(
                    for: classification,
                    options: options,
                    attempt: attempt,
                    maxAttempts: maxAttempts,
                    now: end,
                    deadline: deadline,
                    // This failure may just have opened it: then the next attempt would only be rejected.
                    breakerOpen: permit != nil && circuitBreaker.state == .open,
                    // The first lost connection is retried at once on another, as a pool evicts it.
                    immediately: lostConnection && !lostConnectionBefore
                )
                if lostConnection { lostConnectionBefore = true }
                guard case .retry(let delay) = verdict else {
                    if trace.span != nil {
                        trace.failed(errorType: errorClass.rawValue, statusCode: raw.statusCode(of: error))
                    }
                    finish(options, duration: end - start, outcome: .failure(errorClass))
                    guard case .stop(let reason) = verdict, attempt > 1 || reason == .budgetExhausted else {
                        throw error
                    }
                    throw DatabaseRetryError(
                        operation: options.name,
                        attempts: attempt,
                        reason: reason,
                        lastError: error,
                        lastErrorClass: errorClass,
                        lastErrorDescription: raw.describe(error)
                    )
                }
                trace.retryScheduled(attempt: attempt, delay: delay, errorClass: errorClass)
                operationMetrics.retryScheduled(options.name)
                instruments?.recordRetry()
                events.emit(
                    .retryScheduled(operation: options.name, attempt: attempt, delay: delay, errorClass: errorClass)
                )
                do {
                    if delay > .zero { try await clock.sleep(until: end + delay) }
                } catch {
                    finish(options, duration: clock.now - start, outcome: .failure(.cancelled))
                    throw error
                }
                attemptStart = clock.now
            }
        }
    }

    // MARK: - Live settings

    /// The problems of `configuration`, as construction reports them.
    static func validate(_ configuration: ReliabilityConfiguration) throws(ConfigurationError) {
        let problems = configuration.validationProblems
        guard problems.isEmpty else {
            throw ConfigurationError(
                problems: problems.map { .init(variable: "ReliabilityConfiguration", value: "", expected: $0) }
            )
        }
    }

    /// Puts new settings in force without a restart (Sources/ReliableDB/Documentation.docc/SettingsWithoutARestart.md):
    /// each kind's timeout, the retries and the slow-query threshold for operations that start
    /// from now on, and the breakers' thresholds and open timeout (their state and counts stay).
    /// The rest of `configuration` (breaker and timeouts on or off, load shedding, the retry
    /// budget) needs a restart and is ignored.
    ///
    /// - Throws: ``ConfigurationError`` with the problems construction would report; then
    ///   nothing changes.
    public func reconfigure(_ configuration: ReliabilityConfiguration) throws(ConfigurationError) {
        try Self.validate(configuration)
        live.store(configuration)
        circuitBreaker.reconfigure(configuration.circuitBreaker)
        standbyCircuitBreaker?.reconfigure(configuration.circuitBreaker)
    }

    // MARK: - Breaker routing and metrics

    /// The standby's breaker for a read the backend sends to a standby, else the primary's.
    @inline(__always)
    private func breaker(for options: OperationOptions) -> CircuitBreaker {
        guard options.readOnly, let standbyCircuitBreaker else { return circuitBreaker }
        switch ReadScope.current?.route {
        case .standby?: return standbyCircuitBreaker
        case .primary?: return circuitBreaker
        case .usual?, nil: return standbyRouting?.readsGoToStandby == true ? standbyCircuitBreaker : circuitBreaker
        }
    }

    /// Records the operation's end. Health probes are left out, so an idle service's query
    /// statistics are not made of its own health checks.
    private func finish(_ options: OperationOptions, duration: Duration, outcome: OperationMetricsRecorder.Outcome) {
        guard options.kind != .healthCheck else {
            operationMetrics.operationAbandoned()
            return
        }
        operationMetrics.operationFinished(options.name, duration: duration, outcome: outcome)
        instruments?.recordFinished(
            options.name,
            duration: duration,
            outcome: outcome,
            slowThreshold: live.slowQueryThreshold
        )
    }

    // MARK: - Retries

    private enum RetryVerdict {
        case retry(after: Duration)
        case stop(DatabaseRetryError.Reason)
        /// Not retryable at all: the caller sees the original error.
        case giveUp
    }

    private func retryVerdict(
        for classification: ErrorClassification,
        options: OperationOptions,
        attempt: Int,
        maxAttempts: Int,
        now: MonotonicTime,
        deadline: MonotonicTime?,
        breakerOpen: Bool,
        immediately: Bool
    ) -> RetryVerdict {
        let errorClass = classification.errorClass
        guard errorClass.isRetryable else {
            return attempt > 1 ? .stop(.notRetryable) : .giveUp
        }
        // Whatever the class: a statement that may have taken effect runs again only when the
        // caller said repeating it is harmless (a transaction that was rolled back is not "maybe").
        if classification.mayHaveReachedServer, !options.idempotent {
            return attempt > 1 ? .stop(.notRetryable) : .giveUp
        }
        guard attempt < maxAttempts else {
            return maxAttempts > 1 ? .stop(.attemptsExhausted) : .giveUp
        }
        if breakerOpen { return .stop(.circuitOpened) }
        let delay =
            immediately
            ? .zero : jitter.withLock { [retry = live.retry] in retry.delay(forRetry: attempt, using: &$0) }
        if let deadline, now + delay >= deadline {
            return .stop(.deadlineReached)
        }
        guard retryBudget.withLock({ $0.tryAcquireRetry(at: now) }) else {
            return .stop(.budgetExhausted)
        }
        return .retry(after: delay)
    }

    // MARK: - Classification

    /// Classifies errors the core itself produces, and leaves the rest to the backend.
    public func classify(_ error: any Error) -> ErrorClassification {
        switch error {
        case is AttemptDeadlineExceeded, is DatabaseTimeoutError:
            return ErrorClassification(.timeout)
        case is DatabasePoolTimeoutError:
            return ErrorClassification(.overload)
        case is DatabaseCircuitBreakerError, is DatabaseOverloadedError:
            return ErrorClassification(.overload)
        case is CancellationError:
            return ErrorClassification(.cancelled)
        case is CommitOutcomeUnknownError:
            return ErrorClassification(
                .connection,
                mayHaveReachedServer: true,
                discardConnection: true,
                connectionScoped: true
            )
        case let error as TransactionNotCommittedError:
            // Rolled back with its session: safe to run again as a whole.
            var classification = classify(error.underlying)
            classification.mayHaveReachedServer = false
            return classification
        default:
            if Task.isCancelled { return ErrorClassification(.cancelled) }
            return raw.classify(error)
        }
    }
}
