import ReliableDB
import Vapor

/// Read-your-writes per request: each request runs in a ``ReliableDB/ConsistencySession`` that
/// starts at the token it carries (the `X-ReliableDB-Consistency` header, else the
/// `reliabledb-consistency` cookie), so its reads and writes through any `ReliableDatabase`,
/// Fluent's included, take part without changes to the routes. When the request wrote, the newer
/// token goes back in both the header and the cookie, so the next request, served by any
/// instance, reads its own writes (Sources/ReliableDB/Documentation.docc/ReadYourWrites.md).
///
/// ```swift
/// app.middleware.use(ReliableDBConsistencyMiddleware())
/// ```
public struct ReliableDBConsistencyMiddleware: AsyncMiddleware {
    /// Whether the cookie is sent only over HTTPS (set it behind TLS).
    public var secureCookie: Bool

    public init(secureCookie: Bool = false) {
        self.secureCookie = secureCookie
    }

    public func respond(to request: Request, chainingTo next: any AsyncResponder) async throws -> Response {
        let token = ConsistencySession.token(
            header: request.headers.first(name: ConsistencySession.headerName),
            cookie: request.cookies[ConsistencySession.cookieName]?.string
        )
        let session = ConsistencySession(token: token)
        let response = try await ConsistencySession.$current.withValue(session) {
            try await next.respond(to: request)
        }
        if let newer = session.token, newer != token {
            response.headers.replaceOrAdd(name: ConsistencySession.headerName, value: newer)
            response.cookies[ConsistencySession.cookieName] = HTTPCookies.Value(
                string: newer,
                maxAge: Int(ConsistencySession.cookieMaxAge.components.seconds),
                path: "/",
                isSecure: secureCookie,
                isHTTPOnly: true,
                sameSite: .lax
            )
        }
        return response
    }
}
