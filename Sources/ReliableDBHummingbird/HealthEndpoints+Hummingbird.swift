import Foundation
import Hummingbird
import NIOCore
import ReliableDBHTTP

extension HealthEndpoints {
    /// The four endpoints as a route collection to mount into any Hummingbird router:
    /// `router.addRoutes(endpoints.routes(), atPath: "/api/health")`.
    /// Other methods on these paths answer 405 with `Allow: GET`.
    public func routes<Context: RequestContext>(
        context: Context.Type = BasicRequestContext.self
    ) -> RouteCollection<Context> {
        let routes = RouteCollection(context: Context.self)
        routes.get { request, _ in
            self.health(
                authorization: request.headers[.authorization],
                accept: request.headers[.accept]
            ).response
        }
        routes.get("metrics") { _, _ in self.metrics().response }
        routes.get("live") { _, _ in self.live().response }
        routes.get("ready") { _, _ in self.ready().response }
        for path in ["", "metrics", "live", "ready"] {
            for method in [HTTPRequest.Method.post, .put, .delete, .patch] {
                routes.on(RouterPath(path), method: method) { _, _ in
                    Response(status: .methodNotAllowed, headers: [.allow: "GET"])
                }
            }
        }
        return routes
    }
}

extension HealthEndpoints.Answer {
    var response: Response {
        Response(
            status: HTTPResponse.Status(code: status),
            headers: [.contentType: contentType, .cacheControl: cacheControl],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: body))
        )
    }
}
