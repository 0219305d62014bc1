import AsyncHTTPClient
import Foundation
import NIOCore
import ReliableDB
import ReliableDBTestSupport
import Synchronization
import Testing

/// `reliabledb serve` stopped with SIGTERM while its requests are wedged on a blackholed
/// connection: it must exit within `--drain-seconds` plus the longest deadline.
@Suite("Shutdown with wedged operations")
struct ShutdownTests {
    @Test(.timeLimit(.minutes(2)))
    func sigtermWithRequestsWedgedOnABlackholeExitsWithinTheBound() async throws {
        let direct = try FaultServers.url()
        let password = try FaultServers.environment("RELIABLEDB_TEST_POSTGRES_PASSWORD")
        let proxy = try await FaultProxy.start(upstreamHost: direct.host, upstreamPort: direct.port)
        let server = try ServerProcess(
            binary: reliabledbBinary,
            arguments: ["serve", "--demo", "--port", "0", "--drain-seconds", "1", "--env-file", "/nonexistent.env"],
            environment: [
                "DATABASE_URL":
                    "postgres://\(direct.username):\(password)@127.0.0.1:\(proxy.port)/\(direct.database)?sslmode=disable&application_name=\(direct.applicationName)",
                "DB_HEALTH_CHECK_INTERVAL": "500",
                "DB_CB_FAILURE_THRESHOLD": "1000",
            ]
        )
        let port = try await server.waitForPort()
        let users = "http://127.0.0.1:\(port)/api/users"
        #expect(try await eventually { try await fetch(users).status == 200 }, "the demo answers before the fault")

        try await proxy.setMode(.blackhole)
        let requests = (0..<6).map { _ in Task { try? await fetch(users, timeout: .seconds(60)) } }
        try await Task.sleep(for: .milliseconds(500))  // the requests are now waiting on the blackhole
        let signalled = ContinuousClock.now
        server.signal(SIGTERM)
        let status = await server.exitStatus()
        let took = ContinuousClock.now - signalled
        for request in requests { _ = await request.value }
        try await proxy.shutdown()
        // The demo's reads have the default query deadline, 10 s.
        let bound = Duration.seconds(1) + .seconds(10)
        print("fault report: SIGTERM with 6 requests wedged on a blackhole: exited \(status) after \(took)")
        #expect(took <= bound, "serve took \(took) to stop; stderr: \(server.standardError.suffix(2_000))")
        #expect(status == 0)
        #expect(!server.standardError.contains(password))
    }
}

struct Fetched {
    var status: Int
    var body: String
}

func fetch(_ url: String, timeout: TimeAmount = .seconds(5)) async throws -> Fetched {
    let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: timeout)
    let body = try await response.body.collect(upTo: 1 << 20)
    return Fetched(status: Int(response.status.code), body: String(buffer: body))
}
