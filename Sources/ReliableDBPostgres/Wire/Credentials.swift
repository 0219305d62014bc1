import Foundation
import ReliableDB
import Synchronization

/// The user and password a new connection authenticates with, and how long they may be used.
public struct PostgresCredentials: Sendable {
    /// The role to log in as; nil keeps the URL's user. Vault's dynamic secrets change it too.
    public var username: String?
    /// The password or token. Only the connect reads it; it is never logged or shown.
    public var password: Secret<String>
    /// How long new connections may reuse these before the provider is asked again (an IAM token's
    /// validity minus a margin); nil or zero asks for every new connection.
    public var lifetime: Duration?

    public init(username: String? = nil, password: String, lifetime: Duration? = nil) {
        self.username = username
        self.password = Secret(password, redacted: "***")
        self.lifetime = lifetime
    }
}

/// Where new connections get their credentials, so that a rotated password or a short-lived token
/// needs no restart (Sources/ReliableDBPostgres/Documentation.docc/DayTwo.md).
///
/// Asked for every new connection, or once per ``PostgresCredentials/lifetime``; a connect the
/// server refuses with 28P01 (wrong password) asks again once before it fails. Open connections
/// are never disturbed: they authenticated already.
public struct PostgresCredentialsProvider: Sendable {
    /// What errors and logs call the source (`DB_PASSWORD_FILE /run/secrets/db`), never a value.
    public let name: String
    let fetch: @Sendable () async throws -> PostgresCredentials

    /// A provider calling `fetch`, e.g. to sign an RDS IAM token or read a Vault lease. Its errors
    /// are shown by their type and description: keep secrets out of them.
    public init(name: String, _ fetch: @escaping @Sendable () async throws -> PostgresCredentials) {
        self.name = name
        self.fetch = fetch
    }

    /// The containers' secret-file convention (`DB_PASSWORD_FILE`): the file holds the password
    /// (one trailing line ending, `\n` or `\r\n`, ignored) and is read again for every new connection, so a rewritten
    /// Kubernetes secret is used without a restart.
    public static func passwordFile(_ path: String) -> PostgresCredentialsProvider {
        let name = "DB_PASSWORD_FILE \(path)"
        return PostgresCredentialsProvider(name: name) {
            try PostgresCredentials(password: readPasswordFile(path))
        }
    }

    /// The password in the file at `path`, or an error that names the file and never its content.
    package static func readPasswordFile(_ path: String) throws -> String {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw PostgresCredentialsError(source: "DB_PASSWORD_FILE \(path)", reason: "the file cannot be read")
        }
        guard var text = String(data: data, encoding: .utf8) else {
            throw PostgresCredentialsError(source: "DB_PASSWORD_FILE \(path)", reason: "the file is not UTF-8 text")
        }
        // One line ending: "\r\n" is a single Character, as is "\n".
        if text.hasSuffix("\r\n") || text.hasSuffix("\n") { text.removeLast() }
        guard !text.isEmpty else {
            throw PostgresCredentialsError(source: "DB_PASSWORD_FILE \(path)", reason: "the file is empty")
        }
        return text
    }
}

/// The credentials provider failed: the connect fails with this, as with a refused connect.
public struct PostgresCredentialsError: Error, CustomStringConvertible, Sendable {
    /// The provider's ``PostgresCredentialsProvider/name``.
    public var source: String
    /// What went wrong, without any secret.
    public var reason: String

    public var description: String { "Cannot get the database credentials from \(source): \(reason)" }
}

/// The provider's last answer while its lifetime lasts: what every connector of one backend asks.
final class CredentialCache: Sendable {
    let provider: PostgresCredentialsProvider
    private let clock: any ReliabilityClock
    private let cached = Mutex<(credentials: PostgresCredentials, until: MonotonicTime)?>(nil)
    private let asked = Atomic<Int>(0)

    init(provider: PostgresCredentialsProvider, clock: any ReliabilityClock) {
        self.provider = provider
        self.clock = clock
    }

    /// How many times the provider was asked: for tests and the day-two guide's figures.
    var timesAsked: Int { asked.load(ordering: .relaxed) }

    /// The credentials for a new connection: the cached ones while their lifetime lasts, unless
    /// `refresh` (the server refused them), else the provider's new answer.
    func current(refresh: Bool) async throws -> PostgresCredentials {
        let now = clock.now
        if !refresh, let cached = cached.withLock({ $0 }), now < cached.until { return cached.credentials }
        asked.add(1, ordering: .relaxed)
        let fresh: PostgresCredentials
        do {
            fresh = try await provider.fetch()
        } catch let error as PostgresCredentialsError {
            throw error
        } catch {
            throw PostgresCredentialsError(source: provider.name, reason: "\(type(of: error)): \(error)")
        }
        let lifetime = fresh.lifetime ?? .zero
        cached.withLock { $0 = lifetime > .zero ? (fresh, clock.now + lifetime) : nil }
        return fresh
    }
}
