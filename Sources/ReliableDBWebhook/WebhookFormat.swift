import Foundation
import ReliableDB

/// The JSON body a webhook receiver expects.
///
/// Slack is the default, since an incoming-webhook URL is all it needs; the Alertmanager shape
/// lets the same sink feed an Alertmanager (or anything that speaks its API v2, such as Grafana
/// OnCall) so routing, silencing and paging stay in the tool operators already use. An Alertmanager
/// alert carries `endsAt` always: in the future while firing (the monitor re-sends it before then),
/// now when resolved, so it stays active exactly as long as the condition holds.
public enum WebhookFormat: String, Sendable, CaseIterable {
    /// A Slack incoming-webhook message (the default).
    case slack
    /// An Alertmanager API v2 `POST /api/v2/alerts` body.
    case alertmanager

    /// The format `text` names (any case), or the problem of `variable` (the variable or flag it
    /// came from) naming the formats there are.
    package static func named(_ text: String, in variable: String) -> Result<Self, ConfigurationError.Problem> {
        if let known = Self(rawValue: text.lowercased()) { return .success(known) }
        let names = allCases.map(\.rawValue).joined(separator: ", ")
        return .failure(.init(variable: variable, value: text, expected: "one of \(names)"))
    }

    /// How often a firing alert must be sent again for the receiver to keep it. Alertmanager ends
    /// an alert at its `endsAt` (four repeats ahead), so a minute, as Prometheus re-sends; chat
    /// keeps every message, so no need (the monitor's hour applies).
    public var repeatInterval: Duration? {
        switch self {
        case .slack: nil
        case .alertmanager: .seconds(60)
        }
    }

    /// The request body for `notification` in this format.
    public func body(for notification: AlertNotification) throws -> Data {
        let encoder = JSONEncoder()
        // Stable key order keeps bodies byte-identical across retries and easy to diff in tests.
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        switch self {
        case .slack:
            return try encoder.encode(SlackMessage(notification))
        case .alertmanager:
            return try encoder.encode([AlertmanagerAlert(notification)])
        }
    }
}

// MARK: - Slack

/// Slack Block Kit message. Field texts are mrkdwn, so `&`, `<` and `>` are escaped: Slack would
/// otherwise read `<...>` in a summary as a link or mention.
struct SlackMessage: Encodable {
    struct Text: Encodable {
        var type: String
        var text: String

        static func plain(_ text: String) -> Text { Text(type: "plain_text", text: text) }
        static func mrkdwn(_ text: String) -> Text { Text(type: "mrkdwn", text: text) }
    }

    struct Block: Encodable {
        var type: String
        var text: Text?
        var fields: [Text]?
    }

    var text: String
    var blocks: [Block]

    init(_ notification: AlertNotification) {
        let resolved = notification.status == .resolved
        let state: String
        if resolved {
            state = "RESOLVED"
        } else {
            state = notification.isRepeat ? "FIRING (repeat)" : "FIRING"
        }
        let summary = Self.escape(notification.summary)
        text = "[\(state)] \(notification.severity.rawValue): \(summary)"

        var fields: [Text] = [
            .mrkdwn("*Status*\n\(resolved ? "resolved" : "firing")"),
            .mrkdwn("*Severity*\n\(notification.severity.rawValue)"),
            .mrkdwn(
                "*Value*\n\(formatNumber(notification.value)) (threshold \(formatNumber(notification.threshold)))"
            ),
            .mrkdwn("*Started*\n\(notification.startsAt.ISO8601Format())"),
        ]
        if let endsAt = notification.endsAt, resolved {
            fields.append(.mrkdwn("*Resolved*\n\(endsAt.ISO8601Format())"))
        }
        if let cause = notification.cause, !resolved {
            fields.append(.mrkdwn("*Cause*\n\(Self.escape(cause))"))
        }
        let place = ["instance", "db_host", "db_name", "db_path"].compactMap { notification.labels[$0] }
        if !place.isEmpty {
            fields.append(.mrkdwn("*Where*\n\(Self.escape(place.joined(separator: " · ")))"))
        }
        fields.append(.mrkdwn("*Fingerprint*\n`\(Self.escape(notification.fingerprint))`"))

        // Slack caps header text at 150 characters; the kind's raw value is short and bounded.
        let header = "\(resolved ? "Resolved" : "Firing"): \(notification.kind.rawValue)"
        blocks = [
            Block(type: "header", text: .plain(header)),
            Block(type: "section", text: .mrkdwn(summary), fields: fields),
        ]
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;")
            .replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
    }
}

// MARK: - Alertmanager

/// One alert in the Alertmanager API v2 shape. Annotation values are strings there, so numbers are
/// formatted. `endsAt` is in the future while firing (see ``AlertNotification/endsAt``), so
/// Alertmanager's `resolve_timeout` never ends an alert whose condition still holds.
struct AlertmanagerAlert: Encodable {
    var labels: [String: String]
    var annotations: [String: String]
    var startsAt: String
    var endsAt: String?

    init(_ notification: AlertNotification) {
        // The identifying labels win over same-named custom labels: Alertmanager groups and
        // deduplicates on them, and a stray `alertname` label must not merge unrelated alerts.
        var labels = notification.labels
        labels["alertname"] = notification.kind.rawValue
        labels["severity"] = notification.severity.rawValue
        labels["fingerprint"] = notification.fingerprint
        self.labels = labels
        annotations = [
            "summary": notification.summary,
            "value": formatNumber(notification.value),
            "threshold": formatNumber(notification.threshold),
        ]
        if let cause = notification.cause { annotations["cause"] = cause }
        startsAt = notification.startsAt.ISO8601Format()
        if notification.status == .resolved {
            endsAt = (notification.endsAt ?? Date()).ISO8601Format()
        } else {
            endsAt = notification.endsAt?.ISO8601Format()
        }
    }
}

/// `92` rather than `92.0`, and at most two decimals: values are percentages, milliseconds and
/// scores, read by people.
func formatNumber(_ value: Double) -> String {
    guard value.isFinite, abs(value) < 1e15 else { return String(value) }
    // Rounding first makes Double's shortest round-trip description print at most two decimals,
    // without a locale-dependent decimal separator.
    let rounded = (value * 100).rounded() / 100
    return rounded == rounded.rounded() ? String(Int64(rounded)) : String(rounded)
}
