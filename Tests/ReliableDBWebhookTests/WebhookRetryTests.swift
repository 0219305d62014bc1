import Foundation
import Testing

@testable import ReliableDBWebhook

/// The retry rules on their own, without a network.
@Suite("Webhook retry rules")
struct WebhookRetryTests {
    @Test("Retry-After as delta-seconds")
    func retryAfterSeconds() {
        #expect(WebhookRetry.retryAfter("1", responseDate: nil) == .seconds(1))
        #expect(WebhookRetry.retryAfter(" 120 ", responseDate: nil) == .seconds(120))
        #expect(WebhookRetry.retryAfter("0", responseDate: nil) == .zero)
        #expect(WebhookRetry.retryAfter("99999999999999999999", responseDate: nil) == .seconds(999_999_999))
    }

    @Test("Retry-After as an HTTP date, measured from the response's Date header")
    func retryAfterDate() {
        let responseDate = "Wed, 21 Oct 2015 07:27:30 GMT"
        #expect(WebhookRetry.retryAfter("Wed, 21 Oct 2015 07:28:00 GMT", responseDate: responseDate) == .seconds(30))
        // The obsolete RFC 850 and asctime forms.
        #expect(
            WebhookRetry.retryAfter("Wednesday, 21-Oct-15 07:28:00 GMT", responseDate: responseDate) == .seconds(30)
        )
        #expect(WebhookRetry.retryAfter("Wed Oct 21 07:28:00 2015", responseDate: responseDate) == .seconds(30))
        // Without a Date header: from now.
        let now = Date(timeIntervalSince1970: 1_445_412_470)  // 07:27:50
        #expect(WebhookRetry.retryAfter("Wed, 21 Oct 2015 07:28:00 GMT", responseDate: nil, now: now) == .seconds(10))
        // A date in the past means "now".
        #expect(WebhookRetry.retryAfter("Wed, 21 Oct 2015 07:00:00 GMT", responseDate: responseDate) == .zero)
    }

    @Test("unparseable Retry-After values are ignored", arguments: ["", "-5", "1.5", "soon", "Wed, 99 Foo 2015"])
    func retryAfterInvalid(value: String) {
        #expect(WebhookRetry.retryAfter(value, responseDate: nil) == nil)
    }

    @Test("the backoff ceiling doubles per attempt up to maxBackoff")
    func backoffCeiling() {
        let ceilings = (1...8).map {
            WebhookRetry.backoffCeiling(failedAttempt: $0, initial: .milliseconds(500), max: .seconds(30))
        }
        #expect(
            ceilings == [
                .milliseconds(500), .seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(16), .seconds(30),
                .seconds(30),
            ]
        )
        #expect(
            WebhookRetry.backoffCeiling(failedAttempt: 10_000, initial: .seconds(1), max: .seconds(30)) == .seconds(30)
        )
    }

    @Test("full jitter stays within [0, ceiling] and spreads over it")
    func fullJitter() {
        let ceiling = Duration.milliseconds(100)
        let samples = (0..<1_000).map { _ in WebhookRetry.jittered(ceiling) }
        #expect(samples.allSatisfy { $0 >= .zero && $0 <= ceiling })
        #expect(samples.contains { $0 < .milliseconds(25) })
        #expect(samples.contains { $0 > .milliseconds(75) })
        #expect(WebhookRetry.jittered(.zero) == .zero)
    }

    @Test("status classification: 2xx delivered; 408, 429, 5xx retried; other 4xx final")
    func classification() {
        for status in [200, 201, 202, 204] {
            #expect(WebhookAttemptOutcome.classify(status: status, retryAfter: nil) == .delivered)
        }
        for status in [408, 429, 500, 502, 503, 504] {
            #expect(
                WebhookAttemptOutcome.classify(status: status, retryAfter: nil)
                    == .retryable(reason: "HTTP \(status)", retryAfter: nil)
            )
        }
        for status in [301, 400, 401, 403, 404, 410, 413, 422] {
            #expect(
                WebhookAttemptOutcome.classify(status: status, retryAfter: nil) == .permanent(reason: "HTTP \(status)")
            )
        }
    }

    @Test("numbers in payloads: integers without .0, at most two decimals")
    func numberFormatting() {
        #expect(formatNumber(92) == "92")
        #expect(formatNumber(92.345) == "92.35")
        #expect(formatNumber(0.1 + 0.2) == "0.3")
        #expect(formatNumber(-3) == "-3")
        #expect(formatNumber(.infinity) == "inf")
    }
}
