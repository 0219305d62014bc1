import CoreMetrics
import Foundation
import Hummingbird
import Logging
import ReliableDB
import Synchronization
import Testing

/// A real webhook receiver on 127.0.0.1 (Hummingbird, port 0) that records every POST and answers
/// from a script: the next scripted reply, or 200 once the script is used up.
final class WebhookReceiver: Sendable {
    struct Received: Sendable {
        var method: String
        var path: String
        var contentType: String?
        var body: Data

        /// The body parsed with JSONSerialization, as a receiver would.
        func json() throws -> Any {
            try JSONSerialization.jsonObject(with: body)
        }
    }

    enum Reply: Sendable {
        case status(Int)
        case tooManyRequests(retryAfter: String)
    }

    /// Shared by the route handler and the test.
    private final class Store: Sendable {
        struct State {
            var received: [Received] = []
            var script: [Reply] = []
        }

        let state = Mutex(State())

        func record(_ received: Received) -> Reply {
            state.withLock { state in
                state.received.append(received)
                return state.script.isEmpty ? .status(200) : state.script.removeFirst()
            }
        }
    }

    private let store: Store
    private let task: Task<Void, any Error>
    /// The bound port.
    let port: Int

    private init(store: Store, port: Int, task: Task<Void, any Error>) {
        self.store = store
        self.port = port
        self.task = task
    }

    var received: [Received] { store.state.withLock { $0.received } }

    /// Answers the next requests with `replies`, in order; 200 afterwards.
    func script(_ replies: [Reply]) {
        store.state.withLock { $0.script = replies }
    }

    /// Starts a receiver and returns once it listens.
    static func start() async throws -> WebhookReceiver {
        let store = Store()
        let router = Router()
        // `**` matches any path, like a Slack webhook's /services/T…/B…/token.
        router.post("**") { request, _ -> Response in
            var request = request
            let buffer = try await request.collectBody(upTo: 1 << 20)
            let received = Received(
                method: request.method.rawValue,
                path: request.uri.path,
                contentType: request.headers[.contentType],
                body: Data(buffer.readableBytesView)
            )
            switch store.record(received) {
            case .status(let code):
                return Response(status: .init(code: code))
            case .tooManyRequests(let retryAfter):
                return Response(status: .tooManyRequests, headers: [.retryAfter: retryAfter])
            }
        }
        let (ports, portInput) = AsyncStream.makeStream(of: Int.self)
        var quietLogger = Logger(label: "test.receiver")
        quietLogger.logLevel = .critical
        let app = Application(
            router: router,
            configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in
                portInput.yield(channel.localAddress?.port ?? 0)
                portInput.finish()
            },
            logger: quietLogger
        )
        let task = Task { try await app.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else {
            task.cancel()
            throw ReceiverError.didNotStart
        }
        return WebhookReceiver(store: store, port: port, task: task)
    }

    /// Stops the server and waits until it no longer listens.
    func stop() async {
        task.cancel()
        _ = await task.result
    }

    /// `http://127.0.0.1:<port><path>`.
    func url(path: String = "/hook") -> String {
        "http://127.0.0.1:\(port)\(path)"
    }

    /// Waits until at least `count` requests arrived.
    func waitForRequests(_ count: Int) async throws {
        try await eventually("receiver got \(count) request(s)") { self.received.count >= count }
    }
}

enum ReceiverError: Error {
    case didNotStart
}

/// A URL where nothing listens: a receiver's port right after the receiver stopped.
func unusedLocalURL(path: String = "/hook") async throws -> String {
    let receiver = try await WebhookReceiver.start()
    await receiver.stop()
    return receiver.url(path: path)
}

/// Polls `condition` until it holds, failing the test after `timeout` of real time. Used only to
/// wait for real network I/O to finish, never to measure timing logic.
func eventually(
    _ what: String,
    timeout: Duration = .seconds(10),
    sourceLocation: SourceLocation = #_sourceLocation,
    _ condition: () -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        if ContinuousClock.now >= deadline {
            Issue.record("timed out waiting until \(what)", sourceLocation: sourceLocation)
            throw EventuallyTimeout()
        }
        try await Task.sleep(for: .milliseconds(2))
    }
}

struct EventuallyTimeout: Error {}

/// A logger that drops everything, for tests that do not look at logs.
func silentLogger() -> Logger {
    Logger(label: "test.silent") { _ in SwiftLogNoOpLogHandler() }
}

/// A swift-metrics factory that keeps counter values so tests can read them.
final class TestMetricsFactory: MetricsFactory, Sendable {
    final class TestCounter: CounterHandler, Sendable {
        let value = Mutex<Int64>(0)
        func increment(by amount: Int64) { value.withLock { $0 += amount } }
        func reset() { value.withLock { $0 = 0 } }
    }

    private let counters = Mutex<[String: TestCounter]>([:])

    func counter(_ label: String) -> Int64 {
        counters.withLock { $0[label] }?.value.withLock { $0 } ?? 0
    }

    var counterLabels: Set<String> { counters.withLock { Set($0.keys) } }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        counters.withLock { counters in
            if let existing = counters[label] { return existing }
            let counter = TestCounter()
            counters[label] = counter
            return counter
        }
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        NOOPMetricsHandler.instance
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        NOOPMetricsHandler.instance
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        NOOPMetricsHandler.instance
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        NOOPMetricsHandler.instance
    }

    func destroyCounter(_ handler: any CounterHandler) {}
    func destroyMeter(_ handler: any MeterHandler) {}
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {}
    func destroyRecorder(_ handler: any RecorderHandler) {}
    func destroyTimer(_ handler: any TimerHandler) {}
}

/// A notification with whole-second dates, so ISO-8601 round trips compare exactly.
func sampleNotification(
    status: AlertStatus = .firing,
    fingerprint: String = "pool_utilization:reliabledb",
    isRepeat: Bool = false
) -> AlertNotification {
    AlertNotification(
        kind: .poolUtilization,
        fingerprint: fingerprint,
        status: status,
        severity: .critical,
        summary: "Pool utilization 92% is above 80%",
        value: 92,
        threshold: 80,
        startsAt: Date(timeIntervalSince1970: 1_750_000_000),
        endsAt: status == .resolved ? Date(timeIntervalSince1970: 1_750_000_300) : nil,
        isRepeat: isRepeat,
        labels: ["service": "reliabledb", "backend": "sqlite"]
    )
}
