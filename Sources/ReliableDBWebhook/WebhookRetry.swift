import Foundation

/// What one HTTP attempt means for the notification.
enum WebhookAttemptOutcome: Equatable {
    case delivered
    /// Worth another attempt: 5xx, 408, 429, a timeout or a transport error. `retryAfter` is the
    /// receiver's own `Retry-After`, which replaces our backoff.
    case retryable(reason: String, retryAfter: Duration?)
    /// Another attempt cannot succeed: a 4xx other than 408/429, or a URL the client rejects.
    case permanent(reason: String)

    /// Classifies an HTTP status. 408 and 429 are the 4xx codes that say "later", not "never".
    static func classify(status: Int, retryAfter: Duration?) -> WebhookAttemptOutcome {
        switch status {
        case 200..<300:
            return .delivered
        case 408, 429, 500..<600:
            return .retryable(reason: "HTTP \(status)", retryAfter: retryAfter)
        default:
            return .permanent(reason: "HTTP \(status)")
        }
    }
}

/// Exponential backoff with full jitter and `Retry-After` parsing, kept free of I/O so the rules
/// can be tested directly.
enum WebhookRetry {
    /// The upper bound of the sleep before attempt `failedAttempt + 1`:
    /// `min(maxBackoff, initialBackoff × 2^(failedAttempt−1))`.
    static func backoffCeiling(failedAttempt: Int, initial: Duration, max: Duration) -> Duration {
        var ceiling = initial
        var doublings = Swift.max(0, failedAttempt - 1)
        // Doubling until the cap is reached avoids overflowing on large attempt counts.
        while doublings > 0, ceiling < max {
            ceiling *= 2
            doublings -= 1
        }
        return Swift.min(ceiling, max)
    }

    /// Full jitter: uniform in `[0, ceiling]`. Spreading retries over the whole window keeps many
    /// senders that failed together from retrying together.
    static func jittered(_ ceiling: Duration) -> Duration {
        let nanoseconds = ceiling.nanosecondsClamped
        guard nanoseconds > 0 else { return .zero }
        return .nanoseconds(Int64.random(in: 0...nanoseconds))
    }

    /// Parses a `Retry-After` value: delta-seconds (`120`) or an HTTP date. A date is measured from
    /// the response's own `Date` header when present, so a skewed local clock does not stretch or
    /// cut the wait; otherwise from `now`. Returns nil for values that are neither.
    static func retryAfter(_ header: String, responseDate: String?, now: Date = Date()) -> Duration? {
        let value = header.trimmingCharacters(in: .whitespaces)
        if !value.isEmpty, value.allSatisfy(\.isASCII), value.allSatisfy(\.isNumber) {
            // Any wait this long is capped at maxBackoff anyway; clamping the digits avoids overflow.
            return .seconds(value.count > 9 ? 999_999_999 : (Int64(value) ?? 0))
        }
        guard let date = parseHTTPDate(value) else { return nil }
        let reference = responseDate.flatMap(parseHTTPDate) ?? now
        let seconds = date.timeIntervalSince(reference)
        return seconds > 0 ? .milliseconds(Int64((seconds * 1000).rounded())) : .zero
    }

    /// IMF-fixdate plus the two obsolete forms RFC 9110 says recipients must accept.
    static func parseHTTPDate(_ text: String) -> Date? {
        let formats = [
            "EEE, dd MMM yyyy HH:mm:ss zzz",  // Sun, 06 Nov 1994 08:49:37 GMT
            "EEEE, dd-MMM-yy HH:mm:ss zzz",  // Sunday, 06-Nov-94 08:49:37 GMT
            "EEE MMM d HH:mm:ss yyyy",  // Sun Nov  6 08:49:37 1994
        ]
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        // asctime pads single-digit days with a second space.
        let collapsed = trimmed.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        for format in formats {
            // A formatter per call: this runs only for a 429/503 that carries a date.
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "GMT")
            formatter.dateFormat = format
            if let date = formatter.date(from: collapsed) {
                return date
            }
        }
        return nil
    }
}
