import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import ReliableDB
import Synchronization

/// The Carmen demo API: the library in use, including the seed's graceful degradation: while the
/// circuit breaker is open, reads answer with the last good result, marked `"degraded": true`
/// (and an `X-ReliableDB-Degraded` header), instead of failing.
struct DemoRoutes: Sendable {
    let store: any DemoStore
    /// The database's own classification, so a lost connection answers 503 (try again), not 500.
    private let classify: @Sendable (any Error) -> ErrorClass
    private let lastGood = LastGoodCache()

    init<Backend: DatabaseBackend>(database: ReliableDatabase<Backend>, store: any DemoStore) {
        self.store = store
        classify = { database.classify($0).errorClass }
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
        _ body: () async throws -> [String: Value]
    ) async -> Response {
        do {
            let value = try await body()
            var document = Self.encodeObject(value)
            document["degraded"] = false
            let data = Self.serialize(document)
            lastGood.store(data, for: key)
            return Self.raw(200, data)
        } catch let error as DatabaseCircuitBreakerError {
            guard let cached = lastGood.value(for: key) else { return failure(error) }
            var document = (try? JSONSerialization.jsonObject(with: cached) as? [String: Any]) ?? [:]
            document["degraded"] = true
            var response = Self.raw(200, Self.serialize(document))
            response.headers[HTTPField.Name("X-ReliableDB-Degraded")!] = "true"
            return response
        } catch {
            return failure(error)
        }
    }

    /// Maps the pipeline's errors to HTTP: breaker open 503, timeout 504, pool timeout and a lost or
    /// refused connection 503 (the database is unavailable; try again), anything else 500.
    func failure(_ error: any Error) -> Response {
        switch error {
        case let error as DatabaseCircuitBreakerError:
            var response = Self.json(503, ["error": error.description])
            if let retryAfter = error.retryAfter {
                response.headers[.retryAfter] = String(Int(retryAfter.seconds.rounded(.up)))
            }
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
                return Self.json(503, ["error": "the database is unavailable; try again"])
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

/// The last successful answer per read, served while the breaker is open.
final class LastGoodCache: Sendable {
    private let entries = Mutex<[String: Data]>([:])

    func store(_ data: Data, for key: String) {
        entries.withLock { entries in
            if entries.count >= 1000, entries[key] == nil { entries.removeAll() }
            entries[key] = data
        }
    }

    func value(for key: String) -> Data? {
        entries.withLock { $0[key] }
    }
}
