import Configuration
import Foundation
import Logging
import ReliableDB
import ReliableDBWebhook
import Testing

/// `DB_ALERT_WEBHOOK_URL` and `DB_ALERT_WEBHOOK_FORMAT`, read by the module that posts the payloads.
@Suite("Webhook configuration")
struct WebhookConfigurationTests {
    static let slackURL = "https://hooks.slack.com/services/T000/B000/SECRETTOKEN"

    func load(
        _ environment: [String: String],
        dotEnv: String? = nil
    ) async throws(ConfigurationError) -> WebhookConfiguration? {
        guard let dotEnv else { return try await WebhookConfiguration.fromEnvironment(environment, dotEnvPath: nil) }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("rdb-hook-\(UUID().uuidString).env")
            .path
        try? dotEnv.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try await WebhookConfiguration.fromEnvironment(environment, dotEnvPath: path)
    }

    @Test func noURLMeansNoWebhookEvenWithAFormat() async throws {
        #expect(try await load([:]) == nil)
        #expect(try await load(["DB_ALERT_WEBHOOK_URL": " ", "DB_ALERT_WEBHOOK_FORMAT": "alertmanager"]) == nil)
    }

    @Test(arguments: [
        (nil, WebhookFormat.slack), ("slack", .slack), ("alertmanager", .alertmanager), ("AlertManager", .alertmanager),
    ])
    func theURLAndTheFormatAreRead(format: String?, expected: WebhookFormat) async throws {
        var environment = ["DB_ALERT_WEBHOOK_URL": Self.slackURL]
        environment["DB_ALERT_WEBHOOK_FORMAT"] = format
        let webhook = try #require(try await load(environment))
        #expect(webhook.url.value == Self.slackURL)
        #expect(webhook.url.description == "https://hooks.slack.com/…", "only the scheme and host are shown")
        #expect(webhook.format == expected)
    }

    @Test func everyProblemAtOnceAndTheTokenInNone() async {
        do {
            _ = try await load([
                "DB_ALERT_WEBHOOK_URL": "hooks.slack.com/SECRETTOKEN", "DB_ALERT_WEBHOOK_FORMAT": "pagerduty",
            ])
            Issue.record("accepted a URL without a scheme and an unknown format")
        } catch {
            #expect(error.problems.map(\.variable) == ["DB_ALERT_WEBHOOK_URL", "DB_ALERT_WEBHOOK_FORMAT"])
            #expect(error.problems[0].expected.contains("http:// or https://"))
            #expect(error.problems[1].expected == "one of slack, alertmanager")
            #expect(!error.description.contains("SECRETTOKEN"))
        }
    }

    @Test func aDotEnvFileFillsInAndItsMisreadLinesAreReportedByNumber() async throws {
        let webhook = try await load(
            ["DB_ALERT_WEBHOOK_FORMAT": "alertmanager"],
            dotEnv: "DB_ALERT_WEBHOOK_URL=\(Self.slackURL)\nDB_ALERT_WEBHOOK_FORMAT=slack\n"
        )
        #expect(webhook?.url.value == Self.slackURL, "the file fills in what the environment does not set")
        #expect(webhook?.format == .alertmanager, "the environment wins")
        do {
            _ = try await load([:], dotEnv: "DB_ALERT_WEBHOOK_URL=\"\(Self.slackURL)\"\n")
            Issue.record("a quoted URL would be read with its quotes")
        } catch {
            #expect(error.problems.map(\.value) == ["line 1"], "the line, once, not also the value it misreads")
            #expect(!error.description.contains("SECRETTOKEN"))
        }
    }

    @Test func aConfigReaderGivesTheSameAsTheEnvironment() async throws {
        let environment = ["DB_ALERT_WEBHOOK_URL": Self.slackURL, "DB_ALERT_WEBHOOK_FORMAT": "alertmanager"]
        let reader = ConfigReader(provider: EnvironmentVariablesProvider(environmentVariables: environment))
        #expect(try WebhookConfiguration(config: reader) == (try await load(environment)))
        let empty = ConfigReader(provider: EnvironmentVariablesProvider(environmentVariables: [:]))
        #expect(try WebhookConfiguration(config: empty) == nil)
    }

    /// Alertmanager ends an alert at its `endsAt`, four repeats ahead: its sink asks the monitor to
    /// repeat every minute. Chat keeps every message and asks for nothing.
    @Test func theSinkAsksForTheRepeatIntervalItsFormatNeeds() {
        #expect(WebhookFormat.alertmanager.repeatInterval == .seconds(60))
        #expect(WebhookFormat.slack.repeatInterval == nil)
        let url = Secret(Self.slackURL, redacted: "https://hooks.slack.com/…")
        let logger = Logger(label: "test")
        #expect(WebhookAlertSink(url: url, format: .alertmanager, logger: logger).repeatInterval == .seconds(60))
        #expect(WebhookAlertSink(url: url, logger: logger).repeatInterval == nil)
    }
}
