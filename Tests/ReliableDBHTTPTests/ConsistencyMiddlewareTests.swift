import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import ReliableDB
import ReliableDBHummingbird
import Testing

/// The Hummingbird middleware: a request's session starts at its token (header first, then
/// cookie), and a newer one goes back in both; a request that wrote nothing sets nothing.
@Suite("Consistency middleware (Hummingbird)")
struct ConsistencyMiddlewareTests {
    static let earlier = WALPosition(systemIdentifier: "7311", timeline: 2, lsn: 0x3000148)
    static let later = WALPosition(systemIdentifier: "7311", timeline: 2, lsn: 0x3000200)

    func withApp(_ body: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        let router = Router()
        router.add(middleware: ConsistencyMiddleware())
        // What the request's session started at, and a write that moves it on.
        router.get("/seen") { _, _ in ConsistencySession.current?.token ?? "none" }
        router.post("/write") { _, _ in
            ConsistencySession.current?.advance(to: Self.later)
            return "written"
        }
        try await Application(router: router).test(.router, body)
    }

    @Test func theSessionStartsAtTheHeaderElseTheCookieAndAMalformedTokenStartsEmpty() async throws {
        try await withApp { client in
            let header = HTTPField.Name(ConsistencySession.headerName)!
            try await client.execute(uri: "/seen", method: .get, headers: [header: Self.earlier.token]) {
                #expect(String(buffer: $0.body) == Self.earlier.token)
                #expect($0.headers[.setCookie] == nil, "nothing written, nothing set")
            }
            try await client.execute(
                uri: "/seen",
                method: .get,
                headers: [.cookie: "\(ConsistencySession.cookieName)=\(Self.earlier.token)"]
            ) { #expect(String(buffer: $0.body) == Self.earlier.token) }
            try await client.execute(uri: "/seen", method: .get, headers: [header: "rdb9.x"]) {
                #expect(String(buffer: $0.body) == "none")
            }
        }
    }

    @Test func aWriteSendsTheNewerTokenBackInTheHeaderAndTheCookie() async throws {
        try await withApp { client in
            let header = HTTPField.Name(ConsistencySession.headerName)!
            try await client.execute(uri: "/write", method: .post, headers: [header: Self.earlier.token]) { response in
                #expect(response.headers[header] == Self.later.token)
                let cookie = try #require(response.headers[.setCookie])
                #expect(cookie.hasPrefix("\(ConsistencySession.cookieName)=\(Self.later.token)"))
                #expect(cookie.contains("Max-Age=300") && cookie.contains("HttpOnly"), "\(cookie)")
            }
        }
    }
}
