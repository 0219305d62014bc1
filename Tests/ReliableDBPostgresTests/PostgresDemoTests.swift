import AsyncHTTPClient
import Foundation
import NIOCore
import ReliableDBTestSupport
import Testing

extension PostgresBackendTests {
    /// Graceful degradation, as a user of `serve --demo` sees it: with the database
    /// down and the breaker open, a read answers with its last good result, marked degraded.
    @Test func theDemoAnswersFromItsLastGoodReadWhileTheBreakerIsOpen() async throws {
        let server = try Self.demoServer(["DB_CB_FAILURE_THRESHOLD": "2", "DB_CB_TIMEOUT": "600000"])
        let base = "http://127.0.0.1:\(try await server.waitForPort())/api"
        let fresh = try await Self.fetch("\(base)/users")
        #expect(fresh.status == 200)
        #expect(fresh.body.contains("\"degraded\":false"))
        #expect(fresh.body.contains("ana@carmen.example"))

        try await TestServer.control("stop")
        // The first failures open the breaker; from then on the read answers from its last result.
        var degraded: Fetched?
        #expect(
            try await eventually {
                let response = try await Self.fetch("\(base)/users")
                if response.degradedHeader?.hasPrefix("cached; age=") == true { degraded = response }
                return degraded != nil
            }
        )
        #expect(degraded?.status == 200)
        #expect(degraded?.body.contains("\"degraded\":true") == true)
        #expect(degraded?.body.contains("ana@carmen.example") == true, "the last good list, not an empty one")
        // A read never answered before has nothing to fall back on: the breaker's 503.
        let neverRead = try await Self.fetch("\(base)/orders?user=2")
        #expect(neverRead.status == 503)
        #expect(neverRead.retryAfter != nil)
        try await TestServer.control("start")

        server.signal(SIGTERM)
        #expect(await server.exitStatus() == 0)
    }

    /// `DB_LOAD_SHEDDING` from the environment, as `serve` runs it: with one operation allowed in
    /// flight, concurrent writes beyond it are answered 503 with `Retry-After` at once, and the
    /// shedding shows in `/api/health`.
    @Test func theDemoShedsLoadWhenTheEnvironmentTurnsItOn() async throws {
        let server = try Self.demoServer([
            "DB_LOAD_SHEDDING": "true", "DB_MAX_CONCURRENT_OPERATIONS": "1", "DB_LOAD_SHEDDING_ADAPTIVE": "false",
        ])
        let base = "http://127.0.0.1:\(try await server.waitForPort())/api"
        var statuses: [Int: Int] = [:]
        var shed: Fetched?
        for _ in 0..<10 where shed == nil {
            let round = try await withThrowingTaskGroup(of: Fetched.self) { group in
                for _ in 0..<40 {
                    group.addTask {
                        let body = #"{"email":"\#(UUID().uuidString)@shed.example","name":"Shed","bio":"-"}"#
                        return try await Self.fetch("\(base)/users", posting: body)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            for response in round { statuses[response.status, default: 0] += 1 }
            shed = round.first { $0.status == 503 }
        }
        #expect(shed?.retryAfter == "1", "\(statuses)")
        #expect(shed?.body.contains("overloaded") == true, "\(shed?.body ?? "")")
        #expect(statuses.keys.allSatisfy { [201, 503].contains($0) }, "\(statuses)")
        let health = try await Self.fetch("\(base)/health")
        #expect(health.body.contains("\"loadShedding\""), "\(health.body)")
        server.signal(SIGTERM)
        #expect(await server.exitStatus() == 0)
    }

    /// `serve --demo` on the outage server, with `environment` added.
    static func demoServer(_ environment: [String: String]) throws -> ServerProcess {
        try ServerProcess(
            binary: reliabledbBinary,
            arguments: ["serve", "--demo", "--port", "0", "--drain-seconds", "0", "--env-file", "/nonexistent/.env"],
            environment: environment.merging(
                ["DATABASE_URL": try TestServer.environment("RELIABLEDB_TEST_OUTAGE_POSTGRES_URL")]
            ) { own, _ in own }
        )
    }

    struct Fetched {
        var status: Int
        var body: String
        var degradedHeader: String?
        var retryAfter: String?
    }

    /// GET `url`, or POST `body` (JSON) to it.
    static func fetch(_ url: String, posting body: String? = nil) async throws -> Fetched {
        var request = HTTPClientRequest(url: url)
        if let body {
            request.method = .POST
            request.body = .bytes(ByteBuffer(string: body))
            request.headers.add(name: "Content-Type", value: "application/json")
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 1 << 20)
        return Fetched(
            status: Int(response.status.code),
            body: String(buffer: body),
            degradedHeader: response.headers.first(name: "X-ReliableDB-Degraded"),
            retryAfter: response.headers.first(name: "Retry-After")
        )
    }
}
