import Configuration
import Foundation
import ReliableDB

/// Where alerts are posted and in what shape: `DB_ALERT_WEBHOOK_URL` and `DB_ALERT_WEBHOOK_FORMAT`.
///
/// The webhook module reads its own variables, from the same sources as
/// ``ReliableDB/ReliableDBConfiguration`` (the environment, then a `.env` file, or any
/// swift-configuration reader), and reports every problem of the two at once. To report them
/// together with the core variables' problems, read both and join the errors, as `reliabledb serve`
/// does.
public struct WebhookConfiguration: Sendable, Equatable {
    /// The variables this type reads.
    public static let variableNames = ["DB_ALERT_WEBHOOK_URL", "DB_ALERT_WEBHOOK_FORMAT"]

    /// The webhook URL, a secret: Slack and most receivers put the token in it, so only its scheme
    /// and host are ever shown.
    public var url: Secret<String>
    /// The payload shape; Slack by default.
    public var format: WebhookFormat

    public init(url: Secret<String>, format: WebhookFormat = .slack) {
        self.url = url
        self.format = format
    }

    /// Reads the webhook from `environment`, with the `.env` file at `dotEnvPath` (when it exists)
    /// filling in what the environment does not set, as `ReliableDBConfiguration.fromEnvironment`
    /// reads the core variables.
    ///
    /// - Returns: nil when `DB_ALERT_WEBHOOK_URL` is unset or empty (alerts are not posted).
    /// - Throws: every problem at once: a URL that is not http(s), an unknown format, a `.env`
    ///   line that would be misread. The URL never appears in it beyond its host.
    public static func fromEnvironment(
        _ environment: [String: String] = ProcessInfo.processInfo.environment,
        dotEnvPath: String? = ".env"
    ) async throws(ConfigurationError) -> WebhookConfiguration? {
        let source = await EnvironmentSource.open(
            environment,
            dotEnvPath: dotEnvPath,
            names: variableNames,
            secretNames: ["DB_ALERT_WEBHOOK_URL"]
        )
        do {
            return try parse(source.config, problems: source.problems)
        } catch {
            throw source.dropMisread(error)
        }
    }

    /// Reads the webhook through `config` (dotted keys: `db.alert.webhook.url`), with the same
    /// validation as ``fromEnvironment(_:dotEnvPath:)``; nil when no URL is set.
    public init?(config: ConfigReader) throws(ConfigurationError) {
        guard let configuration = try Self.parse(config, problems: []) else { return nil }
        self = configuration
    }

    private static func parse(
        _ config: ConfigReader,
        problems: [ConfigurationError.Problem]
    ) throws(ConfigurationError) -> WebhookConfiguration? {
        var reader = EnvironmentReader(
            values: config.values(of: variableNames, secrets: ["DB_ALERT_WEBHOOK_URL"])
        )
        let url = reader.webhookURL("DB_ALERT_WEBHOOK_URL")
        var format = WebhookFormat.slack
        if let name = reader.string("DB_ALERT_WEBHOOK_FORMAT") {
            switch WebhookFormat.named(name, in: "DB_ALERT_WEBHOOK_FORMAT") {
            case .success(let known): format = known
            case .failure(let problem): reader.problems.append(problem)
            }
        }
        let all = problems + reader.problems
        guard all.isEmpty else { throw ConfigurationError(problems: all) }
        return url.map { WebhookConfiguration(url: $0, format: format) }
    }
}
