import Foundation
import Logging
import PostgresNIO
import ReliableDB
import ReliableDBPostgres
import ReliableDBTestSupport
import ReliableDBTesting
import Testing

/// Credentials that rotate (`DB_PASSWORD_FILE`, a provider): against the real server, a role's
/// password changed under load while connections are retired by lifetime, with the defaults users
/// get (retries, breaker, timeouts).
@Suite("Rotating credentials")
struct CredentialsTests {
    /// A login role of its own, so changing its password disturbs no other test.
    struct Role {
        let name = "rdb_rotating_\(UUID().uuidString.prefix(8).lowercased())"
        let observer: Observer

        /// Runs `body` with a new role whose password is `password`, and drops the role (closing
        /// the observer) whatever happens: PostgresNIO traps on a connection dropped open.
        static func with<T>(password: String, _ body: (Role) async throws -> T) async throws -> T {
            let role = Role(observer: try await Observer.connect())
            do {
                try await role.setPassword(password)
                let result = try await body(role)
                try await role.drop()
                return result
            } catch {
                try? await role.drop()
                try? await role.observer.connection.close()
                throw error
            }
        }

        func setPassword(_ password: String) async throws {
            let exists = try await observer.count("SELECT count(*)::int FROM pg_roles WHERE rolname = '\(name)'")
            let verb = exists == 0 ? "CREATE" : "ALTER"
            _ = try await observer.connection.query(
                PostgresQuery(unsafeSQL: "\(verb) ROLE \(name) LOGIN PASSWORD '\(password)'"),
                logger: observer.logger
            ).collect()
        }

        func drop() async throws {
            _ = try await observer.connection.query(
                PostgresQuery(
                    unsafeSQL:
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '\(name)'"
                ),
                logger: observer.logger
            ).collect()
            try await Task.sleep(for: .milliseconds(100))
            _ = try await observer.connection.query(
                PostgresQuery(unsafeSQL: "DROP ROLE IF EXISTS \(name)"),
                logger: observer.logger
            ).collect()
            try await observer.connection.close()
        }

        /// The URL logging in as this role, with no password of its own.
        func url(applicationName: String) throws -> PostgresURL {
            try TestServer.url(applicationName: applicationName) { url in
                url.username = name
                url.password = nil
            }
        }

        /// Whether a plain connect with `password` is let in (false on 28P01).
        func accepts(_ password: String) async throws -> Bool {
            let url = try url(applicationName: "rdb-credentials-check")
            do {
                let connection = try await PostgresConnection.connect(
                    configuration: .init(
                        host: url.host,
                        port: url.port,
                        username: name,
                        password: password,
                        database: url.database,
                        tls: .disable
                    ),
                    id: 9,
                    logger: Logger(label: "test.credentials")
                )
                try await connection.close()
                return true
            } catch let error as PSQLError where error.serverInfo?[.sqlState] == "28P01" {
                return false
            }
        }
    }

    /// Runs `workers` loops of `SELECT 1` until `body` returns and then `tail` more: the failures.
    static func load(
        _ db: ReliableDatabase<PostgresBackend>,
        workers: Int = 4,
        tail: Duration = .seconds(1),
        during body: @Sendable () async throws -> Void
    ) async throws -> (calls: Int, failures: [String]) {
        let stop = Locked(false)
        let results = Locked((calls: 0, failures: [String]()))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<workers {
                group.addTask {
                    while !stop.withLock({ $0 }) {
                        do {
                            _ = try await db.query(.read("select")) { connection in
                                try await connection.query("SELECT 1", logger: Logger(label: "test")).collect()
                            }
                            results.withLock { $0.calls += 1 }
                        } catch {
                            results.withLock {
                                $0.calls += 1
                                $0.failures.append(String(describing: error))
                            }
                        }
                    }
                }
            }
            try await body()
            try await Task.sleep(for: tail)
            stop.withLock { $0 = true }
            try await group.waitForAll()
        }
        return results.withLock { $0 }
    }

    /// The secret file rewritten as Kubernetes does (a new file renamed over the old one).
    static func write(_ password: String, to path: String) throws {
        try (password + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// `ALTER ROLE ... PASSWORD` and the file rewritten right after, under load, with connections
    /// retired every ~700 ms: no operation fails, the connections open afterwards use the new
    /// password (the old one is refused by then), and neither password is in any log line.
    @Test(.timeLimit(.minutes(1)))
    func aPasswordFileRewrittenUnderLoadFailsNothing() async throws {
        let old = "old-\(UUID().uuidString)"
        let new = "new-\(UUID().uuidString)"
        try await Role.with(password: old) { role in try await Self.rotateTheFile(role, old: old, new: new) }
    }

    private static func rotateTheFile(_ role: Role, old: String, new: String) async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("rdb-secret-\(role.name)").path
        try Self.write(old, to: path)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let logs = CapturedLogs()
        let application = "rdb-rotate-\(role.name.suffix(8))"
        let backend = try PostgresBackend(
            url: try role.url(applicationName: application),
            connectionLimit: 4,
            maxLifetime: .milliseconds(700),
            credentials: .passwordFile(path),
            logger: logs.logger(label: "test.credentials")
        )
        let db = try ReliableDatabase(backend: backend)
        let rotatedAt = Locked<Date?>(nil)
        let result = try await Self.load(db, tail: .seconds(2)) {
            try await Task.sleep(for: .milliseconds(1500))
            try await role.setPassword(new)
            try Self.write(new, to: path)
            rotatedAt.withLock { $0 = Date() }
        }
        let opened = try await role.observer.count(
            """
            SELECT count(*)::int FROM pg_stat_activity WHERE application_name = '\(application)'
            AND backend_start > now() - interval '1.5 seconds'
            """
        )
        try await db.shutdown()
        print(
            "fault report: password file rotated under load: \(result.calls) calls, \(result.failures.count) failed,"
                + " \(opened) connections opened in the last 1.5 s with the new password"
        )
        #expect(result.failures.isEmpty, "\(result.failures.prefix(3))")
        #expect(result.calls > 20)
        #expect(opened > 0, "connections retired by lifetime were opened again, with the new password")
        #expect(try await role.accepts(new))
        #expect(try await !role.accepts(old), "the old password is refused, so no new connection used it")
        let leaked = logs.records.filter { $0.rendered.contains(old) || $0.rendered.contains(new) }
        #expect(leaked.isEmpty, "\(leaked.map(\.rendered))")
    }

    /// A provider of short-lived tokens (as an IAM or Vault one), cached for 5 s while the server
    /// accepts only the newest, changed every second under load: a connect with a stale token is
    /// refused (28P01), asks the provider again once, and gets in. No operation fails.
    @Test(.timeLimit(.minutes(1)))
    func aProviderAskedAgainOnARefusedTokenFailsNothing() async throws {
        let generation = Locked(0)
        let base = UUID().uuidString
        @Sendable func token(_ n: Int) -> String { "token-\(base)-\(n)" }
        try await Role.with(password: token(0)) { role in
            try await Self.rotateTokens(role, generation: generation, base: base, token: token)
        }
    }

    private static func rotateTokens(
        _ role: Role,
        generation: Locked<Int>,
        base: String,
        token: @escaping @Sendable (Int) -> String
    ) async throws {
        let asked = Locked(0)
        let provider = PostgresCredentialsProvider(name: "test token signer") {
            asked.withLock { $0 += 1 }
            return PostgresCredentials(password: token(generation.withLock { $0 }), lifetime: .seconds(5))
        }
        let logs = CapturedLogs()
        let application = "rdb-token-\(role.name.suffix(8))"
        let backend = try PostgresBackend(
            url: try role.url(applicationName: application),
            connectionLimit: 4,
            maxLifetime: .milliseconds(400),
            credentials: provider,
            logger: logs.logger(label: "test.credentials")
        )
        let db = try ReliableDatabase(backend: backend)
        let rotations = 5
        let result = try await Self.load(db) {
            for n in 1...rotations {
                try await Task.sleep(for: .seconds(1))
                // The signer's new key: only the newest token is accepted from now on.
                try await role.setPassword(token(n))
                generation.withLock { $0 = n }
            }
        }
        try await db.shutdown()
        let refusedThenAskedAgain = logs.records.filter { $0.message.contains("refused the password (28P01)") }.count
        print(
            "fault report: token provider, \(rotations) rotations under load: \(result.calls) calls,"
                + " \(result.failures.count) failed, provider asked \(asked.withLock { $0 }) times,"
                + " \(refusedThenAskedAgain) connects refused then asked again"
        )
        #expect(result.failures.isEmpty, "\(result.failures.prefix(3))")
        #expect(refusedThenAskedAgain > 0, "a cached token outlived its rotation, and was asked for again")
        #expect(asked.withLock { $0 } > rotations, "each rotation made a stale token ask again")
        let leaked = logs.records.filter { $0.rendered.contains(base) }
        #expect(leaked.isEmpty, "\(leaked.map(\.rendered))")
    }

    /// A password file that cannot be read fails the connect with an error naming the file and
    /// why, never a password; a wrong password is refused after one more ask, and the error does
    /// not show it either.
    @Test(.timeLimit(.minutes(1)))
    func anUnreadableFileOrAWrongPasswordFailsWithAnErrorThatShowsNoSecret() async throws {
        try await Role.with(password: "right-\(UUID().uuidString)") { role in try await Self.failWithoutSecrets(role) }
    }

    private static func failWithoutSecrets(_ role: Role) async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("rdb-missing-\(role.name)").path
        var settings = ReliabilityConfiguration()
        settings.retry.attempts = 1
        let missing = try ReliableDatabase(
            backend: try PostgresBackend(
                url: try role.url(applicationName: "rdb-missing"),
                poolTimeout: .seconds(2),
                credentials: .passwordFile(path)
            ),
            configuration: settings
        )
        let missingError = await #expect(throws: (any Error).self) {
            try await missing.query(.read("select")) { _ in 1 }
        }
        let missingText = "\(missingError.map { String(describing: $0) } ?? "")"
        #expect(
            missingText.contains("DB_PASSWORD_FILE \(path)") && missingText.contains("cannot be read"),
            "\(missingText)"
        )
        try await missing.shutdown()

        let wrong = "wrong-\(UUID().uuidString)"
        try Self.write(wrong, to: path)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let logs = CapturedLogs()
        let refused = try ReliableDatabase(
            backend: try PostgresBackend(
                url: try role.url(applicationName: "rdb-wrong"),
                poolTimeout: .seconds(10),
                credentials: .passwordFile(path),
                logger: logs.logger(label: "test.credentials")
            ),
            configuration: settings
        )
        let refusedError = await #expect(throws: (any Error).self) {
            try await refused.query(.read("select")) { _ in 1 }
        }
        let refusedText = "\(refusedError.map { String(reflecting: $0) } ?? "")"
        #expect(refusedText.contains("28P01"), "\(refusedText)")
        #expect(!refusedText.contains(wrong))
        #expect(logs.records.contains { $0.message.contains("refused the password (28P01)") })
        #expect(!logs.records.contains { $0.rendered.contains(wrong) })
        try await refused.shutdown()
    }
}
