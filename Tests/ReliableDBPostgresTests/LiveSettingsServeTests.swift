import AsyncHTTPClient
import Foundation
import NIOCore
import ReliableDBTestSupport
import Testing

/// Live settings as a user of `reliabledb serve` sees them: the `.env` rewritten while the demo
/// API is under load, against the real server.
@Suite("Live settings through serve")
struct LiveSettingsServeTests {
    /// What `/api/health` shows of the settings in force, in its `application/health+json` form:
    /// the pool's maximum and the breaker's threshold.
    static func inForce(_ base: String) async throws -> (max: Int?, threshold: Int?) {
        var request = HTTPClientRequest(url: "\(base)/health")
        request.headers.add(name: "Accept", value: "application/health+json")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 1 << 20)
        let json = try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any]
        let checks = json?["checks"] as? [String: Any]
        func observed(_ name: String) -> Int? {
            ((checks?[name] as? [[String: Any]])?.first?["observedValue"] as? Double).map { Int($0) }
        }
        return (observed("database:connectionLimit"), observed("database:circuitBreakerFailureThreshold"))
    }

    /// Rewrites `path` as Kubernetes rewrites a mounted file: a new file renamed over it.
    static func write(_ lines: [String], to path: String) throws {
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// Under 8 concurrent readers: the breaker threshold and the pool maximum changed by
    /// rewriting the `.env` are in force, and shown in `/api/health`, within one health interval
    /// (5 s; the file is polled every second); a bad value is rejected with the error a start with it gets, and the old values
    /// stay; a lowered maximum closes connections without failing a request.
    @Test(.timeLimit(.minutes(2)))
    func rewritingTheEnvFileChangesTheBreakerAndThePoolUnderLoad() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rdb-live-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let envFile = directory.appendingPathComponent(".env").path
        let interval = "DB_HEALTH_CHECK_INTERVAL=5000"
        try Self.write(["DB_CONNECTION_LIMIT=4", "DB_CB_FAILURE_THRESHOLD=5", interval], to: envFile)
        let server = try ServerProcess(
            binary: reliabledbBinary,
            arguments: ["serve", "--demo", "--port", "0", "--drain-seconds", "0", "--env-file", envFile],
            environment: ["DATABASE_URL": try TestServer.environment("RELIABLEDB_TEST_POSTGRES_URL")]
        )
        let base = "http://127.0.0.1:\(try await server.waitForPort())/api"
        #expect(try await eventually { try await Self.inForce(base) == (4, 5) })

        let stop = Locked(false)
        let results = Locked((ok: 0, failed: [Int]()))
        let load = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        while !stop.withLock({ $0 }) {
                            let status = try await PostgresBackendTests.fetch("\(base)/users").status
                            results.withLock { status == 200 ? ($0.ok += 1) : $0.failed.append(status) }
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        try await Task.sleep(for: .milliseconds(500))

        // Up: both values in force within one health interval.
        let raised = ContinuousClock.now
        try Self.write(["DB_CONNECTION_LIMIT=8", "DB_CB_FAILURE_THRESHOLD=2", interval], to: envFile)
        #expect(try await eventually(within: .seconds(5)) { try await Self.inForce(base) == (8, 2) })
        let raisedAfter = ContinuousClock.now - raised

        // A bad value: rejected whole, with the start's error; the values in force stay.
        try Self.write(["DB_CONNECTION_LIMIT=3", "DB_CB_FAILURE_THRESHOLD=zero", interval], to: envFile)
        #expect(try await eventually(within: .seconds(5)) { server.standardError.contains("new settings rejected") })
        #expect(try await Self.inForce(base) == (8, 2), "the old values stay")
        let atStart = try ServerProcess(
            binary: reliabledbBinary,
            arguments: ["serve", "--port", "0", "--env-file", "/nonexistent/.env"],
            environment: [
                "DATABASE_URL": try TestServer.environment("RELIABLEDB_TEST_POSTGRES_URL"),
                "DB_CB_FAILURE_THRESHOLD": "zero",
            ]
        )
        #expect(await atStart.exitStatus() == 2, "a start with the bad value fails")
        let problem = #"DB_CB_FAILURE_THRESHOLD="zero": expected"#
        #expect(atStart.standardError.contains(problem), "\(atStart.standardError)")
        #expect(server.standardError.contains(problem), "\(server.standardError.suffix(2000))")

        // Down, under load: fewer connections, no failed request.
        let lowered = ContinuousClock.now
        try Self.write(
            ["DB_CONNECTION_LIMIT=2", "DB_CB_FAILURE_THRESHOLD=2", interval, "DB_POOL_TIMEOUT=9"],
            to: envFile
        )
        #expect(try await eventually(within: .seconds(5)) { try await Self.inForce(base) == (2, 2) })
        let loweredAfter = ContinuousClock.now - lowered
        try await Task.sleep(for: .seconds(1))
        stop.withLock { $0 = true }
        try await load.value
        let (ok, failed) = results.withLock { ($0.ok, $0.failed) }
        let health = try await PostgresBackendTests.fetch("\(base)/health").body
        print(
            "fault report: live settings under load: raised in force after \(raisedAfter), lowered after \(loweredAfter);"
                + " \(ok) requests ok, \(failed.count) failed; a bad value rejected with the start's error"
        )
        #expect(failed.isEmpty, "\(failed.prefix(5))")
        #expect(ok > 50)
        #expect(health.contains(#""total":"#))
        let settingsLog = server.standardError.split(separator: "\n").filter { $0.contains("reliabledb.settings") }
        print(settingsLog.joined(separator: "\n"))
        #expect(
            server.standardError.contains("take effect at the next start: DB_POOL_TIMEOUT"),
            "\(server.standardError.suffix(2000))"
        )
        server.signal(SIGTERM)
        #expect(await server.exitStatus() == 0)
    }
}
