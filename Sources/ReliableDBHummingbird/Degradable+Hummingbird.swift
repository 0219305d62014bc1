import HTTPTypes
import Hummingbird
import ReliableDB

/// A route can return a ``ReliableDB/ReliableDatabase/withFallback(_:_:)`` answer as is: the
/// value's response, with `X-ReliableDB-Degraded` when it is degraded, so clients and caches can
/// tell an answer from a standby or from the kept result.
extension Degradable: ResponseGenerator where Value: ResponseGenerator {
    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = try value.response(from: request, context: context)
        if let degradation {
            response.headers[HTTPField.Name(Degradation.headerName)!] = degradation.headerValue
        }
        return response
    }
}
