import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Checks the database every interval, keeps the latest ``HealthStatus``, and raises alerts.
///
/// Runs as a swift-service-lifecycle `Service`. Reading ``status`` never runs a query: HTTP health
/// endpoints and dashboards read the last check's result combined with the breaker and pool as
/// they are now, so a flood of health requests cannot add load to a struggling database. At most
/// one check is in flight; callers of ``checkNow()`` during a check share its result. Breaker
/// transitions are evaluated at once, without waiting for the next check: the breaker alert fires
/// then, and resolves once the breaker has stayed CLOSED for its `keepFiringFor`. A probe that
/// completes a round trip tells an open breaker that the server answers (Sources/ReliableDB/Documentation.docc/Breaker.md).
public final class HealthMonitor: Service, Sendable {
    public struct Configuration: Sendable, Equatable {
        /// `DB_MONITORING`: false makes ``run()`` return at once (on-demand checks still work).
        public var enabled: Bool
        /// `DB_HEALTH_CHECK_INTERVAL`.
        public var interval: Duration
        /// The `DB_ALERT_*_THRESHOLD` values.
        public var thresholds: AlertThresholds
        public var alerts: AlertConfiguration

        public init(
            enabled: Bool = true,
            interval: Duration = .seconds(30),
            thresholds: AlertThresholds = .init(),
            alerts: AlertConfiguration = .init()
        ) {
            self.enabled = enabled
            self.interval = interval
            self.thresholds = thresholds
            self.alerts = alerts
        }

        /// The monitor settings the environment configures, alert timings (`DB_ALERT_FOR`,
        /// `DB_ALERT_KEEP_FIRING_FOR`) included.
        public init(_ configuration: ReliableDBConfiguration, service: String = "reliabledb") {
            self.init(
                enabled: configuration.monitoringEnabled,
                interval: configuration.healthCheckInterval,
                thresholds: configuration.alertThresholds,
                alerts: .init(
                    timings: AlertTimings(
                        thresholdFor: configuration.alertFor,
                        keepFiringFor: configuration.alertKeepFiringFor
                    ),
                    repeatInterval: .seconds(3600),
                    labels: Self.alertLabels(configuration, service: service)
                )
            )
        }

        /// Labels that say which service instance sees the problem and which database it means:
        /// `service`, `instance` (this host), `backend`, and `db_host`, `db_port`, `db_name` (or
        /// `db_path` for SQLite). Never a credential.
        static func alertLabels(_ configuration: ReliableDBConfiguration, service: String) -> [String: String] {
            var labels = [
                "service": service,
                "instance": ProcessInfo.processInfo.hostName,
                "backend": configuration.database.backendName,
            ]
            switch configuration.database {
            case .sqlite(let path):
                labels["db_path"] = path
            case .postgres(let url):
                labels["db_host"] = url.host
                labels["db_port"] = String(url.port)
                labels["db_name"] = url.database
            }
            return labels
        }
    }

    /// The settings in force (``reconfigure(_:)`` changes them).
    public var configuration: Configuration { settings.withLock { $0 } }
    private let settings: Mutex<Configuration>
    private let probe: @Sendable () async -> Result<ProbeResult, any Error>
    private let snapshot: @Sendable () -> MetricsSnapshot
    /// Tells the breaker that a probe completed a round trip (an open breaker turns HALF_OPEN).
    private let serverAnswered: @Sendable () -> Void
    private let breaker: CircuitBreaker
    private let sinks: [any AlertSink]
    private let clock: any ReliabilityClock
    private let logger: Logger
    private let startedAt: MonotonicTime
    private let state: Mutex<State>

    private struct State {
        var status: HealthStatus
        var engine: AlertEngine
        var previous: OperationMetricsSnapshot?
        /// Callers waiting for the check in flight; nil while none runs.
        var joiners: [CheckedContinuation<HealthStatus, Never>]?
        var checks = 0
        /// What the last log line said, so a condition is logged once, when it changes.
        var logged: (state: HealthState, reason: String)?
    }

    // MARK: - Construction

    /// - Parameters:
    ///   - database: the database it probes and whose metrics and breaker it reads.
    ///   - configuration: the interval, thresholds and alert settings; by default those of
    ///     the environment's configuration the database was built from
    ///     (``ReliableDatabase/environmentConfiguration``), else the defaults.
    ///   - sinks: where alert notifications go. Firing alerts are repeated at least as often as
    ///     any of them asks (``AlertSink/repeatInterval``): every minute for Alertmanager.
    ///   - logger: where changes of the database's health are logged.
    public init<Backend: DatabaseBackend>(
        database: ReliableDatabase<Backend>,
        configuration: Configuration? = nil,
        sinks: [any AlertSink] = [],
        logger: Logger = Logger(label: "reliabledb.monitor")
    ) {
        var configuration = configuration ?? database.environmentConfiguration.map { Configuration($0) } ?? .init()
        if let needed = sinks.compactMap(\.repeatInterval).min(), needed < configuration.alerts.repeatInterval {
            configuration.alerts.repeatInterval = needed
        }
        settings = Mutex(configuration)
        probe = { await database.probe().mapError { DescribedError(database.raw.describe($0)) } }
        snapshot = { database.metrics() }
        serverAnswered = { database.serverAnswered() }
        breaker = database.circuitBreaker
        self.sinks = sinks
        clock = database.clock
        self.logger = logger
        startedAt = database.clock.now
        let initial = HealthStatus(
            state: .unhealthy,
            score: 0,
            checks: HealthChecks(
                connectivity: false,
                queryPerformance: true,
                poolHealth: true,
                circuitBreakerState: true
            ),
            checkedAt: nil,
            uptime: .zero,
            metrics: database.metrics(),
            lastError: "no health check has run yet"
        )
        state = Mutex(State(status: initial, engine: AlertEngine(configuration: configuration.alerts)))
    }

    // MARK: - Live settings

    /// Puts a new interval, new thresholds and alert timings in force without a restart: the
    /// thresholds from the next evaluation, the interval from the next wait (so within one
    /// interval). Whether monitoring runs, the alert labels and the repeat interval stay.
    public func reconfigure(_ new: Configuration) {
        let alerts: AlertConfiguration = settings.withLock { current in
            current.interval = new.interval
            current.thresholds = new.thresholds
            current.alerts.timings = new.alerts.timings
            return current.alerts
        }
        state.withLock { $0.engine.reconfigure(alerts) }
    }

    // MARK: - Status, read from memory

    /// The health now, from one snapshot: the last probe's result and the last interval's query
    /// figures, combined with the breaker and pool as they are at this moment (read from memory,
    /// without touching the database). State, score, checks and metrics are evaluated together, so
    /// an open breaker never sits beside "healthy" in the same answer.
    public var status: HealthStatus {
        let uptime = clock.now - startedAt
        let metrics = snapshot()
        let thresholds = configuration.thresholds
        return state.withLock { state in
            var status = state.status
            status.uptime = uptime
            status.metrics = metrics
            guard status.checkedAt != nil else { return status }
            let verdict = HealthScore.evaluate(
                .init(
                    probeSucceeded: status.checks.connectivity,
                    breakerState: metrics.circuitBreaker.state,
                    recentAverageQueryTime: status.recentAverageQueryTime,
                    recentErrorRate: status.recentErrorRate,
                    poolUtilization: metrics.pool.utilization,
                    poolWaiting: metrics.pool.waiting
                ),
                thresholds: thresholds
            )
            status.state = verdict.state
            status.score = verdict.score
            status.checks = verdict.checks
            return status
        }
    }

    /// Whether at least one check has finished.
    public var hasChecked: Bool {
        state.withLock { $0.checks > 0 }
    }

    /// Logs the health when it changed since the last line (state or reason), not on every check:
    /// one line per incident, one when it is over.
    private func logChange(_ status: HealthStatus) {
        let reason = Self.reason(status)
        // Keyed on which checks fail and the probe's error, not on figures that move every check.
        let key = "\(status.checks)|\(status.lastError ?? "")"
        let changed = state.withLock { state -> (from: HealthState?, to: HealthState)? in
            let previous = state.logged
            guard previous?.state != status.state || previous?.reason != key else { return nil }
            state.logged = (status.state, key)
            return (previous?.state, status.state)
        }
        guard let changed else { return }
        if status.state == .healthy {
            if changed.from != nil { logger.notice("database healthy again", metadata: ["score": "\(status.score)"]) }
        } else {
            logger.warning("database \(status.state.rawValue): \(reason)", metadata: ["score": "\(status.score)"])
        }
    }

    /// Why the health is not perfect, in words: the probe's error and each failing check.
    static func reason(_ status: HealthStatus) -> String {
        var reasons: [String] = []
        if !status.checks.connectivity { reasons.append("probe failed: \(status.lastError ?? "unknown error")") }
        if !status.checks.circuitBreakerState {
            reasons.append("circuit breaker \(status.metrics.circuitBreaker.state.rawValue)")
        }
        if !status.checks.queryPerformance {
            reasons.append("slow queries (average \(Int(status.recentAverageQueryTime.milliseconds)) ms)")
        }
        if !status.checks.poolHealth {
            reasons.append(
                "pool busy (\(status.metrics.pool.active) of \(status.metrics.pool.max) in use, \(status.metrics.pool.waiting) waiting)"
            )
        }
        if reasons.isEmpty, status.recentErrorRate > 0 {
            reasons.append(String(format: "error rate %.1f%%", status.recentErrorRate))
        }
        return reasons.isEmpty ? "all checks pass" : reasons.joined(separator: "; ")
    }

    /// Callers waiting for the check in flight, for tests.
    package var checkJoiners: Int {
        state.withLock { $0.joiners?.count ?? 0 }
    }

    // MARK: - Checks

    /// Runs a check now in the caller's task, or joins the one in flight (whose probe is bounded
    /// by the health timeout) and returns its verdict.
    @discardableResult
    public func checkNow() async -> HealthStatus {
        let runsCheck = state.withLock { state -> Bool in
            if state.joiners != nil { return false }
            state.joiners = []
            return true
        }
        guard runsCheck else {
            return await withCheckedContinuation { continuation in
                let finished = state.withLock { state -> HealthStatus? in
                    guard state.joiners != nil else { return state.status }
                    state.joiners?.append(continuation)
                    return nil
                }
                if let finished { continuation.resume(returning: finished) }
            }
        }
        let status = await performCheck()
        let joiners = state.withLock { state in
            defer { state.joiners = nil }
            return state.joiners ?? []
        }
        for joiner in joiners { joiner.resume(returning: status) }
        return status
    }

    /// Checks every interval until cancelled or the service group shuts down gracefully.
    public func run() async throws {
        guard configuration.enabled else { return }
        await withTaskGroup(of: Void.self) { group in
            let transitions = breaker.transitions.subscribe()
            group.addTask {
                for await transition in transitions {
                    self.breakerChanged(to: transition.to, server: self.breaker.server)
                    // Closed again: the server answers. A failed probe's verdict (readiness, the
                    // unreachable alert) should not wait for the next interval to say so.
                    if transition.to == .closed, self.status.lastError != nil { await self.checkNow() }
                }
            }
            group.addTask {
                await cancelWhenGracefulShutdown {
                    while !Task.isCancelled {
                        await self.checkNow()
                        do {
                            try await self.clock.sleep(for: self.configuration.interval)
                        } catch {
                            return
                        }
                    }
                }
            }
            await group.next()
            group.cancelAll()
        }
    }

    private func performCheck() async -> HealthStatus {
        let result = await probe()
        // A check cut short by shutdown says nothing about the database: it is not recorded.
        if Task.isCancelled { return status }
        // The server answers: an open breaker need not wait out its timeout.
        if result.isSuccess { serverAnswered() }
        let metrics = snapshot()
        let now = clock.now
        let wallClock = Date()
        let thresholds = configuration.thresholds
        let probed = try? result.get()
        let (status, notifications) = state.withLock { state -> (HealthStatus, [AlertNotification]) in
            let recent = Self.recentWindow(current: metrics.queries, previous: state.previous)
            state.previous = metrics.queries
            let verdict = HealthScore.evaluate(
                .init(
                    probeSucceeded: result.isSuccess,
                    breakerState: metrics.circuitBreaker.state,
                    recentAverageQueryTime: recent.averageQueryTime,
                    recentErrorRate: recent.errorRate,
                    poolUtilization: metrics.pool.utilization,
                    poolWaiting: metrics.pool.waiting
                ),
                thresholds: thresholds
            )
            let observations = Self.observations(
                verdict: verdict,
                metrics: metrics,
                recent: recent,
                thresholds: thresholds,
                probeError: result.failureDescription,
                serverConnections: probed?.serverConnections
            )
            let notifications = state.engine.evaluate(observations, at: now, wallClock: wallClock)
            state.status = HealthStatus(
                state: verdict.state,
                score: verdict.score,
                checks: verdict.checks,
                checkedAt: wallClock,
                uptime: now - startedAt,
                metrics: metrics,
                recentAverageQueryTime: recent.averageQueryTime,
                recentErrorRate: recent.errorRate,
                activeAlerts: state.engine.firing,
                lastError: result.failureDescription,
                serverVersion: probed?.serverVersion ?? state.status.serverVersion,
                serverConnections: probed?.serverConnections
            )
            state.checks += 1
            return (state.status, notifications)
        }
        logChange(status)
        deliver(notifications)
        return status
    }

    // MARK: - Alerts

    private func breakerChanged(to newState: CircuitState, server: String?) {
        let now = clock.now
        let notifications = state.withLock { state -> [AlertNotification] in
            let notifications = state.engine.evaluate(
                [Self.breakerObservation(newState, server: server)],
                at: now,
                wallClock: Date()
            )
            state.status.activeAlerts = state.engine.firing
            return notifications
        }
        deliver(notifications)
    }

    private func deliver(_ notifications: [AlertNotification]) {
        for notification in notifications {
            logger.notice(
                "alert \(notification.status.rawValue)",
                metadata: ["alert": "\(notification.kind.rawValue)", "summary": "\(notification.summary)"]
            )
            for sink in sinks { sink.deliver(notification) }
        }
    }
}

extension Result {
    fileprivate var isSuccess: Bool {
        if case .success = self { return true }
        return false
    }

    fileprivate var failureDescription: String? {
        if case .failure(let error) = self { return "\(error)" }
        return nil
    }
}

/// A probe's error as the backend describes it (its real cause, in words).
struct DescribedError: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) {
        self.description = description
    }
}
