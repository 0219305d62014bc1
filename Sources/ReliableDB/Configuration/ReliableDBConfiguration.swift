import Configuration
import Foundation

// MARK: - Settings

/// Everything ReliableDB reads from the environment (README.md's Configuration table).
///
/// ``fromEnvironment(_:dotEnvPath:)`` validates every variable and throws one
/// ``ConfigurationError`` listing all problems, so a bad deployment fails at start-up with the
/// full list instead of at the first query, one fix per restart.
public struct ReliableDBConfiguration: Sendable, Equatable {
    /// `DATABASE_URL`.
    public var database: DatabaseLocation
    /// `DB_CONNECTION_LIMIT`: the most connections the pool opens.
    public var connectionLimit: Int
    /// `DB_POOL_TIMEOUT` (seconds): the longest wait for a free connection.
    public var poolTimeout: Duration
    /// `DB_CIRCUIT_BREAKER`.
    public var circuitBreakerEnabled: Bool
    /// `DB_MONITORING`.
    public var monitoringEnabled: Bool
    /// `DB_TIMEOUTS`.
    public var timeoutsEnabled: Bool
    /// `DB_CB_FAILURE_THRESHOLD`.
    public var circuitBreakerFailureThreshold: Int
    /// `DB_CB_TIMEOUT` (milliseconds): the longest the breaker stays open without a probe finding
    /// the server answering (Sources/ReliableDB/Documentation.docc/Breaker.md).
    public var circuitBreakerTimeout: Duration
    /// `DB_HEALTH_CHECK_INTERVAL` (milliseconds).
    public var healthCheckInterval: Duration
    /// `DB_ALERT_WEBHOOK_URL`, validated as an http(s) URL; the URL is a secret (it embeds the
    /// token).
    @available(*, deprecated, message: "Read the webhook with ReliableDBWebhook's WebhookConfiguration")
    public var alertWebhookURL: Secret<String>? {
        get { webhookURL }
        set { webhookURL = newValue }
    }
    /// `DB_ALERT_WEBHOOK_FORMAT` as read, not validated: the webhook module owns the formats.
    @available(*, deprecated, message: "Read the webhook with ReliableDBWebhook's WebhookConfiguration")
    public var alertWebhookFormat: AlertWebhookFormat {
        get { webhookFormatName.flatMap { AlertWebhookFormat(rawValue: $0.lowercased()) } ?? .slack }
        set { webhookFormatName = newValue.rawValue }
    }
    /// Storage of the two deprecated webhook settings, kept for one release.
    var webhookURL: Secret<String>?
    var webhookFormatName: String?
    public var alertThresholds: AlertThresholds
    /// `DB_ALERT_FOR` (milliseconds): how long a threshold alert's condition (`error_rate`,
    /// `slow_queries`, `pool_utilization`, `health_score`, `database_overloaded`) must hold before
    /// it fires, so a blip during a restart never pages. `database_unreachable`,
    /// `circuit_breaker_state` and `database_failed_over` always fire at once.
    public var alertFor: Duration = AlertTimings.defaultThresholdFor
    /// `DB_ALERT_KEEP_FIRING_FOR` (milliseconds): how long every alert's condition must be absent
    /// before it resolves, so a flapping incident stays one incident. Nil (unset): each alert's
    /// default, 30 s for those that fire at once and 60 s for threshold alerts (``AlertTimings``).
    public var alertKeepFiringFor: Duration?
    /// `DB_HEALTH_AUTH_TOKEN`: when set, `/api/health` shows details only to this bearer token.
    public var healthAuthToken: Secret<String>?
    /// `DB_LOAD_SHEDDING` (off by default), `DB_MAX_CONCURRENT_OPERATIONS` (default: the
    /// connection limit) and `DB_LOAD_SHEDDING_ADAPTIVE` (on by default): overload answered at once
    /// with `DatabaseOverloadedError` instead of queueing into pool timeouts (Sources/ReliableDBPostgres/Documentation.docc/Failover.md).
    public var loadShedding = LoadSheddingConfiguration.disabled
    /// `DB_PATRONI_URLS`: the REST APIs of a Patroni cluster's members (comma-separated
    /// `http://host:8008`), read for its leader and replicas instead of learning them only when
    /// connections break (Sources/ReliableDBPostgres/Documentation.docc/Failover.md, "Patroni").
    /// Empty: no topology source.
    public var patroniURLs: [URL] = []
    /// `DB_PASSWORD_FILE`: a file holding the database password (the containers' secret-file
    /// convention), read again for every new connection so a rotated secret needs no restart;
    /// it replaces the password in `DATABASE_URL` (Sources/ReliableDBPostgres/Documentation.docc/DayTwo.md).
    public var passwordFile: String?
    /// `DB_LEAK_DETECTION_THRESHOLD` (milliseconds, 0 or unset: off): a connection lease held
    /// this long logs one warning naming the operation and its call site, and counts in
    /// `db_connection_leaks_total` (Sources/ReliableDBPostgres/Documentation.docc/DayTwo.md, "Leaks").
    public var leakDetectionThreshold: Duration?
    /// `DB_MIN_IDLE_CONNECTIONS` (0 to `DB_CONNECTION_LIMIT`, default 0): connections the pool
    /// opens from the start, two at a time, and keeps idle while the server is reachable
    /// (Sources/ReliableDBPostgres/Documentation.docc/DayTwo.md, "A warm pool").
    public var minIdleConnections = 0
    /// `DB_TIMEOUT_QUERY`, `DB_TIMEOUT_TRANSACTION`, ... (milliseconds, one per
    /// ``OperationKind``, see ``timeoutVariable(for:)``): each kind's deadline; `DB_TIMEOUTS`
    /// switches them all off. Unset: the defaults of ``TimeoutConfiguration``.
    public var timeouts = TimeoutConfiguration()
    /// `DB_RETRY_ATTEMPTS` (attempts in all, 1: no retry), `DB_RETRY_INITIAL_DELAY` and
    /// `DB_RETRY_MAX_DELAY` (milliseconds): the retries' full-jitter backoff.
    public var retry = RetryConfiguration()
    /// `DB_READY_AFTER_WARM_UP` (default false): `/api/health/ready` answers 503 until the pool has
    /// first held `DB_MIN_IDLE_CONNECTIONS` open connections, so a new instance takes traffic warm.
    public var readyAfterWarmUp = false

    public init(
        database: DatabaseLocation = .sqlite(path: DatabaseLocation.defaultSQLitePath),
        connectionLimit: Int = 10,
        poolTimeout: Duration = .seconds(10),
        circuitBreakerEnabled: Bool = true,
        monitoringEnabled: Bool = true,
        timeoutsEnabled: Bool = true,
        circuitBreakerFailureThreshold: Int = 5,
        circuitBreakerTimeout: Duration = .seconds(60),
        healthCheckInterval: Duration = .seconds(30),
        alertWebhookURL: Secret<String>? = nil,
        alertThresholds: AlertThresholds = .init(),
        healthAuthToken: Secret<String>? = nil
    ) {
        self.database = database
        self.connectionLimit = connectionLimit
        self.poolTimeout = poolTimeout
        self.circuitBreakerEnabled = circuitBreakerEnabled
        self.monitoringEnabled = monitoringEnabled
        self.timeoutsEnabled = timeoutsEnabled
        self.circuitBreakerFailureThreshold = circuitBreakerFailureThreshold
        self.circuitBreakerTimeout = circuitBreakerTimeout
        self.healthCheckInterval = healthCheckInterval
        self.webhookURL = alertWebhookURL
        self.alertThresholds = alertThresholds
        self.healthAuthToken = healthAuthToken
    }

    /// The pipeline settings these variables imply.
    public var reliability: ReliabilityConfiguration {
        var breaker = CircuitBreakerConfiguration()
        breaker.failureThreshold = circuitBreakerFailureThreshold
        breaker.timeout = circuitBreakerTimeout
        var timeouts = self.timeouts
        timeouts.enabled = timeoutsEnabled
        var reliability = ReliabilityConfiguration(
            circuitBreakerEnabled: circuitBreakerEnabled,
            circuitBreaker: breaker,
            retry: retry,
            timeouts: timeouts,
            slowQueryThreshold: alertThresholds.queryTime
        )
        reliability.loadShedding = loadShedding
        return reliability
    }
}

// MARK: - Alert thresholds

/// The alert thresholds (`DB_ALERT_*_THRESHOLD`).
public struct AlertThresholds: Sendable, Equatable {
    /// Alert when the health score falls below this (0-100).
    public var healthScore: Double
    /// Alert when pool utilization in percent exceeds this.
    public var poolUtilization: Double
    /// Alert when the average query time exceeds this; also the slow-query threshold.
    public var queryTime: Duration
    /// Alert when the error rate in percent exceeds this.
    public var errorRate: Double
    /// Alert when the server's connections in use exceed this percentage of the slots ordinary
    /// clients get (`DB_ALERT_SERVER_CONNECTIONS_THRESHOLD`).
    public var serverConnections: Double

    public init(
        healthScore: Double = 70,
        poolUtilization: Double = 80,
        queryTime: Duration = .milliseconds(1000),
        errorRate: Double = 5,
        serverConnections: Double = 90
    ) {
        self.healthScore = healthScore
        self.poolUtilization = poolUtilization
        self.queryTime = queryTime
        self.errorRate = errorRate
        self.serverConnections = serverConnections
    }
}

// MARK: - Reading the environment

extension ReliableDBConfiguration {
    /// The core variables this type reads.
    public static let variableNames = [
        "DATABASE_URL", "DB_CONNECTION_LIMIT", "DB_POOL_TIMEOUT", "DB_CIRCUIT_BREAKER", "DB_MONITORING",
        "DB_TIMEOUTS", "DB_CB_FAILURE_THRESHOLD", "DB_CB_TIMEOUT", "DB_HEALTH_CHECK_INTERVAL",
        "DB_ALERT_WEBHOOK_URL", "DB_ALERT_HEALTH_SCORE_THRESHOLD", "DB_ALERT_POOL_UTILIZATION_THRESHOLD",
        "DB_ALERT_QUERY_TIME_THRESHOLD", "DB_ALERT_ERROR_RATE_THRESHOLD",
    ]

    /// The variables read on top of `variableNames`: load shedding, alert timing, format and the
    /// server connections threshold, health endpoint authentication, Patroni's REST APIs, the
    /// password file, leak detection, the warm pool, per-kind timeouts and retries.
    public static let additionalVariableNames =
        [
            "DB_HEALTH_AUTH_TOKEN", "DB_ALERT_WEBHOOK_FORMAT", "DB_LOAD_SHEDDING", "DB_MAX_CONCURRENT_OPERATIONS",
            "DB_LOAD_SHEDDING_ADAPTIVE", "DB_ALERT_FOR", "DB_ALERT_KEEP_FIRING_FOR",
            "DB_ALERT_SERVER_CONNECTIONS_THRESHOLD", "DB_PATRONI_URLS", "DB_PASSWORD_FILE",
            "DB_LEAK_DETECTION_THRESHOLD", "DB_MIN_IDLE_CONNECTIONS", "DB_READY_AFTER_WARM_UP",
            "DB_RETRY_ATTEMPTS", "DB_RETRY_INITIAL_DELAY", "DB_RETRY_MAX_DELAY",
        ] + OperationKind.allCases.map(timeoutVariable(for:))

    /// The variable of `kind`'s timeout: `DB_TIMEOUT_BATCH_INSERT` for `.batchInsert`.
    public static func timeoutVariable(for kind: OperationKind) -> String {
        var name = "DB_TIMEOUT_"
        for character in kind.rawValue {
            if character.isUppercase { name.append("_") }
            name.append(character.uppercased())
        }
        return name
    }

    /// The variables that change without a restart when a watched file is rewritten
    /// (``LiveSettings``); the others take effect at the next start.
    public static let liveVariableNames: Set<String> = Set(
        [
            "DB_CONNECTION_LIMIT", "DB_CB_FAILURE_THRESHOLD", "DB_CB_TIMEOUT", "DB_HEALTH_CHECK_INTERVAL",
            "DB_ALERT_HEALTH_SCORE_THRESHOLD", "DB_ALERT_POOL_UTILIZATION_THRESHOLD",
            "DB_ALERT_QUERY_TIME_THRESHOLD", "DB_ALERT_ERROR_RATE_THRESHOLD",
            "DB_ALERT_SERVER_CONNECTIONS_THRESHOLD", "DB_ALERT_FOR", "DB_ALERT_KEEP_FIRING_FOR",
            "DB_RETRY_ATTEMPTS", "DB_RETRY_INITIAL_DELAY", "DB_RETRY_MAX_DELAY",
        ] + OperationKind.allCases.map(timeoutVariable(for:))
    )

    /// Reads the configuration from `environment`, with the `.env` file at `dotEnvPath` (when it
    /// exists) filling in variables the environment does not set. Empty values count as unset.
    ///
    /// Both are read by swift-configuration's `EnvironmentVariablesProvider`, as
    /// ``init(config:)`` would. A `.env` line that provider would skip or misread (no `=`;
    /// `export`, quotes or an inline comment on one of these variables) is reported with its line
    /// number among the other problems, rather than lost.
    public static func fromEnvironment(
        _ environment: [String: String] = ProcessInfo.processInfo.environment,
        dotEnvPath: String? = ".env"
    ) async throws(ConfigurationError) -> ReliableDBConfiguration {
        let source = await EnvironmentSource.open(
            environment,
            dotEnvPath: dotEnvPath,
            names: variableNames + additionalVariableNames,
            secretNames: secretVariableNames
        )
        do {
            return try Self(config: source.config, problems: source.problems)
        } catch {
            throw source.dropMisread(error)
        }
    }

    /// The variables this type reads that hold a secret (a password, a token).
    public static let secretVariableNames: Set<String> = [
        "DATABASE_URL", "DB_ALERT_WEBHOOK_URL", "DB_HEALTH_AUTH_TOKEN",
    ]

    /// The swift-configuration key of a variable: `DB_CONNECTION_LIMIT` is `db.connection.limit`,
    /// which `EnvironmentVariablesProvider` maps back to the same variable name and a JSON or YAML
    /// provider reads as nested keys.
    public static func configKey(for variable: String) -> ConfigKey {
        ConfigKey(variable.lowercased().split(separator: "_").map(String.init))
    }

    /// Reads the same variables through swift-configuration, from whatever providers `config`
    /// combines (environment variables, a `.env` file through `EnvironmentVariablesProvider`'s
    /// `environmentFilePath`, JSON, in-memory), with the same validation and the same
    /// all-problems-at-once error. Secrets are read as secrets, so access logs redact them.
    public init(config: ConfigReader) throws(ConfigurationError) {
        try self.init(config: config, problems: [])
    }

    /// Reads through `config`, reporting `problems` (found while reading its sources) first.
    init(config: ConfigReader, problems: [ConfigurationError.Problem]) throws(ConfigurationError) {
        let values = config.values(
            of: Self.variableNames + Self.additionalVariableNames,
            secrets: Self.secretVariableNames
        )
        self = try Self.parse(values, problems: problems)
    }

    /// Validates `values` (variable name to raw text) into a configuration, or throws every
    /// problem at once, `problems` (found while reading them) first.
    static func parse(
        _ values: [String: String],
        problems: [ConfigurationError.Problem]
    ) throws(ConfigurationError) -> ReliableDBConfiguration {
        var problems = problems
        var reader = EnvironmentReader(values: values)
        var config = ReliableDBConfiguration()
        if let url = reader.string("DATABASE_URL") {
            switch DatabaseLocation.parse(url) {
            case .success(let location): config.database = location
            case .failure(let problem): reader.problems.append(problem)
            }
        }
        config.connectionLimit = reader.integer("DB_CONNECTION_LIMIT", in: 1...1000, default: 10)
        config.poolTimeout = reader.duration("DB_POOL_TIMEOUT", unit: .seconds, in: 0.001...3600, default: .seconds(10))
        config.circuitBreakerEnabled = reader.boolean("DB_CIRCUIT_BREAKER", default: true)
        config.monitoringEnabled = reader.boolean("DB_MONITORING", default: true)
        config.timeoutsEnabled = reader.boolean("DB_TIMEOUTS", default: true)
        config.circuitBreakerFailureThreshold = reader.integer("DB_CB_FAILURE_THRESHOLD", in: 1...10_000, default: 5)
        config.circuitBreakerTimeout = reader.duration(
            "DB_CB_TIMEOUT",
            unit: .milliseconds,
            in: 1...86_400_000,
            default: .seconds(60)
        )
        config.healthCheckInterval = reader.duration(
            "DB_HEALTH_CHECK_INTERVAL",
            unit: .milliseconds,
            in: 100...86_400_000,
            default: .seconds(30)
        )
        config.webhookURL = reader.webhookURL("DB_ALERT_WEBHOOK_URL")
        config.webhookFormatName = reader.string("DB_ALERT_WEBHOOK_FORMAT")
        config.alertThresholds = AlertThresholds(
            healthScore: reader.number("DB_ALERT_HEALTH_SCORE_THRESHOLD", in: 0...100, default: 70),
            poolUtilization: reader.number("DB_ALERT_POOL_UTILIZATION_THRESHOLD", in: 0...100, default: 80),
            queryTime: reader.duration(
                "DB_ALERT_QUERY_TIME_THRESHOLD",
                unit: .milliseconds,
                in: 1...3_600_000,
                default: .milliseconds(1000)
            ),
            errorRate: reader.number("DB_ALERT_ERROR_RATE_THRESHOLD", in: 0...100, default: 5),
            serverConnections: reader.number("DB_ALERT_SERVER_CONNECTIONS_THRESHOLD", in: 0...100, default: 90)
        )
        config.alertFor = reader.duration(
            "DB_ALERT_FOR",
            unit: .milliseconds,
            in: 0...86_400_000,
            default: AlertTimings.defaultThresholdFor
        )
        if reader.string("DB_ALERT_KEEP_FIRING_FOR") != nil {
            config.alertKeepFiringFor = reader.duration(
                "DB_ALERT_KEEP_FIRING_FOR",
                unit: .milliseconds,
                in: 0...86_400_000,
                default: .zero
            )
        }

        config.healthAuthToken = reader.string("DB_HEALTH_AUTH_TOKEN").map { Secret($0, redacted: "***") }
        let maxConcurrent = reader.integer(
            "DB_MAX_CONCURRENT_OPERATIONS",
            in: 1...100_000,
            default: config.connectionLimit
        )
        config.loadShedding = LoadSheddingConfiguration(
            enabled: reader.boolean("DB_LOAD_SHEDDING", default: false),
            maxConcurrent: maxConcurrent,
            // The adaptive limit may grow up to the cap, whatever the cap.
            adaptive: reader.boolean("DB_LOAD_SHEDDING_ADAPTIVE", default: true)
                ? .init(initialLimit: min(20, maxConcurrent), maxLimit: maxConcurrent) : nil
        )

        config.patroniURLs = reader.httpURLs("DB_PATRONI_URLS")
        config.passwordFile = reader.readableFile("DB_PASSWORD_FILE")
        let leakThreshold = reader.duration(
            "DB_LEAK_DETECTION_THRESHOLD",
            unit: .milliseconds,
            in: 0...86_400_000,
            default: .zero
        )
        config.leakDetectionThreshold = leakThreshold > .zero ? leakThreshold : nil
        config.minIdleConnections = reader.integer(
            "DB_MIN_IDLE_CONNECTIONS",
            in: 0...config.connectionLimit,
            default: 0
        )
        config.readyAfterWarmUp = reader.boolean("DB_READY_AFTER_WARM_UP", default: false)
        for kind in OperationKind.allCases {
            config.timeouts[kind] = reader.duration(
                timeoutVariable(for: kind),
                unit: .milliseconds,
                in: 1...86_400_000,
                default: config.timeouts[kind]
            )
        }
        config.retry.attempts = reader.integer("DB_RETRY_ATTEMPTS", in: 1...100, default: config.retry.attempts)
        config.retry.initialDelay = reader.duration(
            "DB_RETRY_INITIAL_DELAY",
            unit: .milliseconds,
            in: 0...3_600_000,
            default: config.retry.initialDelay
        )
        config.retry.maxDelay = reader.duration(
            "DB_RETRY_MAX_DELAY",
            unit: .milliseconds,
            in: 0...3_600_000,
            default: config.retry.maxDelay
        )
        if config.retry.maxDelay < config.retry.initialDelay {
            reader.problems.append(
                .init(
                    variable: "DB_RETRY_MAX_DELAY",
                    value: reader.string("DB_RETRY_MAX_DELAY") ?? "\(Int64(config.retry.maxDelay.milliseconds))",
                    expected: "at least DB_RETRY_INITIAL_DELAY (\(Int64(config.retry.initialDelay.milliseconds)) ms)"
                )
            )
        }

        problems += reader.problems
        guard problems.isEmpty else { throw ConfigurationError(problems: problems) }
        return config
    }
}

// MARK: - Validating each variable

/// Reads typed values and collects every problem instead of stopping at the first.
package struct EnvironmentReader {
    enum Unit {
        case seconds
        case milliseconds

        var name: String { self == .seconds ? "seconds" : "milliseconds" }
    }

    let values: [String: String]
    package var problems: [ConfigurationError.Problem] = []

    package init(values: [String: String]) {
        self.values = values
    }

    /// The value of `name` without surrounding blanks; nil when unset or empty.
    package func string(_ name: String) -> String? {
        guard let value = values[name]?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
        return value
    }

    mutating func integer(_ name: String, in range: ClosedRange<Int>, default fallback: Int) -> Int {
        guard let raw = string(name) else { return fallback }
        guard let value = Int(raw), range.contains(value) else {
            problems.append(
                .init(
                    variable: name,
                    value: raw,
                    expected: "a whole number from \(range.lowerBound) to \(range.upperBound)"
                )
            )
            return fallback
        }
        return value
    }

    mutating func number(_ name: String, in range: ClosedRange<Double>, default fallback: Double) -> Double {
        guard let raw = string(name) else { return fallback }
        guard let value = Double(raw), value.isFinite, range.contains(value) else {
            problems.append(
                .init(
                    variable: name,
                    value: raw,
                    expected: "a number from \(format(range.lowerBound)) to \(format(range.upperBound))"
                )
            )
            return fallback
        }
        return value
    }

    mutating func duration(
        _ name: String,
        unit: Unit,
        in range: ClosedRange<Double>,
        default fallback: Duration
    ) -> Duration {
        guard let raw = string(name) else { return fallback }
        guard let value = Double(raw), value.isFinite, range.contains(value) else {
            problems.append(
                .init(
                    variable: name,
                    value: raw,
                    expected: "a number of \(unit.name) from \(format(range.lowerBound)) to \(format(range.upperBound))"
                )
            )
            return fallback
        }
        let nanoseconds = value * (unit == .seconds ? 1e9 : 1e6)
        return .nanoseconds(Int64(nanoseconds.rounded()))
    }

    mutating func boolean(_ name: String, default fallback: Bool) -> Bool {
        guard let raw = string(name) else { return fallback }
        switch raw.lowercased() {
        case "true", "1", "yes", "on": return true
        case "false", "0", "no", "off": return false
        default:
            problems.append(.init(variable: name, value: raw, expected: "true or false (also 1/0, yes/no, on/off)"))
            return fallback
        }
    }

    /// An http(s) URL with a host, kept secret: only its scheme and host are ever shown.
    package mutating func webhookURL(_ name: String) -> Secret<String>? {
        guard let raw = string(name) else { return nil }
        let redacted = Self.redactWebhook(raw)
        guard let url = URL(string: raw), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let host = url.host, !host.isEmpty
        else {
            problems.append(.init(variable: name, value: redacted, expected: "an http:// or https:// URL"))
            return nil
        }
        return Secret(raw, redacted: redacted)
    }

    /// A comma-separated list of http(s) URLs with a host, none empty. Credentials in one are
    /// never shown: a problem names the scheme, host and port.
    package mutating func httpURLs(_ name: String) -> [URL] {
        guard let raw = string(name) else { return [] }
        var urls: [URL] = []
        for part in raw.split(separator: ",", omittingEmptySubsequences: false) {
            let text = part.trimmingCharacters(in: .whitespaces)
            guard let url = URL(string: text), let scheme = url.scheme?.lowercased(),
                scheme == "http" || scheme == "https", let host = url.host, !host.isEmpty
            else {
                let shown = text.contains("@") ? Self.redactWebhook(text) : text
                problems.append(
                    .init(
                        variable: name,
                        value: shown,
                        expected:
                            "comma-separated http:// or https:// URLs with a host (http://10.0.0.1:8008,http://10.0.0.2:8008)"
                    )
                )
                return []
            }
            urls.append(url)
        }
        return urls
    }

    /// A path to a regular file this process can read, checked once at start: a secret mounted
    /// at the wrong path fails the start-up with the others, not every connect.
    package mutating func readableFile(_ name: String) -> String? {
        guard let path = string(name) else { return nil }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue,
            FileManager.default.isReadableFile(atPath: path)
        else {
            problems.append(.init(variable: name, value: path, expected: "the path of a readable file"))
            return nil
        }
        return path
    }

    /// Keeps the scheme and host, hides the path and query (where webhook tokens live).
    static func redactWebhook(_ raw: String) -> String {
        guard let url = URL(string: raw), let scheme = url.scheme, let host = url.host else { return "<redacted>" }
        let port = url.port.map { ":\($0)" } ?? ""
        return "\(scheme)://\(host)\(port)/…"
    }

    private func format(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(value)
    }
}
