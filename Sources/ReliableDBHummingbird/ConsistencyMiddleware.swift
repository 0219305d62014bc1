import HTTPTypes
import Hummingbird
import ReliableDB

/// Read-your-writes per request: each request runs in a ``ReliableDB/ConsistencySession`` that
/// starts at the token it carries (the `X-ReliableDB-Consistency` header, else the
/// `reliabledb-consistency` cookie), so its reads and writes through any `ReliableDatabase`
/// (Fluent's too) take part without changes to the routes. When the request wrote, the newer
/// token goes back in both the header and the cookie, so the next request, served by any
/// instance, reads its own writes (Sources/ReliableDB/Documentation.docc/ReadYourWrites.md).
///
/// ```swift
/// router.add(middleware: ConsistencyMiddleware())
/// ```
public struct ConsistencyMiddleware<Context: RequestContext>: RouterMiddleware {
    /// Whether the cookie is sent only over HTTPS (set it behind TLS).
    public var secureCookie: Bool

    public init(secureCookie: Bool = false) {
        self.secureCookie = secureCookie
    }

    public func handle(
        _ request: Request,
        context: Context,
        next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        let header = HTTPField.Name(ConsistencySession.headerName)!
        let token = ConsistencySession.token(
            header: request.headers[header],
            cookie: request.cookies[ConsistencySession.cookieName]?.value
        )
        let session = ConsistencySession(token: token)
        var response = try await ConsistencySession.$current.withValue(session) {
            try await next(request, context)
        }
        if let newer = session.token, newer != token {
            response.headers[header] = newer
            response.setCookie(
                Cookie(
                    name: ConsistencySession.cookieName,
                    value: newer,
                    maxAge: Int(ConsistencySession.cookieMaxAge.components.seconds),
                    path: "/",
                    secure: secureCookie,
                    httpOnly: true
                )
            )
        }
        return response
    }
}
