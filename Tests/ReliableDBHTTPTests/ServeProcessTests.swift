import AsyncHTTPClient
import Foundation
import GRDB
import NIOCore
import ReliableDBTestSupport
import Synchronization
import Testing

/// `reliabledb serve` as a user runs it: a separate process, real HTTP, a real SIGTERM.
@Suite("reliabledb serve as a process")
struct ServeProcessTests {
    static var binary: URL { reliabledbBinary }

    @Test func servesTheFourEndpointsAndShutsDownGracefullyOnSIGTERM() async throws {
        #expect(
            FileManager.default.isExecutableFile(atPath: Self.binary.path),
            "build reliabledb first: \(Self.binary.path)"
        )
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rdb-serve-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }

        let server = try ServerProcess(
            binary: Self.binary,
            arguments: [
                "serve", "--port", "0", "--drain-seconds", "2", "--env-file",
                directory.appendingPathComponent("none.env").path,
            ],
            environment: [
                "DATABASE_URL": "sqlite:\(directory.appendingPathComponent("serve.sqlite").path)",
                "DB_HEALTH_CHECK_INTERVAL": "200",
            ]
        )
        let port = try await server.waitForPort()
        let base = "http://127.0.0.1:\(port)/api/health"

        #expect(
            try await eventually { try await get("\(base)/ready").status == 200 },
            "ready once the first check passed"
        )
        let health = try await get(base)
        #expect(health.status == 200)
        #expect(health.contentType == "application/json")
        #expect(health.body.contains("\"status\":\"healthy\""))
        let live = try await get("\(base)/live")
        #expect(live.status == 200)
        #expect(live.body.contains("\"alive\":true"))
        let metrics = try await get("\(base)/metrics")
        #expect(metrics.status == 200)
        #expect(metrics.contentType == "text/plain; version=0.0.4; charset=utf-8")
        #expect(metrics.body.contains("db_health_score 100"))
        try await expectPromtoolAccepts(metrics.body, in: directory)

        server.signal(SIGTERM)
        #expect(try await eventually { try await get("\(base)/ready").status == 503 }, "ready turns 503 while draining")
        #expect(try await get("\(base)/live").status == 200, "still alive while draining")
        let status = await server.exitStatus()
        #expect(status == 0)
    }

    @Test func theCarmenDemoServesUsersProfilesAndOrders() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rdb-demo-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let server = try ServerProcess(
            binary: Self.binary,
            arguments: [
                "serve", "--demo", "--port", "0", "--drain-seconds", "0", "--env-file",
                directory.appendingPathComponent("none.env").path,
            ],
            environment: ["DATABASE_URL": "sqlite:\(directory.appendingPathComponent("demo.sqlite").path)"]
        )
        let port = try await server.waitForPort()
        let base = "http://127.0.0.1:\(port)/api"

        let users = try await get("\(base)/users")
        #expect(users.status == 200)
        #expect(users.body.contains("\"degraded\":false"))
        #expect(users.body.contains("ana@carmen.example"), "seeded on start")

        var create = HTTPClientRequest(url: "\(base)/users")
        create.method = .POST
        create.headers.add(name: "content-type", value: "application/json")
        create.body = .bytes(ByteBuffer(string: #"{"email":"dora@carmen.example","name":"Dora","bio":"Sales"}"#))
        let created = try await HTTPClient.shared.execute(create, timeout: .seconds(5))
        #expect(created.status.code == 201)
        let duplicate = try await HTTPClient.shared.execute(create, timeout: .seconds(5))
        #expect(duplicate.status.code == 409, "the email is unique; the caller's error is not retried")
        #expect(try await get("\(base)/users").body.contains("dora@carmen.example"))

        let orders = try await get("\(base)/orders?user=1")
        #expect(orders.status == 200)
        #expect(orders.body.contains("\"totalCents\":12990"))
        #expect(try await get("\(base)/orders?user=abc").status == 400)

        server.signal(SIGTERM)
        #expect(await server.exitStatus() == 0)
    }

    /// The core variables, the webhook's (read by ReliableDBWebhook) and the flags, in one error.
    @Test func aBadConfigurationExitsNonZeroListingEveryProblem() async throws {
        let server = try ServerProcess(
            binary: Self.binary,
            arguments: ["serve", "--port", "0", "--env-file", "/nonexistent/.env", "--alert-format", "teams"],
            environment: [
                "DATABASE_URL": "mysql://root:hunter2@localhost/db",
                "DB_CONNECTION_LIMIT": "lots",
                "DB_CB_TIMEOUT": "-1",
                "DB_ALERT_WEBHOOK_URL": "hooks.example.com/SECRETTOKEN",
                "DB_ALERT_WEBHOOK_FORMAT": "pagerduty",
            ]
        )
        let status = await server.exitStatus()
        #expect(status == 2)
        let errors = server.standardError
        #expect(errors.contains("Invalid configuration (6 problems)"), "the URL's problem once, not twice: \(errors)")
        for name in ["DATABASE_URL", "DB_CONNECTION_LIMIT", "DB_CB_TIMEOUT", "DB_ALERT_WEBHOOK_URL"] {
            #expect(errors.contains(name))
        }
        #expect(errors.contains("DB_ALERT_WEBHOOK_FORMAT=\"pagerduty\": expected one of slack, alertmanager"))
        #expect(errors.contains("--alert-format=\"teams\""))
        #expect(!errors.contains("hunter2") && !errors.contains("SECRETTOKEN"))
    }
}

struct Fetched {
    var status: Int
    var contentType: String?
    var body: String
}

func get(_ url: String) async throws -> Fetched {
    let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(5))
    let body = try await response.body.collect(upTo: 1 << 20)
    return Fetched(
        status: Int(response.status.code),
        contentType: response.headers.first(name: "content-type"),
        body: String(buffer: body)
    )
}

/// Polls a condition every few milliseconds for up to 20 s (a bound for a broken test, not timing).
func eventually(_ condition: () async throws -> Bool) async throws -> Bool {
    let start = ContinuousClock.now
    while ContinuousClock.now - start < .seconds(20) {
        if (try? await condition()) == true { return true }
        try await Task.sleep(for: .milliseconds(20))
    }
    return false
}

@Suite("reliabledb check as a process")
struct CheckProcessTests {
    @Test func checkAllPassesAgainstTheEmbeddedSQLite() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rdb-check-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let database = directory.appendingPathComponent("check.sqlite").path
        let process = try ServerProcess(
            binary: ServeProcessTests.binary,
            arguments: ["check", "--all", "--json", "--env-file", directory.appendingPathComponent("none.env").path],
            environment: ["DATABASE_URL": "sqlite:\(database)"]
        )
        let status = await process.exitStatus()
        let report = try JSONDecoder().decode(CheckReportBody.self, from: Data(process.standardOutput.utf8))
        #expect(status == 0, "\(report.results.filter { !$0.passed })")
        #expect(report.failed == 0)
        let groups = Set(report.results.map(\.group))
        #expect(
            groups == [
                "connection", "circuit breaker", "degradation", "timeouts", "monitoring", "performance", "recovery",
            ]
        )
        // Nothing left behind: only the application's own schema (none) in the file.
        let tables = try await ServerProcess.sqliteTables(database)
        #expect(tables.allSatisfy { !$0.hasPrefix("reliabledb_check") }, "\(tables)")
    }
}

struct CheckReportBody: Decodable {
    struct Result: Decodable {
        var group: String
        var name: String
        var passed: Bool
        var durationMs: Double
        var detail: String
    }

    var database: String
    var passed: Int
    var failed: Int
    var results: [Result]
}

extension ServerProcess {
    /// The table names in a SQLite file, read with GRDB outside ReliableDB.
    static func sqliteTables(_ path: String) async throws -> [String] {
        let queue = try DatabaseQueue(path: path)
        return try await queue.read {
            try String.fetchAll($0, sql: "SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    }
}

/// Runs the real `promtool check metrics` on a scrape: every family has HELP and TYPE, and the only
/// remarks are on two names kept for the dashboards and alerts that use them
/// (`db_connections_total` is a gauge, `db_query_duration_avg_ms` abbreviates its unit).
func expectPromtoolAccepts(_ exposition: String, in directory: URL) async throws {
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }
    let path = try #require(promtool, "promtool is missing: scripts/test installs Debian's prometheus package")
    let file = directory.appendingPathComponent("scrape.prom")
    try exposition.write(to: file, atomically: true, encoding: .utf8)
    let (_, output) = try await runToCompletion("/bin/sh", ["-c", "\"$0\" check metrics < \"$1\"", path, file.path])
    let remarks = output.split(separator: "\n").map(String.init).filter { !$0.isEmpty }
    let documentedNames: Set = ["db_connections_total", "db_query_duration_avg_ms"]
    let others = remarks.filter { line in !documentedNames.contains(String(line.prefix { $0 != " " })) }
    #expect(others.isEmpty, "promtool check metrics: \(others)")
    #expect(remarks.count <= 2)
}
