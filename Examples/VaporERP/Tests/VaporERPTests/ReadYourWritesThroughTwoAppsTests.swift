import AsyncHTTPClient
import Foundation
import NIOCore
import ReliableDB
import ReliableDBTestSupport
import Testing

/// Two `vapor-erp` processes, as two replicas of the service, over the primary and a standby that
/// applies WAL 300 ms late, with standby reads: a user created through one and fetched at once
/// through the other. With the cookie the first one sets (ReliableDBConsistencyMiddleware), the
/// fetch finds the user every time; without it, it misses.
@Suite("Read your writes through two app processes", .timeLimit(.minutes(3)))
struct ReadYourWritesThroughTwoAppsTests {
    static var binary: URL { reliabledbBinary.deletingLastPathComponent().appendingPathComponent("vapor-erp") }

    /// The scratch database's URL with the delayed standby as a second server, reads to it.
    static func url(_ scratch: ScratchDatabase) throws -> String {
        let standby = try ScratchDatabase.serverURL("RELIABLEDB_TEST_DELAYED_STANDBY_URL")
        var components = URLComponents(string: scratch.url)!
        let primary = "\(components.host!):\(components.port!)"
        components.queryItems! += [
            URLQueryItem(name: "standby_reads", value: "true"),
            URLQueryItem(name: "max_standby_lag", value: "30"),
        ]
        // URLComponents cannot hold two hosts: put the second one in by hand.
        return components.string!.replacingOccurrences(
            of: primary,
            with: "\(primary),\(standby.host!):\(standby.port!)"
        )
    }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func app(_ environment: [String: String]) async throws -> (ServerProcess, Int) {
        let port = try freePort()
        let process = try ServerProcess(
            binary: binary,
            arguments: ["serve", "--hostname", "127.0.0.1", "--port", "\(port)"],
            environment: environment
        )
        for _ in 0..<300 {
            let response = try? await HTTPClient.shared.execute(
                HTTPClientRequest(url: "http://127.0.0.1:\(port)/api/health/live"),
                timeout: .seconds(1)
            )
            if response?.status == .ok { return (process, port) }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw AppDidNotStart(stderr: process.standardError)
    }

    struct AppDidNotStart: Error {
        var stderr: String
    }

    @Test func aUserCreatedOnOneAppIsFoundOnTheOtherWithTheCookie() async throws {
        let scratch = try await ScratchDatabase.create(variable: "RELIABLEDB_TEST_HA_PRIMARY_URL", prefix: "ryw")
        let environment = ["DATABASE_URL": try Self.url(scratch), "DB_CONNECTION_LIMIT": "10"]
        var standby = URLComponents(string: scratch.url)!
        let standbyServer = try ScratchDatabase.serverURL("RELIABLEDB_TEST_DELAYED_STANDBY_URL")
        standby.port = standbyServer.port
        /// Whether the standby answers `sql` on the scratch database, within 10 s.
        func standbyAnswers(_ sql: String) async throws -> Bool {
            for _ in 0..<100 {
                if (try? await SideConnection.with(standby) { try await $0.int(sql) }) != nil { return true }
                try await Task.sleep(for: .milliseconds(100))
            }
            return false
        }
        try #require(try await standbyAnswers("SELECT 1"), "the standby did not replay CREATE DATABASE")
        // With standby reads, as the apps run: the migrator reads its log right after creating it,
        // which fails (42P01) if that read goes to the lagging standby.
        let migrate = try ServerProcess(binary: Self.binary, arguments: ["migrate", "--yes"], environment: environment)
        let migrated = await migrate.exitStatus()
        #expect(migrated == 0, "\(migrate.standardOutput) \(migrate.standardError)")
        try #require(migrated == 0)
        // The standby has the tables 300 ms later (longer on a busy machine).
        try #require(
            try await standbyAnswers("SELECT count(*)::int FROM users"),
            "the standby did not replay the migrations"
        )
        let (a, portA) = try await Self.app(environment)
        let (b, portB) = try await Self.app(environment)

        func pairs(withCookie: Bool, workers: Int, each: Int) async throws -> (pairs: Int, misses: Int) {
            try await withThrowingTaskGroup(of: (Int, Int).self) { group in
                for worker in 0..<workers {
                    group.addTask {
                        var (count, misses) = (0, 0)
                        for n in 0..<each {
                            var post = HTTPClientRequest(url: "http://127.0.0.1:\(portA)/api/users")
                            post.method = .POST
                            post.headers.add(name: "Content-Type", value: "application/json")
                            let email = "ryw-\(withCookie)-\(worker)-\(n)@example.com"
                            post.body = .bytes(ByteBuffer(string: #"{"email": "\#(email)", "name": "RYW"}"#))
                            let created = try await HTTPClient.shared.execute(post, timeout: .seconds(30))
                            let body = try await created.body.collect(upTo: 1 << 20)
                            #expect(created.status == .ok, "\(String(buffer: body))")
                            let id = try #require(
                                (try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any])?["id"]
                                    as? String
                            )
                            var get = HTTPClientRequest(url: "http://127.0.0.1:\(portB)/api/users/\(id)")
                            if withCookie {
                                // What a browser sends back: the cookie the POST's answer set.
                                let cookie = try #require(
                                    created.headers["set-cookie"].first?.split(separator: ";").first.map(String.init)
                                )
                                #expect(cookie.hasPrefix("\(ConsistencySession.cookieName)="))
                                get.headers.add(name: "Cookie", value: cookie)
                            }
                            let fetched = try await HTTPClient.shared.execute(get, timeout: .seconds(30))
                            _ = try await fetched.body.collect(upTo: 1 << 20)
                            count += 1
                            if fetched.status == .notFound { misses += 1 } else { #expect(fetched.status == .ok) }
                        }
                        return (count, misses)
                    }
                }
                var total = (pairs: 0, misses: 0)
                for try await (count, misses) in group {
                    total.pairs += count
                    total.misses += misses
                }
                return total
            }
        }
        // The apps stop and the database goes whatever happens below.
        let outcome = await Result(catching: {
            (
                try await pairs(withCookie: false, workers: 4, each: 10),
                try await pairs(withCookie: true, workers: 8, each: 25)
            )
        })
        for app in [a, b] { app.signal(SIGTERM) }
        for app in [a, b] { _ = await app.exitStatus() }
        try await scratch.drop()
        let (without, with) = try outcome.get()
        print(
            "read-your-writes through two vapor-erp processes: without the cookie \(without.misses) of \(without.pairs) "
                + "GETs missed the user the POST created; with it \(with.misses) of \(with.pairs)"
        )
        #expect(without.misses > 0, "the standby must really lag, or this shows nothing")
        #expect(with.misses == 0)
    }
}
