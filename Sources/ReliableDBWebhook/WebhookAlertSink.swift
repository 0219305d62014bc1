import AsyncHTTPClient
import CoreMetrics
import Foundation
import Logging
import ReliableDB
import Synchronization

/// Posts alert notifications to a webhook (Slack incoming webhook by default) from a background
/// queue, so raising an alert never waits on the network.
///
/// ``deliver(_:)`` only puts the notification in a bounded in-memory queue and returns; ``run()``
/// takes them out one at a time and posts them with AsyncHTTPClient, retrying 5xx, 408, 429 and
/// transport errors with exponential backoff and full jitter (a `Retry-After` on 429/503 replaces
/// the backoff). When the receiver is slow or down the queue fills up and the *oldest*
/// notifications are dropped and counted: the newest say best what is happening now, and memory
/// stays bounded however long the outage lasts.
///
/// Run the sender for as long as alerts may be raised, in a task of your own:
///
/// ```swift
/// let webhook = try await WebhookConfiguration.fromEnvironment()!
/// let sink = WebhookAlertSink(url: webhook.url, format: webhook.format, logger: logger)
/// let sender = Task { await sink.run() }
/// // ... on shutdown:
/// sink.finish()          // stop accepting, let run() send what is queued and return
/// await sender.value     // or sender.cancel() to stop at once
/// ```
///
/// or in a swift-service-lifecycle `ServiceGroup` through a small wrapper:
///
/// ```swift
/// struct WebhookSinkService: Service {
///     let sink: WebhookAlertSink
///     func run() async throws {
///         await withGracefulShutdownHandler { await sink.run() } onGracefulShutdown: { sink.finish() }
///     }
/// }
/// ```
///
/// The webhook URL carries the credential (Slack puts the token in the path), so it is a
/// ``Secret``: logs and error descriptions only ever show `url.redacted`. The sink does not pass
/// its logger to AsyncHTTPClient for the same reason.
public final class WebhookAlertSink: AlertSink {
    /// Counts since the sink was created. Every notification handed to ``deliver(_:)`` is counted in
    /// `enqueued` and ends up in exactly one of `sent`, `failed` or `dropped`, unless it is still
    /// queued or in flight (or was abandoned when ``run()`` was cancelled).
    public struct Statistics: Sendable, Equatable, CustomStringConvertible {
        /// Notifications handed to ``WebhookAlertSink/deliver(_:)``.
        public var enqueued: Int
        /// Notifications the receiver accepted with a 2xx.
        public var sent: Int
        /// Notifications given up on: a non-retryable answer, or still failing after `maxAttempts`.
        public var failed: Int
        /// Notifications pushed out of the full queue (the oldest go first), or delivered after
        /// ``WebhookAlertSink/finish()``.
        public var dropped: Int
        /// Attempts made after a first one failed, across all notifications.
        public var retries: Int

        public init(enqueued: Int = 0, sent: Int = 0, failed: Int = 0, dropped: Int = 0, retries: Int = 0) {
            self.enqueued = enqueued
            self.sent = sent
            self.failed = failed
            self.dropped = dropped
            self.retries = retries
        }

        public var description: String {
            "enqueued=\(enqueued) sent=\(sent) failed=\(failed) dropped=\(dropped) retries=\(retries)"
        }
    }

    /// The swift-metrics counters, present only when a factory was passed in (never a global).
    private struct Instruments: Sendable {
        let sent: Counter
        let failed: Counter
        let dropped: Counter
        let retries: Counter

        init(factory: any MetricsFactory) {
            sent = Counter(label: "db_alerts_sent_total", dimensions: [], factory: factory)
            failed = Counter(label: "db_alerts_failed_total", dimensions: [], factory: factory)
            dropped = Counter(label: "db_alerts_dropped_total", dimensions: [], factory: factory)
            retries = Counter(label: "db_alert_delivery_retries_total", dimensions: [], factory: factory)
        }
    }

    private struct State {
        var statistics = Statistics()
        var started = false
    }

    /// The payload shape posted to the webhook.
    public let format: WebhookFormat
    /// How many notifications may wait for the sender before the oldest is dropped.
    public let queueCapacity: Int
    /// Attempts per notification, the first included.
    public let maxAttempts: Int

    private let url: Secret<String>
    private let httpClient: HTTPClient
    private let requestTimeout: Duration
    private let initialBackoff: Duration
    private let maxBackoff: Duration
    private let clock: any ReliabilityClock
    private let logger: Logger
    private let instruments: Instruments?
    private let queue: AsyncStream<AlertNotification>
    private let queueInput: AsyncStream<AlertNotification>.Continuation
    private let state = Mutex(State())

    /// Creates a sink; nothing is sent until ``run()`` runs.
    ///
    /// - Parameters:
    ///   - url: The webhook URL. Only `url.redacted` is ever logged.
    ///   - format: The payload shape; Slack by default.
    ///   - httpClient: The client to post with; the process-wide shared one by default.
    ///   - queueCapacity: Notifications that may wait before the oldest is dropped (at least 1).
    ///   - requestTimeout: Limit for one attempt, connecting included.
    ///   - maxAttempts: Attempts per notification, the first included (at least 1).
    ///   - initialBackoff: Ceiling of the first jittered retry delay; it doubles per attempt.
    ///   - maxBackoff: Ceiling of any retry delay, `Retry-After` included.
    ///   - clock: Where retry delays are slept; a `ManualClock` in tests.
    ///   - metricsFactory: Where the `db_alert*` counters go; none when nil.
    ///   - logger: Receives start/stop, retries, failures and drops, with the URL redacted.
    public init(
        url: Secret<String>,
        format: WebhookFormat = .slack,
        httpClient: HTTPClient = .shared,
        queueCapacity: Int = 256,
        requestTimeout: Duration = .seconds(5),
        maxAttempts: Int = 4,
        initialBackoff: Duration = .milliseconds(500),
        maxBackoff: Duration = .seconds(30),
        clock: any ReliabilityClock = SystemClock(),
        metricsFactory: (any MetricsFactory)? = nil,
        logger: Logger
    ) {
        self.url = url
        self.format = format
        self.httpClient = httpClient
        self.queueCapacity = max(1, queueCapacity)
        self.requestTimeout = requestTimeout
        self.maxAttempts = max(1, maxAttempts)
        self.initialBackoff = max(.zero, initialBackoff)
        self.maxBackoff = max(.zero, maxBackoff)
        self.clock = clock
        var logger = logger
        logger[metadataKey: "webhook"] = "\(url.redacted)"
        self.logger = logger
        instruments = metricsFactory.map(Instruments.init(factory:))
        // bufferingNewest: when full, yield evicts the oldest element and reports it as dropped.
        (queue, queueInput) = AsyncStream.makeStream(
            of: AlertNotification.self,
            bufferingPolicy: .bufferingNewest(self.queueCapacity)
        )
    }

    /// Creates a sink in the payload shape of the deprecated core format type.
    @available(*, deprecated, message: "Pass a WebhookFormat (WebhookConfiguration reads it)")
    @_disfavoredOverload
    public convenience init(
        url: Secret<String>,
        format: AlertWebhookFormat,
        httpClient: HTTPClient = .shared,
        metricsFactory: (any MetricsFactory)? = nil,
        logger: Logger
    ) {
        self.init(
            url: url,
            format: WebhookFormat(rawValue: format.rawValue) ?? .slack,
            httpClient: httpClient,
            metricsFactory: metricsFactory,
            logger: logger
        )
    }

    /// The format's: a minute for Alertmanager, which expires alerts that are not repeated.
    public var repeatInterval: Duration? { format.repeatInterval }

    /// A snapshot of the counters.
    public var statistics: Statistics {
        state.withLock { $0.statistics }
    }

    /// Queues `notification` and returns at once: it never waits for the network or for room in
    /// the queue. When the queue is full the oldest queued notification is dropped.
    public func deliver(_ notification: AlertNotification) {
        // Counting under the same lock as the yield keeps `enqueued` ahead of what the sender
        // reports, so a snapshot never shows more sent than enqueued.
        let dropped: Int? = state.withLock { state in
            state.statistics.enqueued += 1
            switch queueInput.yield(notification) {
            case .enqueued:
                return nil
            case .dropped, .terminated:
                state.statistics.dropped += 1
                return state.statistics.dropped
            @unknown default:
                return nil
            }
        }
        guard let dropped else { return }
        instruments?.dropped.increment()
        // The first drop and then every 100th: an outage must not turn into a log flood.
        if dropped == 1 || dropped % 100 == 0 {
            logger.warning(
                "Alert webhook queue full or closed; dropped the oldest notification",
                metadata: ["dropped_total": "\(dropped)", "queue_capacity": "\(queueCapacity)"]
            )
        }
    }

    /// Stops accepting notifications. ``run()`` still sends what is queued, then returns; later
    /// ``deliver(_:)`` calls count as dropped. Use it for a graceful shutdown.
    public func finish() {
        queueInput.finish()
    }

    /// Sends queued notifications until the task is cancelled or ``finish()`` was called and the
    /// queue is empty.
    ///
    /// Run it once per sink (a second call returns at once). Cancelling the task stops at once:
    /// an attempt in flight is abandoned and counted as failed, queued notifications are lost.
    public func run() async {
        let first = state.withLock { state in
            defer { state.started = true }
            return !state.started
        }
        guard first else {
            logger.error("WebhookAlertSink.run() was called more than once; the extra call returns at once")
            return
        }
        logger.info("Alert webhook sender started", metadata: ["format": "\(format.rawValue)"])
        for await notification in queue {
            await send(notification)
        }
        logger.info("Alert webhook sender stopped", metadata: ["statistics": "\(statistics)"])
    }

    // MARK: - Sending

    private func send(_ notification: AlertNotification) async {
        var logger = logger
        logger[metadataKey: "alert.kind"] = "\(notification.kind.rawValue)"
        logger[metadataKey: "alert.status"] = "\(notification.status.rawValue)"
        logger[metadataKey: "alert.fingerprint"] = "\(notification.fingerprint)"

        let body: Data
        do {
            body = try format.body(for: notification)
        } catch {
            // The payloads hold only strings, so this is not expected; retrying could not help.
            recordFailure()
            logger.error("Could not encode the alert notification", metadata: ["error": "\(scrub("\(error)"))"])
            return
        }

        var attempt = 1
        while true {
            switch await post(body) {
            case .delivered:
                state.withLock { $0.statistics.sent += 1 }
                instruments?.sent.increment()
                logger.debug("Alert notification delivered", metadata: ["attempt": "\(attempt)"])
                return

            case .permanent(let reason):
                recordFailure()
                logger.error(
                    "Alert webhook rejected the notification; not retrying",
                    metadata: ["reason": "\(reason)", "attempt": "\(attempt)"]
                )
                return

            case .retryable(let reason, let retryAfter):
                guard attempt < maxAttempts, !Task.isCancelled else {
                    recordFailure()
                    logger.error(
                        "Alert notification not delivered; giving up",
                        metadata: ["reason": "\(reason)", "attempts": "\(attempt)"]
                    )
                    return
                }
                let delay: Duration
                if let retryAfter {
                    delay = min(max(retryAfter, .zero), maxBackoff)
                } else {
                    let ceiling = WebhookRetry.backoffCeiling(
                        failedAttempt: attempt,
                        initial: initialBackoff,
                        max: maxBackoff
                    )
                    delay = WebhookRetry.jittered(ceiling)
                }
                state.withLock { $0.statistics.retries += 1 }
                instruments?.retries.increment()
                logger.warning(
                    "Alert webhook attempt failed; retrying",
                    metadata: [
                        "reason": "\(reason)", "attempt": "\(attempt)",
                        "retry_in_ms": "\(Int64(delay.milliseconds.rounded()))",
                    ]
                )
                do {
                    try await clock.sleep(for: delay)
                } catch {
                    recordFailure()
                    logger.info("Alert notification abandoned: the sender was cancelled")
                    return
                }
                attempt += 1
            }
        }
    }

    private func recordFailure() {
        state.withLock { $0.statistics.failed += 1 }
        instruments?.failed.increment()
    }

    /// One POST. Never throws: every outcome is classified for the retry loop.
    private func post(_ body: Data) async -> WebhookAttemptOutcome {
        var request = HTTPClientRequest(url: url.value)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "User-Agent", value: "ReliableDB-Webhook")
        request.body = .bytes(body)
        do {
            let response = try await httpClient.execute(
                request,
                timeout: .nanoseconds(requestTimeout.nanosecondsClamped)
            )
            let status = Int(response.status.code)
            var retryAfter: Duration?
            if status == 429 || status == 503, let header = response.headers.first(name: "Retry-After") {
                retryAfter = WebhookRetry.retryAfter(header, responseDate: response.headers.first(name: "Date"))
            }
            // Read and discard the body so the connection can be reused.
            _ = try? await response.body.collect(upTo: 64 * 1024)
            return .classify(status: status, retryAfter: retryAfter)
        } catch let error as HTTPClientError {
            // Configuration errors: the next attempt would fail the same way.
            let permanent: Set<String> = [
                "Invalid URL", "Empty host", "Empty scheme", "Unsupported scheme", "Already shutdown",
            ]
            if permanent.contains(error.shortDescription) {
                return .permanent(reason: error.shortDescription)
            }
            return .retryable(reason: error.shortDescription, retryAfter: nil)
        } catch {
            return .retryable(reason: scrub("\(error)"), retryAfter: nil)
        }
    }

    /// Removes the URL's secret parts (path, query, user info) from text that may quote it, such
    /// as an error description from a lower layer.
    private func scrub(_ text: String) -> String {
        var text = text.replacingOccurrences(of: url.value, with: url.redacted)
        guard let schemeEnd = url.value.range(of: "://") else { return text }
        let afterScheme = url.value[schemeEnd.upperBound...]
        let authority = afterScheme.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        if let at = authority.lastIndex(of: "@") {
            let userInfo = String(authority[..<at])
            if !userInfo.isEmpty { text = text.replacingOccurrences(of: userInfo, with: "…") }
        }
        let tail = String(afterScheme[authority.endIndex...])
        if tail.count > 1 {
            text = text.replacingOccurrences(of: tail, with: "/…")
        }
        return text
    }
}
