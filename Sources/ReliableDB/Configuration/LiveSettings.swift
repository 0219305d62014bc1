import Configuration
import CoreMetrics
import Logging
import ServiceLifecycle
import Synchronization

/// Settings changed without a restart (Sources/ReliableDB/Documentation.docc/SettingsWithoutARestart.md).
///
/// Watches a swift-configuration reader whose providers reload (`ReloadingFileProvider`: `serve`
/// watches its `.env` this way) and puts each new value of
/// ``ReliableDBConfiguration/liveVariableNames`` in force: the breakers' threshold and open
/// timeout, each kind's timeout and the retries (``ReliableDatabase/reconfigure(_:)``), the pool's
/// maximum (``DatabaseBackend/resizePool(maximumConnections:)``), the health interval, alert
/// thresholds and alert timings (``HealthMonitor/reconfigure(_:)``). A change to another variable
/// is logged as taking effect at the next start. A snapshot with a bad value is rejected whole with
/// the ``ConfigurationError`` a bad value at start gets, logged, and the settings in force stay.
public final class LiveSettings<Backend: DatabaseBackend>: Sendable {
    private let database: ReliableDatabase<Backend>
    private let monitor: HealthMonitor?
    private let logger: Logger
    /// The raw values (variable to text) of the settings in force.
    private let inForce: Mutex<[String: String]>
    private let applied = Atomic<Int>(0)
    private let rejected = Atomic<Int>(0)

    /// - Parameters:
    ///   - database: whose pipeline, breakers and pool take the new values.
    ///   - monitor: whose interval, thresholds and alert timings do; nil when none runs.
    ///   - values: the raw values the database was started with (`ConfigReader.values(of:secrets:)`
    ///     of the same reader), so only what changes afterwards is applied.
    ///   - logger: where applied and rejected reloads are logged (names only, never values).
    public init(
        database: ReliableDatabase<Backend>,
        monitor: HealthMonitor?,
        startedWith values: [String: String],
        logger: Logger = Logger(label: "reliabledb.settings")
    ) {
        self.database = database
        self.monitor = monitor
        self.logger = logger
        inForce = Mutex(values)
    }

    /// How many new snapshots were put in force, and how many were rejected.
    public var counts: (applied: Int, rejected: Int) {
        (applied.load(ordering: .relaxed), rejected.load(ordering: .relaxed))
    }

    /// Applies each snapshot `config` produces until the task is cancelled; `fileProblems` adds
    /// the problems of the watched file's lines (as at start, `EnvironmentFileCheck`).
    public func watch(
        _ config: ConfigReader,
        fileProblems: @escaping @Sendable () -> [ConfigurationError.Problem] = { [] }
    ) async throws {
        let names = ReliableDBConfiguration.variableNames + ReliableDBConfiguration.additionalVariableNames
        try await config.watchSnapshot { updates in
            for await snapshot in updates {
                let values = snapshot.values(of: names, secrets: ReliableDBConfiguration.secretVariableNames)
                apply(values, problems: fileProblems())
            }
        }
    }

    /// Validates `values` as a whole configuration and, when valid, puts its live settings in
    /// force; returns the variables that changed (names only: some hold secrets).
    @discardableResult
    public func apply(
        _ values: [String: String],
        problems: [ConfigurationError.Problem] = []
    ) -> (live: [String], atNextStart: [String]) {
        let before = inForce.withLock { $0 }
        let changed = Set(before.keys).union(values.keys).filter { before[$0] != values[$0] }.sorted()
        guard !changed.isEmpty || !problems.isEmpty else { return ([], []) }
        let configuration: ReliableDBConfiguration
        do {
            configuration = try ReliableDBConfiguration.parse(values, problems: problems)
            try database.reconfigure(Self.overlay(changed, of: configuration, on: database.configuration))
        } catch {
            rejected.add(1, ordering: .relaxed)
            logger.error("new settings rejected, the ones in force stay: \(error)")
            return ([], [])
        }
        let live = changed.filter(ReliableDBConfiguration.liveVariableNames.contains)
        var atNextStart = changed.filter { !ReliableDBConfiguration.liveVariableNames.contains($0) }
        if live.contains("DB_CONNECTION_LIMIT"),
            !database.raw.resizePool(maximumConnections: configuration.connectionLimit)
        {
            atNextStart.append("DB_CONNECTION_LIMIT")
        }
        if let monitor, live.contains(where: { $0 == "DB_HEALTH_CHECK_INTERVAL" || $0.hasPrefix("DB_ALERT_") }) {
            monitor.reconfigure(Self.overlay(live, of: configuration, on: monitor.configuration))
        }
        inForce.withLock { $0 = values }
        applied.add(1, ordering: .relaxed)
        let inEffect = live.filter { !atNextStart.contains($0) }
        if !inEffect.isEmpty {
            logger.notice("settings changed without a restart: \(inEffect.joined(separator: ", "))")
        }
        if !atNextStart.isEmpty {
            logger.warning(
                "settings changed that take effect at the next start: \(atNextStart.joined(separator: ", "))"
            )
        }
        return (inEffect, atNextStart)
    }
}

extension LiveSettings {
    /// `current` with the pipeline settings of the `changed` variables taken from `new`: what the
    /// application configured in code and the file does not name stays.
    static func overlay(
        _ changed: [String],
        of new: ReliableDBConfiguration,
        on current: ReliabilityConfiguration
    ) -> ReliabilityConfiguration {
        var result = current
        let changed = Set(changed)
        if changed.contains("DB_CB_FAILURE_THRESHOLD") {
            result.circuitBreaker.failureThreshold = new.circuitBreakerFailureThreshold
        }
        if changed.contains("DB_CB_TIMEOUT") { result.circuitBreaker.timeout = new.circuitBreakerTimeout }
        for kind in OperationKind.allCases where changed.contains(ReliableDBConfiguration.timeoutVariable(for: kind)) {
            result.timeouts[kind] = new.timeouts[kind]
        }
        if changed.contains("DB_RETRY_ATTEMPTS") { result.retry.attempts = new.retry.attempts }
        if changed.contains("DB_RETRY_INITIAL_DELAY") { result.retry.initialDelay = new.retry.initialDelay }
        if changed.contains("DB_RETRY_MAX_DELAY") { result.retry.maxDelay = new.retry.maxDelay }
        if changed.contains("DB_ALERT_QUERY_TIME_THRESHOLD") {
            result.slowQueryThreshold = new.alertThresholds.queryTime
        }
        return result
    }
}

extension LiveSettings {
    /// The monitor's `current` settings with those of the `changed` variables taken from `new`.
    static func overlay(
        _ changed: [String],
        of new: ReliableDBConfiguration,
        on current: HealthMonitor.Configuration
    ) -> HealthMonitor.Configuration {
        var result = current
        let changed = Set(changed)
        let thresholds = new.alertThresholds
        if changed.contains("DB_HEALTH_CHECK_INTERVAL") { result.interval = new.healthCheckInterval }
        if changed.contains("DB_ALERT_HEALTH_SCORE_THRESHOLD") {
            result.thresholds.healthScore = thresholds.healthScore
        }
        if changed.contains("DB_ALERT_POOL_UTILIZATION_THRESHOLD") {
            result.thresholds.poolUtilization = thresholds.poolUtilization
        }
        if changed.contains("DB_ALERT_QUERY_TIME_THRESHOLD") { result.thresholds.queryTime = thresholds.queryTime }
        if changed.contains("DB_ALERT_ERROR_RATE_THRESHOLD") { result.thresholds.errorRate = thresholds.errorRate }
        if changed.contains("DB_ALERT_SERVER_CONNECTIONS_THRESHOLD") {
            result.thresholds.serverConnections = thresholds.serverConnections
        }
        if changed.contains("DB_ALERT_FOR") || changed.contains("DB_ALERT_KEEP_FIRING_FOR") {
            result.alerts.timings = HealthMonitor.Configuration(new).alerts.timings
        }
        return result
    }
}

extension ConfigSnapshotReader {
    /// As `ConfigReader.values(of:secrets:)`, from one snapshot: every value from the same reload.
    package func values(of names: [String], secrets: Set<String>) -> [String: String] {
        ReliableDBConfiguration.rawValues(of: names, secrets: secrets) { string(forKey: $0, isSecret: $1) }
    }
}

extension LiveSettings {
    /// `serve`'s way: the process environment over a `.env` file that a `ReloadingFileProvider`
    /// watches (every `pollInterval`, and on `SIGHUP`), with the file's lines checked as at start.
    /// Run the returned services in the application's `ServiceGroup`: the provider, then the
    /// watcher that applies each reload.
    public static func watchingEnvironmentFile(
        _ path: String,
        environment: [String: String],
        database: ReliableDatabase<Backend>,
        monitor: HealthMonitor?,
        pollInterval: Duration = .seconds(1),
        logger: Logger = Logger(label: "reliabledb.settings")
    ) async throws -> (settings: LiveSettings, services: [any Service]) {
        let secrets = ReliableDBConfiguration.secretVariableNames
        let file = try await ReloadingFileProvider<DotEnvSnapshot>(
            filePath: .init(path),
            allowMissing: true,
            pollInterval: pollInterval,
            logger: logger,
            metrics: NOOPMetricsHandler.instance
        )
        let config = ConfigReader(providers: [
            EnvironmentVariablesProvider(environmentVariables: environment, secretsSpecifier: .specific(secrets)),
            file,
        ])
        let names = ReliableDBConfiguration.variableNames + ReliableDBConfiguration.additionalVariableNames
        let settings = LiveSettings(
            database: database,
            monitor: monitor,
            startedWith: config.values(of: names, secrets: secrets),
            logger: logger
        )
        let watcher = LiveSettingsWatcher { [settings] in
            try await settings.watch(config) {
                EnvironmentSource.fileProblems(dotEnvPath: path, names: names)
            }
        }
        return (settings, [file, watcher])
    }
}

/// Runs a watch until graceful shutdown, which ends it quietly: a service that throws then
/// would cancel the whole group.
struct LiveSettingsWatcher: Service {
    let body: @Sendable () async throws -> Void

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown { try await body() }
        } catch is CancellationError {
            return
        }
    }
}
