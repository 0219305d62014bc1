import Configuration
import Foundation
import Testing

@testable import ReliableDB

@Suite("Configuration from the environment")
struct ConfigurationTests {
    func load(
        _ environment: [String: String],
        dotEnv: String? = nil
    ) async throws(ConfigurationError) -> ReliableDBConfiguration {
        guard let dotEnv else {
            return try await ReliableDBConfiguration.fromEnvironment(environment, dotEnvPath: nil)
        }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("reliabledb-\(UUID().uuidString).env")
            .path
        _ = FileManager.default.createFile(atPath: path, contents: Data(dotEnv.utf8))
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try await ReliableDBConfiguration.fromEnvironment(environment, dotEnvPath: path)
    }

    func problems(_ environment: [String: String]) async -> [ConfigurationError.Problem] {
        do {
            _ = try await load(environment)
            return []
        } catch {
            return error.problems
        }
    }

    @Test func defaultsAreTheDocumentedOnes() async throws {
        let config = try await load([:])
        #expect(config.database == .sqlite(path: "reliabledb.sqlite"))
        #expect(config.connectionLimit == 10)
        #expect(config.poolTimeout == .seconds(10))
        #expect(config.circuitBreakerEnabled && config.monitoringEnabled && config.timeoutsEnabled)
        #expect(config.circuitBreakerFailureThreshold == 5)
        #expect(config.circuitBreakerTimeout == .seconds(60))
        #expect(config.healthCheckInterval == .seconds(30))
        #expect(config.webhookURL == nil)
        #expect(
            config.alertThresholds
                == AlertThresholds(healthScore: 70, poolUtilization: 80, queryTime: .seconds(1), errorRate: 5)
        )
    }

    @Test func everyVariableIsReadInItsUnit() async throws {
        let config = try await load([
            "DATABASE_URL": "postgresql://app:s3cret@db.internal:5433/carmen",
            "DB_CONNECTION_LIMIT": "25",
            "DB_POOL_TIMEOUT": "2.5",
            "DB_CIRCUIT_BREAKER": "false",
            "DB_MONITORING": "off",
            "DB_TIMEOUTS": "0",
            "DB_CB_FAILURE_THRESHOLD": "3",
            "DB_CB_TIMEOUT": "30000",
            "DB_HEALTH_CHECK_INTERVAL": "5000",
            "DB_ALERT_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/XXXX",
            "DB_ALERT_HEALTH_SCORE_THRESHOLD": "80",
            "DB_ALERT_POOL_UTILIZATION_THRESHOLD": "70",
            "DB_ALERT_QUERY_TIME_THRESHOLD": "500",
            "DB_ALERT_ERROR_RATE_THRESHOLD": "2.5",
        ])
        guard case .postgres(let url) = config.database else {
            Issue.record("expected PostgreSQL")
            return
        }
        #expect(url.host == "db.internal")
        #expect(url.port == 5433)
        #expect(url.username == "app")
        #expect(url.password?.value == "s3cret")
        #expect(url.database == "carmen")
        #expect(config.connectionLimit == 25)
        #expect(config.poolTimeout == .milliseconds(2500))
        #expect(!config.circuitBreakerEnabled && !config.monitoringEnabled && !config.timeoutsEnabled)
        #expect(config.circuitBreakerFailureThreshold == 3)
        #expect(config.circuitBreakerTimeout == .seconds(30))
        #expect(config.healthCheckInterval == .seconds(5))
        #expect(config.webhookURL?.value == "https://hooks.slack.com/services/T000/B000/XXXX")
        #expect(
            config.alertThresholds
                == AlertThresholds(healthScore: 80, poolUtilization: 70, queryTime: .milliseconds(500), errorRate: 2.5)
        )
        let reliability = config.reliability
        #expect(reliability.circuitBreaker.failureThreshold == 3)
        #expect(reliability.circuitBreaker.timeout == .seconds(30))
        #expect(!reliability.timeouts.enabled)
        #expect(reliability.slowQueryThreshold == .milliseconds(500))
    }

    static let malformed: [(variable: String, value: String, expected: String)] = [
        ("DATABASE_URL", "mysql://root:hunter2@localhost/db", "postgres://"),
        ("DB_CONNECTION_LIMIT", "ten", "whole number from 1 to 1000"),
        ("DB_POOL_TIMEOUT", "-1", "seconds"),
        ("DB_CIRCUIT_BREAKER", "maybe", "true or false"),
        ("DB_MONITORING", "enabled", "true or false"),
        ("DB_TIMEOUTS", "2", "true or false"),
        ("DB_CB_FAILURE_THRESHOLD", "0", "whole number from 1"),
        ("DB_CB_TIMEOUT", "1m", "milliseconds"),
        ("DB_HEALTH_CHECK_INTERVAL", "10", "milliseconds from 100"),
        ("DB_ALERT_WEBHOOK_URL", "ftp://example.com/hook", "http:// or https://"),
        ("DB_ALERT_HEALTH_SCORE_THRESHOLD", "120", "from 0 to 100"),
        ("DB_ALERT_POOL_UTILIZATION_THRESHOLD", "eighty", "from 0 to 100"),
        ("DB_ALERT_QUERY_TIME_THRESHOLD", "0", "milliseconds from 1"),
        ("DB_ALERT_ERROR_RATE_THRESHOLD", "NaN", "from 0 to 100"),
        ("DB_LOAD_SHEDDING", "sometimes", "true or false"),
        ("DB_MAX_CONCURRENT_OPERATIONS", "0", "whole number from 1 to 100000"),
        ("DB_LOAD_SHEDDING_ADAPTIVE", "yes please", "true or false"),
        ("DB_ALERT_SERVER_CONNECTIONS_THRESHOLD", "101", "from 0 to 100"),
        ("DB_PATRONI_URLS", "http://10.0.0.1:8008,10.0.0.2:8008", "comma-separated http:// or https:// URLs"),
        ("DB_PASSWORD_FILE", "/nonexistent/secret", "the path of a readable file"),
        ("DB_LEAK_DETECTION_THRESHOLD", "5s", "milliseconds"),
        ("DB_MIN_IDLE_CONNECTIONS", "11", "whole number from 0 to 10"),
        ("DB_READY_AFTER_WARM_UP", "when warm", "true or false"),
    ]

    @Test(arguments: malformed)
    func aMalformedValueNamesTheVariableAndWhatWasExpected(variable: String, value: String, expected: String) async {
        let found = await problems([variable: value])
        #expect(found.count == 1)
        #expect(found.first?.variable == variable)
        #expect(found.first?.expected.contains(expected) == true, "\(found.first?.expected ?? "")")
    }

    @Test func patroniURLsAreAListOfAPIsAndCredentialsInABadOneAreNotShown() async throws {
        #expect(try await load([:]).patroniURLs.isEmpty)
        let config = try await load(["DB_PATRONI_URLS": "http://10.0.0.1:8008, https://pg-2.internal:8008"])
        #expect(config.patroniURLs.map(\.absoluteString) == ["http://10.0.0.1:8008", "https://pg-2.internal:8008"])
        for bad in ["http://10.0.0.1:8008,", "patroni:8008", "ftp://admin:hunter2@10.0.0.1:8008"] {
            let found = await problems(["DB_PATRONI_URLS": bad])
            #expect(found.map(\.variable) == ["DB_PATRONI_URLS"], "\(bad)")
            #expect(!"\(found)".contains("hunter2"))
        }
    }

    @Test func aPasswordFileIsAReadableFileNamedByPathNeverByContent() async throws {
        #expect(try await load([:]).passwordFile == nil)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("rdb-pw-\(UUID().uuidString)").path
        try "s3cret\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try await load(["DB_PASSWORD_FILE": path]).passwordFile == path)
        let directory = await problems(["DB_PASSWORD_FILE": FileManager.default.temporaryDirectory.path])
        #expect(directory.map(\.variable) == ["DB_PASSWORD_FILE"], "a directory is not a password file")
    }

    @Test func leakDetectionIsOffUnlessAThresholdIsGiven() async throws {
        #expect(try await load([:]).leakDetectionThreshold == nil)
        #expect(try await load(["DB_LEAK_DETECTION_THRESHOLD": "0"]).leakDetectionThreshold == nil)
        #expect(try await load(["DB_LEAK_DETECTION_THRESHOLD": "2000"]).leakDetectionThreshold == .seconds(2))
        #expect(
            await problems(["DB_LEAK_DETECTION_THRESHOLD": "-1"]).map(\.variable) == ["DB_LEAK_DETECTION_THRESHOLD"]
        )
    }

    @Test func everyVariableIsCovered() {
        #expect(
            Set(Self.malformed.map(\.variable)).isSuperset(of: ReliableDBConfiguration.variableNames),
            "every core variable"
        )
        let loadShedding = ReliableDBConfiguration.additionalVariableNames.filter {
            $0.contains("LOAD_SHEDDING") || $0.contains("CONCURRENT")
        }
        #expect(Set(Self.malformed.map(\.variable)).isSuperset(of: loadShedding))
    }

    @Test func loadSheddingIsOffUnlessTurnedOnAndDefaultsToThePoolSize() async throws {
        #expect(try await load([:]).reliability.loadShedding.enabled == false)
        let on = try await load(["DB_LOAD_SHEDDING": "true", "DB_CONNECTION_LIMIT": "12"]).reliability.loadShedding
        #expect(on.enabled && on.maxConcurrent == 12 && on.adaptive?.maxLimit == 12)
        let large = try await load(["DB_LOAD_SHEDDING": "true", "DB_MAX_CONCURRENT_OPERATIONS": "1000"])
        #expect(large.reliability.loadShedding.adaptive?.maxLimit == 1000, "the adaptive limit may reach the cap")
        #expect(large.reliability.validationProblems.isEmpty)
        let one = try await load(["DB_LOAD_SHEDDING": "true", "DB_MAX_CONCURRENT_OPERATIONS": "1"])
        #expect(one.reliability.validationProblems.isEmpty, "\(one.reliability.validationProblems)")
        let fixed = try await load([
            "DB_LOAD_SHEDDING": "1", "DB_MAX_CONCURRENT_OPERATIONS": "100000", "DB_LOAD_SHEDDING_ADAPTIVE": "false",
        ]).reliability.loadShedding
        #expect(fixed.maxConcurrent == 100_000 && fixed.adaptive == nil)
    }

    @Test func allProblemsAreReportedAtOnce() async {
        var environment: [String: String] = [:]
        for entry in Self.malformed { environment[entry.variable] = entry.value }
        let found = await problems(environment)
        #expect(Set(found.map(\.variable)) == Set(Self.malformed.map(\.variable)))
    }

    @Test func secretsNeverAppearInErrors() async {
        let error = ConfigurationError(
            problems: await problems([
                "DATABASE_URL": "mysql://root:hunter2@localhost/db",
                "DB_ALERT_WEBHOOK_URL": "hooks.slack.com/services/T000/B000/SECRETTOKEN",
            ])
        )
        #expect(error.problems.count == 2)
        #expect(!error.description.contains("hunter2"))
        #expect(!error.description.contains("SECRETTOKEN"))
        #expect(error.description.contains("mysql://root:***@localhost/db"))
    }

    @Test func secretsAreRedactedWhenPrinted() async throws {
        let config = try await load([
            "DATABASE_URL": "postgres://app:p%40ss@db/carmen",
            "DB_ALERT_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/SECRETTOKEN",
        ])
        let printed = "\(config)"
        #expect(!printed.contains("p%40ss"))
        #expect(!printed.contains("SECRETTOKEN"))
        #expect(config.database.description == "postgres://app:***@db:5432/carmen?sslmode=prefer")
        #expect(config.webhookURL?.description == "https://hooks.slack.com/…")
    }

    @Test(arguments: [
        ("file:data/app.sqlite", "data/app.sqlite"),
        ("sqlite:/var/lib/app.db", "/var/lib/app.db"),
        ("sqlite:///var/lib/app.db", "/var/lib/app.db"),
    ])
    func sqliteURLsSelectTheEmbeddedBackend(url: String, path: String) async throws {
        #expect(try await load(["DATABASE_URL": url]).database == .sqlite(path: path))
    }

    @Test func inMemorySQLiteIsRejectedWithAReason() async {
        let found = await problems(["DATABASE_URL": "sqlite::memory:"])
        #expect(found.first?.expected.contains("WAL") == true)
    }

    @Test func dotEnvFillsInWhatTheEnvironmentDoesNotSet() async throws {
        let config = try await load(
            ["DB_CONNECTION_LIMIT": "7"],
            dotEnv: """
                # comment
                DB_CONNECTION_LIMIT=3
                  DB_CB_FAILURE_THRESHOLD = 9
                DB_ALERT_WEBHOOK_URL=https://example.com/hook?a=b
                export OTHER_APP_SETTING="not ours, not checked"
                DB_POOL_TIMEOUT=4\r

                """
        )
        #expect(config.connectionLimit == 7, "the process environment wins")
        #expect(config.circuitBreakerFailureThreshold == 9)
        #expect(config.webhookURL?.value == "https://example.com/hook?a=b", "only the first = separates")
        #expect(config.poolTimeout == .seconds(4))
    }

    /// Lines swift-configuration's reader would skip or misread are problems, with their line
    /// number and never their value.
    @Test func dotEnvLinesThatWouldBeLostAreReportedWithTheirLineNumber() async {
        do {
            _ = try await load(
                [:],
                dotEnv: """
                    DB_CONNECTION_LIMIT=5
                    not a pair
                    DATABASE_URL="postgres://app:hunter2@db/erp"
                    export DB_TIMEOUTS=false
                    DB_POOL_TIMEOUT=4 # seconds
                    DB_CB_TIMEOUT=fast
                    """
            )
            Issue.record("expected errors")
        } catch {
            #expect(error.problems.map(\.value) == ["line 2", "line 3", "line 4", "line 5", "fast"])
            #expect(error.problems[1].expected.contains("without quotes"))
            #expect(error.problems[2].expected.contains("without `export`"))
            #expect(error.problems[3].expected.contains("comment on its own line"))
            #expect(!error.description.contains("hunter2"))
        }
    }

    @Test func emptyValuesCountAsUnset() async throws {
        let config = try await load(["DB_ALERT_WEBHOOK_URL": "", "DB_CONNECTION_LIMIT": " "])
        #expect(config.webhookURL == nil)
        #expect(config.connectionLimit == 10)
    }
}

/// The same variables read through swift-configuration.
@Suite("Configuration through swift-configuration")
struct ConfigReaderConfigurationTests {
    static let environment = [
        "DATABASE_URL": "postgres://app:s3cret-pw@db.internal:6432/erp?sslmode=require",
        "DB_CONNECTION_LIMIT": "25",
        "DB_POOL_TIMEOUT": "3",
        "DB_CB_TIMEOUT": "1500",
        "DB_ALERT_WEBHOOK_FORMAT": "alertmanager",
        "DB_HEALTH_AUTH_TOKEN": "token-123",
    ]

    @Test func environmentVariablesThroughAConfigReaderGiveTheSameConfiguration() async throws {
        let reader = ConfigReader(provider: EnvironmentVariablesProvider(environmentVariables: Self.environment))
        let viaReader = try ReliableDBConfiguration(config: reader)
        let viaEnvironment = try await ReliableDBConfiguration.fromEnvironment(Self.environment, dotEnvPath: nil)
        #expect(viaReader == viaEnvironment)
        #expect(viaReader.connectionLimit == 25)
        #expect(viaReader.webhookFormatName == "alertmanager", "kept for the deprecated alertWebhookFormat")
    }

    @Test func aDotEnvFileThroughTheProvidersEnvironmentFilePath() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("rdb-\(UUID().uuidString).env").path
        try "DB_CONNECTION_LIMIT=7\nDB_TIMEOUTS=false\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let reader = ConfigReader(providers: [
            EnvironmentVariablesProvider(environmentVariables: ["DB_CONNECTION_LIMIT": "9"]),
            try await EnvironmentVariablesProvider(environmentFilePath: .init(path)),
        ])
        let configuration = try ReliableDBConfiguration(config: reader)
        #expect(configuration.connectionLimit == 9, "the environment wins over the file")
        #expect(configuration.timeoutsEnabled == false, "the file fills in the rest")
    }

    @Test func everyProblemAtOnceAndNoSecretInTheError() {
        var environment = Self.environment
        environment["DATABASE_URL"] = "mysql://app:s3cret-pw@db/erp"
        environment["DB_CONNECTION_LIMIT"] = "zero"
        environment["DB_HEALTH_CHECK_INTERVAL"] = "5"
        let reader = ConfigReader(provider: EnvironmentVariablesProvider(environmentVariables: environment))
        do {
            _ = try ReliableDBConfiguration(config: reader)
            Issue.record("accepted three bad values")
        } catch {
            #expect(
                error.problems.map(\.variable).sorted() == [
                    "DATABASE_URL", "DB_CONNECTION_LIMIT", "DB_HEALTH_CHECK_INTERVAL",
                ]
            )
            #expect(!error.description.contains("s3cret-pw"))
        }
    }

    @Test func keysAreDottedAndMapBackToTheVariableNames() {
        #expect(ReliableDBConfiguration.configKey(for: "DB_CONNECTION_LIMIT") == ["db", "connection", "limit"])
        #expect(ReliableDBConfiguration.configKey(for: "DATABASE_URL") == ["database", "url"])
    }
}
