import Foundation
import Logging
import ReliableDB
import ReliableDBTesting
import ReliableDBWebhook
import Synchronization
import Testing

/// End-to-end tests against a real Hummingbird receiver on loopback. Serialized so the timing
/// bound in the "receiver down" test is not measured on a machine busy with the other tests.
@Suite("WebhookAlertSink", .serialized)
struct WebhookAlertSinkTests {
    // MARK: - Payloads

    @Test("Slack payload arrives with text, header and section fields")
    func slackPayload() async throws {
        try await withReceiver { receiver in
            let sink = makeSink(url: receiver.url(path: "/services/T000/B000/XXXX"))
            try await whileRunning(sink) {
                sink.deliver(sampleNotification())
                try await receiver.waitForRequests(1)
            }

            let request = try #require(receiver.received.first)
            #expect(request.method == "POST")
            #expect(request.path == "/services/T000/B000/XXXX")
            #expect(request.contentType == "application/json")

            let json = try #require(try request.json() as? [String: Any])
            let text = try #require(json["text"] as? String)
            #expect(text == "[FIRING] critical: Pool utilization 92% is above 80%")

            let blocks = try #require(json["blocks"] as? [[String: Any]])
            try #require(blocks.count == 2)
            #expect(blocks[0]["type"] as? String == "header")
            let header = try #require(blocks[0]["text"] as? [String: Any])
            #expect(header["type"] as? String == "plain_text")
            #expect(header["text"] as? String == "Firing: pool_utilization")

            #expect(blocks[1]["type"] as? String == "section")
            let sectionText = try #require(blocks[1]["text"] as? [String: Any])
            #expect(sectionText["type"] as? String == "mrkdwn")
            #expect(sectionText["text"] as? String == "Pool utilization 92% is above 80%")
            let fields = try #require(blocks[1]["fields"] as? [[String: Any]])
            #expect(fields.allSatisfy { $0["type"] as? String == "mrkdwn" })
            #expect(
                fields.compactMap { $0["text"] as? String } == [
                    "*Status*\nfiring",
                    "*Severity*\ncritical",
                    "*Value*\n92 (threshold 80)",
                    "*Started*\n2025-06-15T15:06:40Z",
                    "*Fingerprint*\n`pool_utilization:reliabledb`",
                ]
            )
        }
    }

    @Test("a resolved notice says it resolved, and when")
    func slackResolvedNotice() async throws {
        try await withReceiver { receiver in
            let sink = makeSink(url: receiver.url())
            try await whileRunning(sink) {
                sink.deliver(sampleNotification(status: .resolved))
                try await receiver.waitForRequests(1)
            }

            let json = try #require(try receiver.received.first?.json() as? [String: Any])
            #expect(json["text"] as? String == "[RESOLVED] critical: Pool utilization 92% is above 80%")
            let blocks = try #require(json["blocks"] as? [[String: Any]])
            let header = try #require(blocks.first?["text"] as? [String: Any])
            #expect(header["text"] as? String == "Resolved: pool_utilization")
            let fields = try #require(blocks.last?["fields"] as? [[String: Any]]).compactMap { $0["text"] as? String }
            #expect(fields.contains("*Status*\nresolved"))
            #expect(fields.contains("*Resolved*\n2025-06-15T15:11:40Z"))
        }
    }

    @Test("Alertmanager payload is an API v2 alert array")
    func alertmanagerPayload() async throws {
        try await withReceiver { receiver in
            let sink = makeSink(url: receiver.url(path: "/api/v2/alerts"), format: .alertmanager)
            try await whileRunning(sink) {
                sink.deliver(sampleNotification())
                sink.deliver(sampleNotification(status: .resolved))
                try await receiver.waitForRequests(2)
            }

            let firing = try #require(try receiver.received[0].json() as? [[String: Any]])
            try #require(firing.count == 1)
            let alert = firing[0]
            #expect(Set(alert.keys) == ["labels", "annotations", "startsAt"])
            let labels = try #require(alert["labels"] as? [String: String])
            #expect(
                labels == [
                    "alertname": "pool_utilization",
                    "severity": "critical",
                    "fingerprint": "pool_utilization:reliabledb",
                    "service": "reliabledb",
                    "backend": "sqlite",
                ]
            )
            let annotations = try #require(alert["annotations"] as? [String: String])
            #expect(
                annotations == [
                    "summary": "Pool utilization 92% is above 80%",
                    "value": "92",
                    "threshold": "80",
                ]
            )
            let startsAt = try #require(alert["startsAt"] as? String)
            #expect(try Date(startsAt, strategy: .iso8601) == Date(timeIntervalSince1970: 1_750_000_000))

            let resolved = try #require(try receiver.received[1].json() as? [[String: Any]])
            let endsAt = try #require(resolved.first?["endsAt"] as? String)
            #expect(try Date(endsAt, strategy: .iso8601) == Date(timeIntervalSince1970: 1_750_000_300))
        }
    }

    // MARK: - Retries

    @Test("a 500 is retried with backoff until the receiver answers 200")
    func retriesServerErrors() async throws {
        try await withReceiver { receiver in
            receiver.script([.status(500), .status(500)])
            let metrics = TestMetricsFactory()
            let sink = makeSink(
                url: receiver.url(),
                initialBackoff: .milliseconds(1),
                maxBackoff: .milliseconds(10),
                metricsFactory: metrics
            )
            try await whileRunning(sink) {
                sink.deliver(sampleNotification())
                try await eventually("sent") { sink.statistics.sent == 1 }
            }

            #expect(sink.statistics == .init(enqueued: 1, sent: 1, failed: 0, dropped: 0, retries: 2))
            #expect(receiver.received.count == 3)
            // Every attempt carries the same body.
            #expect(Set(receiver.received.map(\.body)).count == 1)
            #expect(metrics.counter("db_alert_delivery_retries_total") == 2)
            #expect(metrics.counter("db_alerts_sent_total") == 1)
            #expect(metrics.counter("db_alerts_failed_total") == 0)
            #expect(
                metrics.counterLabels == [
                    "db_alerts_sent_total", "db_alerts_failed_total", "db_alerts_dropped_total",
                    "db_alert_delivery_retries_total",
                ]
            )
        }
    }

    @Test("after maxAttempts failures the notification counts as failed")
    func givesUpAfterMaxAttempts() async throws {
        try await withReceiver { receiver in
            receiver.script([.status(503), .status(502), .status(500), .status(500)])
            let metrics = TestMetricsFactory()
            let sink = makeSink(
                url: receiver.url(),
                maxAttempts: 3,
                initialBackoff: .milliseconds(1),
                maxBackoff: .milliseconds(5),
                metricsFactory: metrics
            )
            try await whileRunning(sink) {
                sink.deliver(sampleNotification())
                try await eventually("failed") { sink.statistics.failed == 1 }
            }
            #expect(sink.statistics == .init(enqueued: 1, sent: 0, failed: 1, dropped: 0, retries: 2))
            #expect(receiver.received.count == 3)
            #expect(metrics.counter("db_alerts_failed_total") == 1)
        }
    }

    @Test("a 4xx other than 408/429 is not retried", arguments: [400, 401, 404, 410])
    func clientErrorsAreNotRetried(status: Int) async throws {
        try await withReceiver { receiver in
            receiver.script([.status(status)])
            let sink = makeSink(url: receiver.url(), initialBackoff: .milliseconds(1))
            try await whileRunning(sink) {
                sink.deliver(sampleNotification())
                try await eventually("failed") { sink.statistics.failed == 1 }
                // A later notification goes through, so a retry would have shown up by now.
                sink.deliver(sampleNotification())
                try await eventually("second sent") { sink.statistics.sent == 1 }
            }
            #expect(sink.statistics.retries == 0)
            #expect(receiver.received.count == 2)
        }
    }

    @Test("408 is retried like a 5xx")
    func requestTimeoutIsRetried() async throws {
        try await withReceiver { receiver in
            receiver.script([.status(408)])
            let sink = makeSink(url: receiver.url(), initialBackoff: .milliseconds(1))
            try await whileRunning(sink) {
                sink.deliver(sampleNotification())
                try await eventually("sent") { sink.statistics.sent == 1 }
            }
            #expect(sink.statistics.retries == 1)
            #expect(receiver.received.count == 2)
        }
    }

    @Test("429 with Retry-After: 1 waits exactly one second on the clock before retrying")
    func honoursRetryAfter() async throws {
        try await withReceiver { receiver in
            receiver.script([.tooManyRequests(retryAfter: "1")])
            let clock = ManualClock()
            // A jittered backoff would be at most 10 ms: only Retry-After explains a 1 s wait.
            let sink = makeSink(
                url: receiver.url(),
                initialBackoff: .milliseconds(10),
                maxBackoff: .seconds(30),
                clock: clock
            )
            try await whileRunning(sink) {
                sink.deliver(sampleNotification())
                try await receiver.waitForRequests(1)
                #expect(await clock.waitForSleepers(count: 1))
                #expect(sink.statistics.retries == 1)

                clock.advance(by: .milliseconds(999))
                #expect(clock.sleeperCount == 1, "woke before Retry-After elapsed")
                #expect(receiver.received.count == 1)

                clock.advance(by: .milliseconds(1))
                #expect(clock.sleeperCount == 0)
                try await receiver.waitForRequests(2)
                try await eventually("sent") { sink.statistics.sent == 1 }
            }
            #expect(sink.statistics == .init(enqueued: 1, sent: 1, failed: 0, dropped: 0, retries: 1))
        }
    }

    @Test("a Retry-After longer than maxBackoff is capped at maxBackoff")
    func retryAfterIsCapped() async throws {
        try await withReceiver { receiver in
            receiver.script([.tooManyRequests(retryAfter: "120")])
            let clock = ManualClock()
            let sink = makeSink(url: receiver.url(), maxBackoff: .seconds(5), clock: clock)
            try await whileRunning(sink) {
                sink.deliver(sampleNotification())
                try await receiver.waitForRequests(1)
                #expect(await clock.waitForSleepers(count: 1))

                clock.advance(by: .milliseconds(4_999))
                #expect(clock.sleeperCount == 1)
                clock.advance(by: .milliseconds(1))
                try await receiver.waitForRequests(2)
                try await eventually("sent") { sink.statistics.sent == 1 }
            }
        }
    }

    // MARK: - Queue

    @Test("a full queue drops the oldest notifications and keeps the newest")
    func dropsOldest() async throws {
        try await withReceiver { receiver in
            let metrics = TestMetricsFactory()
            let sink = makeSink(url: receiver.url(), queueCapacity: 2, metricsFactory: metrics)
            // The sender is not running yet, so all five wait in the queue.
            for index in 1...5 {
                sink.deliver(sampleNotification(fingerprint: "n\(index)"))
            }
            #expect(sink.statistics == .init(enqueued: 5, sent: 0, failed: 0, dropped: 3, retries: 0))
            #expect(metrics.counter("db_alerts_dropped_total") == 3)

            try await whileRunning(sink) {
                try await eventually("sent") { sink.statistics.sent == 2 }
            }
            let fingerprints = try receiver.received.map { request in
                let json = try #require(try request.json() as? [String: Any])
                let blocks = try #require(json["blocks"] as? [[String: Any]])
                let fields = try #require(blocks.last?["fields"] as? [[String: Any]])
                return try #require(fields.last?["text"] as? String)
            }
            #expect(fingerprints == ["*Fingerprint*\n`n4`", "*Fingerprint*\n`n5`"])
        }
    }

    @Test("with the receiver down, 1,000 deliver() calls return at once; drops and failures are counted")
    func receiverDownNeverBlocks() async throws {
        let url = try await unusedLocalURL()
        let metrics = TestMetricsFactory()
        let sink = makeSink(
            url: url,
            queueCapacity: 8,
            requestTimeout: .milliseconds(100),
            maxAttempts: 2,
            initialBackoff: .milliseconds(1),
            maxBackoff: .milliseconds(5),
            metricsFactory: metrics
        )
        try await whileRunning(sink) {
            for index in 0..<1_000 {
                sink.deliver(sampleNotification(fingerprint: "f\(index)"))
            }
            // Had deliver() waited on the network, each call would have ended in a failed attempt
            // (100 ms request timeout) before the next; instead, right after the loop, nearly all
            // were pushed out of the 8-slot queue and at most a few reached the sender.
            let atOnce = sink.statistics
            #expect(atOnce.enqueued == 1_000)
            #expect(atOnce.dropped >= 1_000 - 8 - 10, "\(atOnce)")
            #expect(atOnce.failed <= 10, "\(atOnce)")

            try await eventually("every notification resolved", timeout: .seconds(60)) {
                let stats = sink.statistics
                return stats.failed + stats.dropped == 1_000
            }
        }
        let stats = sink.statistics
        #expect(stats.enqueued == 1_000)
        #expect(stats.sent == 0)
        #expect(stats.dropped >= 1_000 - 8 - 10, "\(stats)")
        #expect(stats.failed >= 1, "\(stats)")
        // maxAttempts 2: exactly one retry per failed notification.
        #expect(stats.retries == stats.failed)
        #expect(metrics.counter("db_alerts_dropped_total") == Int64(stats.dropped))
        #expect(metrics.counter("db_alerts_failed_total") == Int64(stats.failed))
        #expect(metrics.counter("db_alert_delivery_retries_total") == Int64(stats.retries))
    }

    @Test("finish() lets run() send what is queued and return; later notifications are dropped")
    func finishDrainsQueue() async throws {
        try await withReceiver { receiver in
            let sink = makeSink(url: receiver.url())
            for index in 1...3 {
                sink.deliver(sampleNotification(fingerprint: "n\(index)"))
            }
            sink.finish()
            sink.deliver(sampleNotification(fingerprint: "late"))

            let returned = Mutex(false)
            let sender = Task {
                await sink.run()
                returned.withLock { $0 = true }
            }
            defer { sender.cancel() }
            try await eventually("run() returned") { returned.withLock { $0 } }
            #expect(sink.statistics == .init(enqueued: 4, sent: 3, failed: 0, dropped: 1, retries: 0))
            #expect(receiver.received.count == 3)
        }
    }

    // MARK: - Secrets

    @Test("the full webhook URL never appears in log messages or metadata")
    func urlNeverLogged() async throws {
        let logs = CapturedLogs()
        let secretPath = "/services/T0SECRET/B0SECRET/xoxb-very-secret-token?token=query-secret"
        let secretParts = ["T0SECRET", "B0SECRET", "xoxb-very-secret-token", "query-secret"]

        var fullURLs: [String] = []
        try await withReceiver { receiver in
            // 500 then 404: a retry warning, then a permanent failure; then a success.
            receiver.script([.status(500), .status(404)])
            let url = receiver.url(path: secretPath)
            fullURLs.append(url)
            let sink = makeSink(
                url: url,
                initialBackoff: .milliseconds(1),
                logger: logs.logger()
            )
            try await whileRunning(sink) {
                sink.deliver(sampleNotification())
                try await eventually("failed") { sink.statistics.failed == 1 }
                sink.deliver(sampleNotification())
                try await eventually("sent") { sink.statistics.sent == 1 }
            }
            #expect(receiver.received.first?.path == "/services/T0SECRET/B0SECRET/xoxb-very-secret-token")
        }

        // Transport errors and queue overflow, against a port where nothing listens.
        let downURL = try await unusedLocalURL(path: secretPath)
        fullURLs.append(downURL)
        let downSink = makeSink(
            url: downURL,
            queueCapacity: 1,
            requestTimeout: .milliseconds(100),
            maxAttempts: 2,
            initialBackoff: .milliseconds(1),
            logger: logs.logger()
        )
        downSink.deliver(sampleNotification())
        downSink.deliver(sampleNotification())
        try await whileRunning(downSink) {
            try await eventually("failed") { downSink.statistics.failed == 1 }
        }

        let records = logs.records
        // The paths that must not leak were exercised: retry, rejection, transport failure, drop.
        #expect(records.contains { $0.level == .warning && $0.message.contains("retrying") })
        #expect(records.contains { $0.level == .error && $0.message.contains("not retrying") })
        #expect(records.contains { $0.level == .error && $0.message.contains("giving up") })
        #expect(records.contains { $0.message.contains("dropped") })
        // They identify the webhook by its redacted form.
        #expect(records.contains { $0.metadata["webhook"]?.description == "http://127.0.0.1:<port>/…" })

        for record in records {
            let rendered = record.rendered
            for url in fullURLs {
                #expect(!rendered.contains(url), "full URL in log: \(rendered)")
            }
            for part in secretParts {
                #expect(!rendered.contains(part), "secret part \(part) in log: \(rendered)")
            }
        }
    }
}

// MARK: - Helpers

private func makeSink(
    url: String,
    format: WebhookFormat = .slack,
    queueCapacity: Int = 256,
    requestTimeout: Duration = .seconds(5),
    maxAttempts: Int = 4,
    initialBackoff: Duration = .milliseconds(5),
    maxBackoff: Duration = .milliseconds(50),
    clock: any ReliabilityClock = SystemClock(),
    metricsFactory: TestMetricsFactory? = nil,
    logger: Logger = silentLogger()
) -> WebhookAlertSink {
    WebhookAlertSink(
        url: Secret(url, redacted: "http://127.0.0.1:<port>/…"),
        format: format,
        queueCapacity: queueCapacity,
        requestTimeout: requestTimeout,
        maxAttempts: maxAttempts,
        initialBackoff: initialBackoff,
        maxBackoff: maxBackoff,
        clock: clock,
        metricsFactory: metricsFactory,
        logger: logger
    )
}

/// Runs `body` with a started receiver and stops the receiver afterwards, even when `body` throws.
private func withReceiver(_ body: (WebhookReceiver) async throws -> Void) async throws {
    let receiver = try await WebhookReceiver.start()
    do {
        try await body(receiver)
    } catch {
        await receiver.stop()
        throw error
    }
    await receiver.stop()
}

/// Runs the sink's sender while `body` runs, then cancels it and waits until it stopped.
private func whileRunning(_ sink: WebhookAlertSink, _ body: () async throws -> Void) async throws {
    let sender = Task { await sink.run() }
    do {
        try await body()
    } catch {
        sender.cancel()
        await sender.value
        throw error
    }
    sender.cancel()
    await sender.value
}
