// Query latency while the alert webhook cannot be delivered, side by side with an idle sink:
// SQLite `SELECT 1` through ReliableDB from 4 callers, while a task hands the webhook sink 1,000
// notifications a second for a receiver that is down (connection refused) or that accepts and
// never answers (a black hole, each attempt waits for its timeout). Alternating rounds; prints
// per-round p50/p99, their medians and the ratios to the idle rounds, and the sink's counters.
//
//   swift run -c release --package-path Benchmarks WebhookIsolation
//
// Settings: BENCH_ROUNDS (5), BENCH_ROUND_SECONDS (3).
import Foundation
import Logging
import ReliableDB
import ReliableDBSQLite
import ReliableDBWebhook

#if canImport(Glibc)
    import Glibc
#endif

let environment = ProcessInfo.processInfo.environment
let rounds = Int(environment["BENCH_ROUNDS"] ?? "") ?? 5
let roundLength = Duration.seconds(Int(environment["BENCH_ROUND_SECONDS"] ?? "") ?? 3)
let callers = 4

/// A TCP socket bound to a free port on 127.0.0.1, and that port.
func boundSocket() -> (fd: Int32, port: Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
    }
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return (fd, Int(UInt16(bigEndian: address.sin_port)))
}

/// A listening socket that never accepts: connects succeed in the kernel, requests get no answer.
func blackHolePort() -> Int {
    let (fd, port) = boundSocket()
    listen(fd, 1024)
    return port
}

/// A port nothing listens on.
func refusedPort() -> Int {
    let (fd, port) = boundSocket()
    close(fd)
    return port
}

let logger = Logger(label: "bench")
let path = FileManager.default.temporaryDirectory.appendingPathComponent("webhook-bench-\(UUID().uuidString).sqlite")
    .path
let db = try ReliableDatabase(backend: try SQLiteBackend(path: path, connectionLimit: callers))
let sinks = [
    ("down", refusedPort()),
    ("blackhole", blackHolePort()),
].map { name, port in
    (
        name,
        WebhookAlertSink(
            url: Secret("http://127.0.0.1:\(port)/hooks/T000/B000/secret", redacted: "http://127.0.0.1:\(port)/***"),
            requestTimeout: .milliseconds(500),
            logger: Logger(label: "bench.webhook", factory: { _ in SwiftLogNoOpLogHandler() })
        )
    )
}
let sinkRunners = sinks.map { _, sink in Task { await sink.run() } }

func notification(_ index: Int) -> AlertNotification {
    AlertNotification(
        kind: .poolUtilization,
        fingerprint: "bench-\(index)",
        status: .firing,
        severity: .critical,
        summary: "Pool utilization 92% is above 80%",
        value: 92,
        threshold: 80,
        startsAt: Date(),
        endsAt: nil,
        isRepeat: false,
        labels: ["service": "bench"]
    )
}

/// p50 and p99 of SELECT 1 latency over one round, in microseconds.
func measure(_ label: String, flooding sink: WebhookAlertSink?) async throws -> (p50: Double, p99: Double) {
    let flood = sink.map { sink in
        Task {
            var index = 0
            while !Task.isCancelled {
                sink.deliver(notification(index))
                index += 1
                try? await Task.sleep(for: .milliseconds(1))
            }
        }
    }
    let deadline = ContinuousClock.now + roundLength
    let samples = try await withThrowingTaskGroup(of: [Duration].self) { group in
        for _ in 0..<callers {
            group.addTask {
                var samples: [Duration] = []
                while ContinuousClock.now < deadline {
                    let start = ContinuousClock.now
                    _ = try await db.query(.read("select-1")) { try Int.fetchOne($0, sql: "SELECT 1") }
                    samples.append(ContinuousClock.now - start)
                }
                return samples
            }
        }
        return try await group.reduce(into: []) { $0 += $1 }.sorted()
    }
    flood?.cancel()
    let p50 = samples[samples.count / 2] / .microseconds(1)
    let p99 = samples[samples.count * 99 / 100] / .microseconds(1)
    print(
        String(format: "  %-10@ p50 %7.1f µs  p99 %7.1f µs  (%d queries)", label as NSString, p50, p99, samples.count)
    )
    return (p50, p99)
}

print("SQLite SELECT 1, \(callers) callers, \(rounds) rounds of \(roundLength); flood: 1,000 deliver()/s")
_ = try await measure("warm-up", flooding: nil)
var results: [String: [(p50: Double, p99: Double)]] = [:]
let modes: [(String, WebhookAlertSink?)] = [("idle", nil)] + sinks.map { ($0.0, $0.1) }
for round in 1...rounds {
    print("round \(round)")
    let order = round.isMultiple(of: 2) ? Array(modes.reversed()) : modes
    for (name, sink) in order {
        results[name, default: []].append(try await measure(name, flooding: sink))
    }
}
func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
let idle = results["idle"]!
for (name, _) in modes {
    let rows = results[name]!
    let p50Ratios = zip(rows, idle).map { $0.p50 / $1.p50 }
    let p99Ratios = zip(rows, idle).map { $0.p99 / $1.p99 }
    print(
        String(
            format: "%-10@ median p50 %7.1f µs (x%.3f of idle)  median p99 %7.1f µs (x%.3f of idle)",
            name as NSString,
            median(rows.map(\.p50)),
            median(p50Ratios),
            median(rows.map(\.p99)),
            median(p99Ratios)
        )
    )
}
for (name, sink) in sinks {
    print("sink \(name): \(sink.statistics)")
}
for (_, sink) in sinks { sink.finish() }
for runner in sinkRunners { runner.cancel() }
try await db.shutdown()
try? FileManager.default.removeItem(atPath: path)
