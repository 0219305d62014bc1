import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import ReliableDB
import Synchronization

/// The Carmen demo's API: the library in use, including graceful degradation through the
/// library's ``ReliableDB/ReliableDatabase/withFallback(_:_:)``: while the database fails reads
/// (breaker open, unreachable, overloaded), they answer with their last good result up to 5 minutes
/// old, marked `"degraded": true` and with an `X-ReliableDB-Degraded: cached; age=N` header.
struct DemoRoutes: Sendable {
    let store: any DemoStore
    /// The database's own classification, so a lost connection answers 503 (try again), not 500.
    private let classify: @Sendable (any Error) -> ErrorClass
    /// The database's read fallback, for a read encoded as JSON.
    private let withFallback:
        @Sendable (ReadFallback, @escaping @Sendable () async throws -> Data) async throws -> Degradable<Data>

    init<Backend: DatabaseBackend>(database: ReliableDatabase<Backend>, store: any DemoStore) {
        self.store = store
        classify = { database.classify($0).errorClass }
        withFallback = { fallback, read in try await database.withFallback(fallback) { try await read() } }
    }

    func register(on router: Router<BasicRequestContext>) {
        router.get("/api/users") { _, _ in
            await read(key: "users") { ["users": try await store.listUsers()] }
        }
        router.post("/api/users") { request, context in
            let user: NewUser
            do {
                user = try await request.decode(as: NewUser.self, context: context)
            } catch {
                return Self.json(400, ["error": "expected a JSON body {\"email\", \"name\", \"bio\"}"])
            }
            guard user.email.contains("@"), !user.name.isEmpty else {
                return Self.json(400, ["error": "email must contain '@' and name must not be empty"])
            }
            do {
                return Self.json(201, try await store.createUser(user))
            } catch is DuplicateEmail {
                return Self.json(409, ["error": "a user with this email exists"])
            } catch {
                return failure(error)
            }
        }
        router.get("/api/orders") { request, _ in
            guard let raw = request.uri.queryParameters["user"], let userID = Int64(String(raw)) else {
                return Self.json(400, ["error": "expected ?user=<numeric user id>"])
            }
            return await read(key: "orders-\(userID)") { ["orders": try await store.orders(ofUser: userID)] }
        }
    }

    private func read<Value: Encodable & Sendable>(
        key: String,
        _ body: @escaping @Sendable () async throws -> [String: Value]
    ) async -> Response {
        do {
            let answer = try await withFallback(ReadFallback(key: key, maxAge: .seconds(300))) {
                Self.serialize(Self.encodeObject(try await body()))
            }
            var document = (try? JSONSerialization.jsonObject(with: answer.value) as? [String: Any]) ?? [:]
            document["degraded"] = answer.isDegraded
            var response = Self.raw(200, Self.serialize(document))
            if let degradation = answer.degradation {
                response.headers[HTTPField.Name(Degradation.headerName)!] = degradation.headerValue
            }
            return response
        } catch {
            return failure(error)
        }
    }

    /// Maps the pipeline's errors to HTTP: breaker open and load shed 503 with `Retry-After`,
    /// timeout 504, pool timeout and a lost or refused connection 503 (the database is unavailable;
    /// try again), anything else 500.
    func failure(_ error: any Error) -> Response {
        switch error {
        case let error as DatabaseCircuitBreakerError:
            var response = Self.json(503, ["error": error.description])
            if let retryAfter = error.retryAfter {
                response.headers[.retryAfter] = String(Int(retryAfter.seconds.rounded(.up)))
            }
            return response
        case let error as DatabaseOverloadedError:
            var response = Self.json(503, ["error": error.description])
            response.headers[.retryAfter] = "1"
            return response
        case let error as DatabaseTimeoutError:
            return Self.json(504, ["error": error.description])
        case let error as DatabasePoolTimeoutError:
            return Self.json(503, ["error": error.description])
        case let error as CommitOutcomeUnknownError:
            return Self.json(503, ["error": error.description])
        case let error as DatabaseRetryError where [.connection, .overload].contains(error.lastErrorClass):
            return Self.json(503, ["error": error.description])
        default:
            switch classify(error) {
            case .connection, .overload:
                // The error's type (never its text, which may name a server) says which path failed.
                return Self.json(503, ["error": "the database is unavailable; try again (\(type(of: error)))"])
            default:
                return Self.json(500, ["error": "database error"])
            }
        }
    }

    static func json(_ status: Int, _ value: some Encodable) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return raw(status, (try? encoder.encode(value)) ?? Data("{}".utf8))
    }

    static func raw(_ status: Int, _ data: Data) -> Response {
        Response(
            status: HTTPResponse.Status(code: status),
            headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: data))
        )
    }

    private static func encodeObject(_ value: some Encodable) -> [String: Any] {
        guard let data = try? JSONEncoder().encode(value),
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { return [:] }
        return object
    }

    private static func serialize(_ object: [String: Any]) -> Data {
        (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
    }
}
