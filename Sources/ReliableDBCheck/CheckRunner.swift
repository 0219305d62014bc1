import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import Prometheus
import ReliableDB
import ReliableDBHTTP
import ReliableDBHummingbird
import ReliableDBPrometheus

/// One check's outcome, as printed in the table and the JSON.
package struct CheckResult: Codable, Sendable {
    package var group: String
    package var name: String
    package var passed: Bool
    package var durationMs: Double
    package var detail: String

    package init(group: String, name: String, passed: Bool, durationMs: Double, detail: String) {
        self.group = group
        self.name = name
        self.passed = passed
        self.durationMs = durationMs
        self.detail = detail
    }
}

/// Failure of a scenario, with the reason printed in the table.
struct CheckFailed: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The `reliabledb check` scenarios, run live against the configured database. Breakers are
/// private instances, so a check never trips the application's; scratch tables are dropped.
package final class CheckRunner<Target: CheckTarget> {
    let target: Target
    /// Every check run so far, in order, so a caller can print them or stop when one failed.
    package private(set) var results: [CheckResult] = []
    /// What the connection checks found; nil with one server.
    private(set) var topology: Topology?

    /// - Parameter target: the database under test, with the statements each backend needs.
    package init(target: Target) {
        self.target = target
    }

    /// Runs `body`; a thrown error or `CheckFailed` marks the check failed with its reason.
    func check(_ group: String, _ name: String, _ body: () async throws -> String) async {
        let start = ContinuousClock.now
        var passed = true
        var detail: String
        do {
            detail = try await body()
        } catch {
            passed = false
            detail = "\(error)"
        }
        let elapsed = (ContinuousClock.now - start).milliseconds
        results.append(CheckResult(group: group, name: name, passed: passed, durationMs: elapsed, detail: detail))
    }

    // MARK: Connection

    /// Connects and probes, measures round trips, reports a multi-host URL's servers and the
    /// pool's state. Stops after a failed probe: every later check would fail the same way.
    package func runConnection() async {
        let db = target.database
        await check("connection", "connect and probe") {
            let probe = try await db.probe().get()
            return
                "\(probe.serverVersion.prefix(60)); round trip \(String(format: "%.2f", probe.roundTrip.milliseconds)) ms"
        }
        // Without a connection the other checks would only repeat the same failure, slowly.
        guard results.last?.passed == true else { return }
        await check("connection", "round-trip latency") {
            var samples: [Double] = []
            for _ in 0..<20 {
                let start = ContinuousClock.now
                _ = try await target.selectOne(on: db, .read("check-latency"))
                samples.append((ContinuousClock.now - start).milliseconds)
            }
            samples.sort()
            return String(format: "SELECT 1 ×20: median %.2f ms, max %.2f ms", samples[10], samples[19])
        }
        topology = await target.topology()
        if let topology {
            await check("connection", "topology") {
                let text = topology.lines.joined(separator: "; ")
                guard topology.served else {
                    throw CheckFailed("no server serves the URL's target_session_attrs: \(text)")
                }
                return text
            }
        }
        await check("connection", "pool statistics") {
            let pool = db.metrics().pool
            guard pool.max > 0, pool.active == 0 else { throw CheckFailed("unexpected pool state: \(pool)") }
            return "\(pool)"
        }
    }

    // MARK: Reliability

    /// The circuit breaker on a private pipeline: closed while queries succeed, open after three
    /// statements overran their deadline on the database, rejecting while open, closed again
    /// after a good probe.
    /// - Throws: only when the scenario's own configuration is refused.
    package func runReliability() async throws {
        let configuration = ReliabilityConfiguration(
            circuitBreaker: .init(failureThreshold: 3, successThreshold: 1, timeout: .milliseconds(300)),
            retry: .none,
            retryBudget: .unlimited
        )
        let db = try target.privateDatabase(configuration)
        let breaker = db.circuitBreaker
        await check("circuit breaker", "normal operation") {
            for _ in 0..<5 { _ = try await target.selectOne(on: db, .read("check-normal")) }
            guard breaker.state == .closed else {
                throw CheckFailed("state \(breaker.state.rawValue) after 5 successes")
            }
            return "5 queries succeeded, breaker CLOSED"
        }
        await check("circuit breaker", "failure threshold") {
            // Real failures on the database: statements that overrun their deadline. All three run
            // whatever the first answers, so the breaker sees the same failures on every run.
            var unexpected: (any Error)?
            for index in 1...3 {
                do {
                    try await target.slowQuery(on: db, .read("check-failing", timeout: .milliseconds(100)))
                    unexpected = unexpected ?? CheckFailed("statement \(index) finished inside its 100 ms deadline")
                } catch is DatabaseTimeoutError {
                } catch {
                    unexpected = unexpected ?? error
                }
            }
            if let unexpected { throw unexpected }
            guard breaker.state == .open else { throw CheckFailed("still \(breaker.state.rawValue) after 3 failures") }
            return "OPEN after 3 statements timed out on the database (threshold 3)"
        }
        await check("circuit breaker", "blocking while open") {
            do {
                _ = try await target.selectOne(on: db, .read("check-blocked"))
                throw CheckFailed("a query went through an open breaker")
            } catch let error as DatabaseCircuitBreakerError {
                return "rejected without a database call: \(error)"
            }
        }
        await check("circuit breaker", "recovery after the open timeout") {
            try await Task.sleep(for: .milliseconds(320))
            _ = try await target.selectOne(on: db, .read("check-probe"))
            guard breaker.state == .closed else {
                throw CheckFailed("state \(breaker.state.rawValue) after a good probe")
            }
            return "half-open probe succeeded, breaker CLOSED again"
        }
    }

    /// The library's read fallback, proved on the database: a read through it is stored; with
    /// the database failing it (statements overrunning their deadline), the same read answers
    /// with that result, marked degraded; a read with no earlier result fails.
    /// - Throws: only when the scenario's own configuration is refused.
    package func runDegradation() async throws {
        let configuration = ReliabilityConfiguration(
            circuitBreaker: .init(failureThreshold: 100),
            retry: .none,
            retryBudget: .unlimited
        )
        let db = try target.privateDatabase(configuration)
        let fallback = ReadFallback(key: "check-degradation", maxAge: .seconds(60))
        await check("degradation", "fresh answer") {
            let answer = try await db.withFallback(fallback) {
                try await target.selectOne(on: db, .read("check-fallback"))
            }
            guard !answer.isDegraded, answer.value == 1 else { throw CheckFailed("unexpected \(answer)") }
            return "read \(answer.value) from the database, not degraded"
        }
        await check("degradation", "fallback while the database fails the read") {
            let answer = try await db.withFallback(fallback) {
                try await target.slowQuery(on: db, .read("check-fallback", timeout: .milliseconds(100)))
                return -1
            }
            guard let degradation = answer.degradation, answer.value == 1 else {
                throw CheckFailed("the failing read was not served from its last result: \(answer)")
            }
            guard db.metrics().degradedAnswers == 1 else { throw CheckFailed("degraded answers not counted") }
            return "the statement overran its 100 ms deadline; served the last result, \(degradation.headerValue)"
        }
        if db.standbyCircuitBreaker != nil, topology?.hasStandby == true {
            await check("degradation", "a standby answers when the primary cannot") {
                // The primary's breaker open: the read is tried on a standby, for real, before any
                // kept result (this key has none).
                db.circuitBreaker.forceState(.forcedOpen)
                defer { db.circuitBreaker.forceState(.closed) }
                let answer = try await db.withFallback(ReadFallback(key: "check-standby", maxAge: .seconds(60))) {
                    try await target.selectOne(on: db, .read("check-standby-fallback"))
                }
                guard let degradation = answer.degradation, case .standby(let server) = degradation.source,
                    answer.value == 1
                else {
                    throw CheckFailed(
                        "not answered by a standby: \(answer.degradation?.headerValue ?? "a fresh answer")"
                    )
                }
                return "with the primary's breaker open, standby \(server) answered, \(degradation.headerValue)"
            }
        }
        await check("degradation", "no earlier result, no fallback") {
            do {
                _ = try await db.withFallback(ReadFallback(key: "never-read", maxAge: .seconds(60))) {
                    try await target.slowQuery(on: db, .read("check-fallback", timeout: .milliseconds(100)))
                }
                throw CheckFailed("a read with no earlier result did not fail")
            } catch is DatabaseTimeoutError {
                return "failed with the timeout, as it must"
            }
        }
    }

    /// Deadlines enforced on the database: a statement over its limit is stopped and its
    /// connection reusable, a timed-out transaction is rolled back, a batch gets a scaled deadline.
    /// - Throws: only when the scenario's own configuration is refused.
    package func runTimeouts() async throws {
        let db = try target.privateDatabase(.init(retry: .none))
        await check("timeouts", "within limit") {
            _ = try await target.selectOne(on: db, .read("check-fast", timeout: .seconds(2)))
            return "SELECT 1 finished inside a 2 s limit"
        }
        await check("timeouts", "exceeding the limit stops the statement") {
            let start = ContinuousClock.now
            do {
                try await target.slowQuery(on: db, .read("check-slow", timeout: .milliseconds(200)))
                throw CheckFailed("a 30 s statement finished inside 200 ms")
            } catch let error as DatabaseTimeoutError {
                let elapsed = ContinuousClock.now - start
                guard elapsed < .milliseconds(1200) else { throw CheckFailed("took \(elapsed) to stop") }
                _ = try await target.selectOne(on: db, .read("check-after-timeout", timeout: .seconds(1)))
                return "\(error); connection reusable at once"
            }
        }
        let table = "reliabledb_check_\(UUID().uuidString.prefix(8).lowercased())"
        await check("timeouts", "transaction timeout rolls back") {
            try await target.createTable(table)
            do {
                try await target.slowTransaction(
                    on: db,
                    table: table,
                    .init("check-slow-transaction", kind: .transaction, timeout: .milliseconds(200))
                )
                throw CheckFailed("the transaction finished inside 200 ms")
            } catch is DatabaseTimeoutError {
                let rows = try await target.countRows(table)
                guard rows == 0 else { throw CheckFailed("\(rows) rows survived the timed-out transaction") }
                return "timed out at 200 ms; its insert was rolled back"
            }
        }
        await check("timeouts", "batch operation with a scaled deadline") {
            let options = OperationOptions.batchOperation(.batchInsert, count: 1000, table: table)
            let deadline = db.configuration.timeouts.timeout(for: options)
            try await target.insertRows(on: db, table: table, count: 1000, options)
            let rows = try await target.countRows(table)
            guard rows == 1000 else { throw CheckFailed("\(rows) rows after inserting 1000") }
            let limit = deadline.map { "\($0)" } ?? "none"
            return "1000 rows inserted in one operation under its scaled deadline (\(limit))"
        }
        try? await target.dropTable(table)
    }

    // MARK: Monitoring

    /// The health monitor, the Prometheus metrics and the four HTTP endpoints, served for real on
    /// a free local port.
    /// - Throws: only when the scenario's own configuration is refused.
    package func runMonitoring() async throws {
        let exporter = PrometheusExporter(registry: PrometheusCollectorRegistry())
        let db = try target.privateDatabase(.init())
        let monitor = HealthMonitor(database: db)
        await check("monitoring", "health check") {
            let status = await monitor.checkNow()
            guard status.state != .unhealthy else { throw CheckFailed("unhealthy: \(status.lastError ?? "?")") }
            return "\(status.state.rawValue), score \(Int(status.score))"
        }
        await check("monitoring", "metrics collection") {
            _ = try await target.selectOne(on: db, .read("check-metrics"))
            let text = exporter.render(metrics: db.metrics(), health: monitor.status)
            for name in ["db_connections_total", "db_health_score", "db_circuit_breaker_state"]
            where !text.contains(name) {
                throw CheckFailed("\(name) missing from the metrics")
            }
            return "\(text.split(separator: "\n").count) lines of Prometheus text"
        }
        let endpoints = HealthEndpoints(database: db, monitor: monitor, exporter: exporter)
        endpoints.readiness.markServing()
        await check("monitoring", "HTTP endpoints") {
            let router = Router()
            router.addRoutes(endpoints.routes(), atPath: "/api/health")
            let port = PortBox()
            var quiet = Logger(label: "reliabledb.check.http")
            quiet.logLevel = .critical
            let app = Application(
                router: router,
                configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                onServerRunning: { port.set($0.localAddress?.port ?? 0) },
                logger: quiet
            )
            let server = Task { try await app.runService() }
            defer { server.cancel() }
            let bound = try await port.wait()
            var seen: [String] = []
            for (path, expected) in [("", 200), ("/live", 200), ("/ready", 200), ("/metrics", 200)] {
                let response = try await HTTPClient.shared.execute(
                    HTTPClientRequest(url: "http://127.0.0.1:\(bound)/api/health\(path)"),
                    timeout: .seconds(5)
                )
                _ = try await response.body.collect(upTo: 1 << 20)
                guard Int(response.status.code) == expected else {
                    throw CheckFailed("/api/health\(path) answered \(response.status.code)")
                }
                seen.append("/api/health\(path) \(response.status.code)")
            }
            return seen.joined(separator: ", ")
        }
    }

    // MARK: Performance and recovery

    /// What the breaker and the pipeline add per operation, against fixed budgets.
    package func runPerformance() async {
        await check("performance", "circuit breaker overhead") {
            let breaker = CircuitBreaker()
            let iterations = 200_000
            let start = ContinuousClock.now
            for _ in 0..<iterations {
                if case .permitted(let permit) = breaker.acquire() {
                    breaker.record(permit, outcome: .success, duration: .microseconds(1))
                }
            }
            let perCall = (ContinuousClock.now - start) / iterations
            guard perCall < .microseconds(50) else { throw CheckFailed("\(perCall) per permit") }
            return "\(String(format: "%.0f", Double(perCall.nanosecondsClamped))) ns per permit (budget: 5-10 ms)"
        }
        await check("performance", "reliable client overhead") {
            let db = try target.privateDatabase(.init())
            let rounds = 300
            var raw = Duration.zero
            var reliable = Duration.zero
            for _ in 0..<rounds {
                let a = ContinuousClock.now
                try await target.rawSelectOne()
                let b = ContinuousClock.now
                _ = try await target.selectOne(on: db, .read("check-overhead"))
                let c = ContinuousClock.now
                raw += b - a
                reliable += c - b
            }
            let overhead = (reliable - raw) / rounds
            guard overhead < .milliseconds(2) else { throw CheckFailed("\(overhead) added per query") }
            return String(
                format: "SELECT 1: raw %.3f ms, reliable %.3f ms, overhead %.3f ms per query (budget: <20 ms)",
                (raw / rounds).milliseconds,
                (reliable / rounds).milliseconds,
                overhead.milliseconds
            )
        }
    }

    /// A breaker opened by a real timeout closes on its own once the database answers again.
    /// - Throws: only when the scenario's own configuration is refused.
    package func runRecovery() async throws {
        let db = try target.privateDatabase(
            .init(
                circuitBreaker: .init(
                    failureThreshold: 1,
                    successThreshold: 1,
                    timeout: .milliseconds(200)
                ),
                retry: .none
            )
        )
        await check("recovery", "automatic recovery") {
            do {
                try await target.slowQuery(on: db, .read("check-outage", timeout: .milliseconds(100)))
            } catch is DatabaseTimeoutError {}
            guard db.circuitBreaker.state == .open else {
                throw CheckFailed("a timed-out statement left the breaker \(db.circuitBreaker.state.rawValue)")
            }
            try await Task.sleep(for: .milliseconds(220))
            _ = try await target.selectOne(on: db, .read("check-recover"))
            guard db.circuitBreaker.state == .closed else {
                throw CheckFailed("not closed: \(db.circuitBreaker.state.rawValue)")
            }
            return "OPEN → HALF_OPEN → CLOSED after one good probe"
        }
    }
}

/// Hands the bound port from the server's start callback to the waiting check.
final class PortBox: Sendable {
    private let stream: AsyncStream<Int>
    private let continuation: AsyncStream<Int>.Continuation

    init() {
        (stream, continuation) = AsyncStream.makeStream(of: Int.self)
    }

    func set(_ port: Int) { continuation.yield(port) }

    func wait() async throws -> Int {
        for await port in stream { return port }
        throw CheckFailed("the server did not start")
    }
}
