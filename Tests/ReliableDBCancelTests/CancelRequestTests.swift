import Foundation
import Logging
import NIOSSL
import PostgresNIO
import Testing

@testable import ReliableDBPostgres

/// Coordinates of the servers scripts/test starts.
enum Env {
    struct Missing: Error, CustomStringConvertible {
        var name: String
        var description: String { "\(name) is not set: run the tests with scripts/test, which starts the servers" }
    }

    static func value(_ name: String) throws -> String {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else { throw Missing(name: name) }
        return value
    }

    static var port: Int { get throws { Int(try value("RELIABLEDB_TEST_POSTGRES_PORT"))! } }
    static var bouncerPort: Int { get throws { Int(try value("RELIABLEDB_TEST_PGBOUNCER_PORT"))! } }
    static var user: String { get throws { try value("RELIABLEDB_TEST_POSTGRES_USER") } }
    static var password: String { get throws { try value("RELIABLEDB_TEST_POSTGRES_PASSWORD") } }
    static var database: String { get throws { try value("RELIABLEDB_TEST_POSTGRES_DB") } }
    static var ca: String { get throws { try value("RELIABLEDB_TEST_POSTGRES_CA") } }
    static var socket: String { get throws { try value("RELIABLEDB_TEST_POSTGRES_SOCKET") } }
    /// The fault suite's server, idle while this suite runs (scripts/test runs the fault suite
    /// afterwards), so socket and session counts there are this test's alone.
    static var quietPort: Int { get throws { Int(try value("RELIABLEDB_TEST_FAULT_POSTGRES_PORT"))! } }
    static var quietCA: String { get throws { try value("RELIABLEDB_TEST_FAULT_POSTGRES_CA") } }
}

let logger = Logger(label: "test.cancel")
let eventLoop = MultiThreadedEventLoopGroup.singleton.any()

enum Mode: Sendable {
    case disable, prefer, require, verifyFull(serverName: String), verifyFullWithSystemRoots
}

func configuration(
    host: String = "127.0.0.1",
    port: Int? = nil,
    mode: Mode = .disable,
    applicationName: String,
    connectTimeout: TimeAmount = .seconds(5)
) throws -> PostgresConnection.Configuration {
    var tlsConfiguration = TLSConfiguration.makeClientConfiguration()
    let tls: PostgresConnection.Configuration.TLS
    var serverName: String?
    switch mode {
    case .disable:
        tls = .disable
    case .prefer:
        tlsConfiguration.certificateVerification = .none
        tls = .prefer(try NIOSSLContext(configuration: tlsConfiguration))
    case .require:
        tlsConfiguration.certificateVerification = .none
        tls = .require(try NIOSSLContext(configuration: tlsConfiguration))
    case .verifyFull(let name):
        tlsConfiguration.certificateVerification = .fullVerification
        // Each throwaway server has its own self-signed certificate.
        tlsConfiguration.trustRoots = .file(port == (try? Env.quietPort) ? try Env.quietCA : try Env.ca)
        tls = .require(try NIOSSLContext(configuration: tlsConfiguration))
        serverName = name
    case .verifyFullWithSystemRoots:
        tlsConfiguration.certificateVerification = .fullVerification
        tls = .require(try NIOSSLContext(configuration: tlsConfiguration))
    }
    var configuration = PostgresConnection.Configuration(
        host: host,
        port: try port ?? Env.port,
        username: try Env.user,
        password: try Env.password,
        database: try Env.database,
        tls: tls
    )
    configuration.options.tlsServerName = serverName
    configuration.options.connectTimeout = connectTimeout
    configuration.options.additionalStartupParameters = [("application_name", applicationName)]
    return configuration
}

func uniqueName(_ prefix: String) -> String { "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())" }

func int(_ connection: PostgresConnection, _ sql: String) async throws -> Int {
    var value = -1
    for try await v in try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).decode(Int.self) {
        value = v
    }
    return value
}

func bool(_ connection: PostgresConnection, _ sql: String) async throws -> Bool {
    var value = false
    for try await v in try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).decode(Bool.self) {
        value = v
    }
    return value
}

/// This process's TCP sockets whose remote end is `port` on loopback, from /proc/net/tcp*
/// (only sockets still held as file descriptors: TIME_WAIT leftovers have no inode of ours).
/// Whether the number of our sockets to `port` is `count` within 2 s.
func socketsSettle(toPort port: Int, at count: Int) async -> Bool {
    for _ in 0..<200 {
        if ourSockets(toPort: port) == count { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return ourSockets(toPort: port) == count
}

func ourSockets(toPort port: Int) -> Int {
    let fdDirectory = "/proc/self/fd"
    var inodes: Set<String> = []
    for fd in (try? FileManager.default.contentsOfDirectory(atPath: fdDirectory)) ?? [] {
        if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(fdDirectory)/\(fd)"),
            target.hasPrefix("socket:[")
        {
            inodes.insert(String(target.dropFirst(8).dropLast()))
        }
    }
    let hexPort = String(format: "%04X", port)
    var count = 0
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        // Read to EOF: String(contentsOfFile:) stops after the first page of a /proc file.
        guard let handle = FileHandle(forReadingAtPath: table) else { continue }
        let text = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
        try? handle.close()
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            guard fields.count > 9 else { continue }
            if fields[2].hasSuffix(":\(hexPort)") && inodes.contains(String(fields[9])) { count += 1 }
        }
    }
    return count
}

func milliseconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
}

/// Runs `SELECT pg_sleep(10)` on `connection`, sends the CancelRequest for `key` after 200 ms,
/// and returns (SQLSTATE, ms from sending the cancel until the query failed, ms sendCancelRequest took).
func sleepAndCancel(
    _ connection: PostgresConnection,
    key: BackendKey
) async throws -> (sqlState: String?, cancelToError: Double, sendTook: Double) {
    let clock = ContinuousClock()
    let query = Task { () -> (String?, ContinuousClock.Instant) in
        do {
            _ = try await connection.query("SELECT pg_sleep(10)", logger: logger).collect()
            return (nil, clock.now)
        } catch let error as PSQLError {
            return (error.serverInfo?[.sqlState] ?? "\(error.code)", clock.now)
        } catch {
            return ("\(error)", clock.now)
        }
    }
    try await Task.sleep(for: .milliseconds(200))
    let sentAt = clock.now
    try await sendCancelRequest(to: key.serverAddress!, key: key, timeout: .seconds(2), on: eventLoop)
    let sendTook = clock.now - sentAt
    let (state, failedAt) = await query.value
    return (state, milliseconds(failedAt - sentAt), milliseconds(sendTook))
}

/// A server that accepts connections and never answers or closes them: a partitioned peer.
final class SilentServer: Sendable {
    let channel: any Channel

    init() async throws {
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(.autoRead, value: true)
            .bind(host: "127.0.0.1", port: 0)
            .get()
    }

    var port: Int { channel.localAddress!.port! }

    func close() async throws { try await channel.close() }
}

@Suite("Cancel key and protocol CancelRequest", .serialized)
struct KeyedCancelTests {
    @Test func sniffsTheKeyFromAnyByteSplitAndPassesBytesThrough() throws {
        // Authentication OK, ParameterStatus, BackendKeyData(4242, 0x12345678), ReadyForQuery.
        var stream = ByteBuffer()
        stream.writeMultipleIntegers(UInt8(ascii: "R"), Int32(8), Int32(0))
        stream.writeInteger(UInt8(ascii: "S"))
        stream.writeInteger(Int32(4 + 6))
        stream.writeBytes(Array("a\0b\0".utf8))
        stream.writeBytes([0, 0])
        stream.writeMultipleIntegers(UInt8(ascii: "K"), Int32(12), Int32(4242), Int32(0x1234_5678))
        stream.writeMultipleIntegers(UInt8(ascii: "Z"), Int32(5), UInt8(ascii: "I"))
        let bytes = Array(stream.readableBytesView)

        for chunk in 1...bytes.count {
            let channel = EmbeddedChannel()
            let promise = channel.eventLoop.makePromise(of: BackendKey?.self)
            try channel.pipeline.syncOperations.addHandler(BackendKeySniffer(key: promise, serverAddress: nil))
            var forwarded: [UInt8] = []
            for start in stride(from: 0, to: bytes.count, by: chunk) {
                let slice = bytes[start..<min(start + chunk, bytes.count)]
                try channel.writeInbound(ByteBuffer(bytes: slice))
                while let out = try channel.readInbound(as: ByteBuffer.self) { forwarded += out.readableBytesView }
            }
            #expect(forwarded == bytes, "chunk \(chunk)")
            let key = try promise.futureResult.wait()
            #expect(key?.pid == 4242 && key?.secret == 0x1234_5678, "chunk \(chunk)")
            #expect(throws: (any Error).self) {
                try channel.pipeline.syncOperations.handler(type: BackendKeySniffer.self)
            }
            _ = try channel.finish()
        }
    }

    @Test func keyIsTheBackendPIDAndNeverPrintsTheSecret() async throws {
        let (connection, key) = try await PostgresConnection.connectWithBackendKey(
            on: eventLoop,
            configuration: try configuration(applicationName: uniqueName("key")),
            id: 1,
            logger: logger
        )
        let key2 = try #require(key)
        #expect(Int(key2.pid) == (try await int(connection, "SELECT pg_backend_pid()")))
        #expect(key2.serverAddress?.port == (try Env.port))
        for text in [
            "\(key2)", String(reflecting: key2),
            {
                var s = ""; dump(key2, to: &s); return s
            }(),
        ] {
            #expect(!text.contains("\(key2.secret)"), "\(text)")
        }
        try await connection.close()
    }

    @Test(arguments: [Mode.disable, .prefer, .require, .verifyFull(serverName: "localhost")])
    func cancelStopsOnlyTheStatementAndTheConnectionStaysUsable(mode: Mode) async throws {
        let name = uniqueName("cancel")
        let (connection, key) = try await PostgresConnection.connectWithBackendKey(
            on: eventLoop,
            configuration: try configuration(port: try Env.quietPort, mode: mode, applicationName: name),
            id: 2,
            logger: logger
        )
        let key2 = try #require(key)
        let encrypted = try await bool(connection, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        if case .disable = mode { #expect(!encrypted) } else { #expect(encrypted) }

        let (state, cancelToError, sendTook) = try await sleepAndCancel(connection, key: key2)
        print(
            "[\(mode)] tls=\(encrypted) SQLSTATE=\(state ?? "none") cancel->error \(cancelToError) ms, send \(sendTook) ms"
        )
        #expect(state == "57014")
        #expect(cancelToError < 5_000, "stopped by the cancel, long before the 10 s sleep ends")
        // Reusable at once, and no socket of ours left behind.
        #expect(try await int(connection, "SELECT 41 + 1") == 42)
        // The connection itself; a socket of ours closing under a fully loaded machine gets 2 s.
        #expect(await socketsSettle(toPort: try Env.quietPort, at: 1))
        #expect(
            try await int(connection, "SELECT count(*)::int FROM pg_stat_activity WHERE application_name = '\(name)'")
                == 1
        )
        try await connection.close()
    }

    @Test func verifyFullRejectsAnUntrustedCertificateCleanly() async throws {
        let socketsBefore = ourSockets(toPort: try Env.quietPort)
        await #expect {
            _ = try await PostgresConnection.connectWithBackendKey(
                on: eventLoop,
                configuration: try configuration(
                    port: try Env.quietPort,
                    mode: .verifyFullWithSystemRoots,
                    applicationName: "x"
                ),
                id: 3,
                logger: logger
            )
        } throws: { error in
            print("verify-full, self-signed certificate not in the system roots: \(error)")
            guard case KeyedConnectError.tlsHandshakeFailed = error else { return false }
            return true
        }
        #expect(ourSockets(toPort: try Env.quietPort) == socketsBefore)
    }

    @Test func unixSocketConnectionsHaveKeysToo() async throws {
        var config = PostgresConnection.Configuration(
            unixSocketPath: try Env.socket,
            username: try Env.user,
            password: try Env.password,
            database: try Env.database
        )
        config.options.additionalStartupParameters = [("application_name", "unix")]
        let (connection, key) = try await PostgresConnection.connectWithBackendKey(
            on: eventLoop,
            configuration: config,
            id: 4,
            logger: logger
        )
        let key2 = try #require(key)
        #expect(Int(key2.pid) == (try await int(connection, "SELECT pg_backend_pid()")))
        let (state, cancelToError, _) = try await sleepAndCancel(connection, key: key2)
        print("[unix socket] SQLSTATE=\(state ?? "none") cancel->error \(cancelToError) ms")
        #expect(state == "57014")
        #expect(try await int(connection, "SELECT 1") == 1)
        try await connection.close()
    }

    @Test func manyCancelsLeaveNoSocketsOrServerSessions() async throws {
        let name = uniqueName("many")
        let (connection, key) = try await PostgresConnection.connectWithBackendKey(
            on: eventLoop,
            configuration: try configuration(port: try Env.quietPort, applicationName: name),
            id: 5,
            logger: logger
        )
        let key2 = try #require(key)
        let sessionsBefore = try await int(connection, "SELECT count(*)::int FROM pg_stat_activity")
        let clock = ContinuousClock()
        let start = clock.now
        for _ in 0..<50 {  // idle connection: nothing to cancel, the server just closes
            try await sendCancelRequest(to: key2.serverAddress!, key: key2, timeout: .seconds(2), on: eventLoop)
        }
        print("50 cancel requests (idle target): \(milliseconds(clock.now - start) / 50) ms each")
        #expect(await socketsSettle(toPort: try Env.quietPort, at: 1))
        #expect(try await int(connection, "SELECT count(*)::int FROM pg_stat_activity") == sessionsBefore)
        // A wrong secret cancels nothing.
        let wrong = BackendKey(pid: key2.pid, secret: key2.secret &+ 1, serverAddress: key2.serverAddress)
        let query = Task { try await int(connection, "SELECT 7 FROM pg_sleep(0.5)") }
        try await Task.sleep(for: .milliseconds(100))
        try await sendCancelRequest(to: wrong.serverAddress!, key: wrong, timeout: .seconds(2), on: eventLoop)
        #expect(try await query.value == 7)
        try await connection.close()
    }

    @Test func cancelToAPartitionedPeerIsBoundedAndClosesItsSocket() async throws {
        let silent = try await SilentServer()
        let key = BackendKey(
            pid: 1,
            secret: 2,
            serverAddress: try SocketAddress(ipAddress: "127.0.0.1", port: silent.port)
        )
        let clock = ContinuousClock()
        let start = clock.now
        await #expect {
            try await sendCancelRequest(to: key.serverAddress!, key: key, timeout: .milliseconds(300), on: eventLoop)
        } throws: { error in
            guard case CancelRequestError.timedOut(requestSent: true) = error else { return false }
            return true
        }
        let took = milliseconds(clock.now - start)
        print("cancel to a silent peer: failed after \(took) ms")
        #expect(took < 3_000, "bounded by its 300 ms timeout, not hanging")
        #expect(ourSockets(toPort: silent.port) == 0)

        // A refused port fails at once, also without a leftover socket.
        let refusedPort = silent.port
        try await silent.close()
        let refusedStart = clock.now
        await #expect(throws: CancelRequestError.self) {
            try await sendCancelRequest(
                host: "127.0.0.1",
                port: refusedPort,
                key: key,
                timeout: .seconds(2),
                on: eventLoop
            )
        }
        print("cancel to a refused port: failed after \(milliseconds(clock.now - refusedStart)) ms")
        #expect(ourSockets(toPort: refusedPort) == 0)
    }

    @Test(arguments: [Mode.disable, .require])
    func connectToAPartitionedPeerIsBoundedByTheConnectTimeout(mode: Mode) async throws {
        let silent = try await SilentServer()
        defer { _ = silent.channel.close() }
        let clock = ContinuousClock()
        let start = clock.now
        await #expect(throws: (any Error).self) {
            _ = try await PostgresConnection.connectWithBackendKey(
                on: eventLoop,
                configuration: try configuration(
                    port: silent.port,
                    mode: mode,
                    applicationName: "x",
                    connectTimeout: .milliseconds(300)
                ),
                id: 6,
                logger: logger
            )
        }
        let took = milliseconds(clock.now - start)
        print("[\(mode)] connect to a silent peer: failed after \(took) ms")
        #expect(took < 3_000, "bounded by the connect timeout, not hanging")
        #expect(ourSockets(toPort: silent.port) == 0)
    }

    @Test(arguments: [Mode.disable, .require])
    func cancellingTheTaskStopsAConnectAndClosesItsSocket(mode: Mode) async throws {
        let silent = try await SilentServer()
        defer { _ = silent.channel.close() }
        let port = silent.port
        let clock = ContinuousClock()
        let start = clock.now
        let connect = Task {
            _ = try await PostgresConnection.connectWithBackendKey(
                on: eventLoop,
                configuration: try configuration(port: port, mode: mode, applicationName: "x"),
                id: 10,
                logger: logger
            )
        }
        try await Task.sleep(for: .milliseconds(100))
        connect.cancel()
        let result = await connect.result
        let took = milliseconds(clock.now - start)
        print("[\(mode)] connect cancelled after 100 ms: ended after \(took) ms with \(result)")
        #expect(throws: (any Error).self) { try result.get() }
        #expect(took < 3_000, "stopped by the cancellation, not hanging")
        #expect(ourSockets(toPort: port) == 0)

        let key = BackendKey(pid: 1, secret: 2, serverAddress: try SocketAddress(ipAddress: "127.0.0.1", port: port))
        let cancel = Task {
            try await sendCancelRequest(to: key.serverAddress!, key: key, timeout: .seconds(5), on: eventLoop)
        }
        try await Task.sleep(for: .milliseconds(100))
        cancel.cancel()
        await #expect(throws: CancellationError.self) { try await cancel.value }
        #expect(ourSockets(toPort: port) == 0)
    }

    // MARK: PgBouncer (transaction pooling)

    /// Runs psql through PgBouncer as another client; returns its exit status and output.
    func psqlThroughBouncer(_ sql: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/psql")
        process.arguments = [
            "postgres://\(try Env.user)@127.0.0.1:\(try Env.bouncerPort)/\(try Env.database)?sslmode=disable",
            "-v", "ON_ERROR_STOP=1", "-Atc", sql,
        ]
        var environment = ProcessInfo.processInfo.environment
        environment["PGPASSWORD"] = try Env.password
        process.environment = environment
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    func wait(_ process: Process) async -> Int32 {
        while process.isRunning { try? await Task.sleep(for: .milliseconds(20)) }
        return process.terminationStatus
    }

    @Test func throughPgBouncerTheCancelStopsOnlyOurStatement() async throws {
        let (connection, key) = try await PostgresConnection.connectWithBackendKey(
            on: eventLoop,
            configuration: try configuration(port: try Env.bouncerPort, mode: .prefer, applicationName: "bouncer-a"),
            id: 7,
            logger: logger
        )
        let key2 = try #require(key)
        let backendPID = try await int(connection, "SELECT pg_backend_pid()")
        print("PgBouncer key pid \(key2.pid), server backend pid \(backendPID)")
        #expect(Int(key2.pid) != backendPID)  // PgBouncer's own key, not the server's

        // Another client's statement, running while ours is cancelled.
        let other = try psqlThroughBouncer("SELECT pg_sleep(3)")
        try await Task.sleep(for: .milliseconds(300))
        let clock = ContinuousClock()
        let start = clock.now
        let (state, cancelToError, sendTook) = try await sleepAndCancel(connection, key: key2)
        print("[pgbouncer] SQLSTATE=\(state ?? "none") cancel->error \(cancelToError) ms, send \(sendTook) ms")
        #expect(state == "57014")
        #expect(cancelToError < 5_000, "stopped by the cancel, long before the 10 s sleep ends")
        #expect(try await int(connection, "SELECT 1") == 1)
        let status = await wait(other)
        print("[pgbouncer] other client's pg_sleep(3): exit \(status) after \(milliseconds(clock.now - start)) ms")
        #expect(status == 0)
        try await connection.close()
    }

    @Test func throughPgBouncerAnIdleClientsCancelHitsNobody() async throws {
        // The case pg_cancel_backend gets wrong: our server connection was handed to someone else.
        let (connection, key) = try await PostgresConnection.connectWithBackendKey(
            on: eventLoop,
            configuration: try configuration(port: try Env.bouncerPort, mode: .disable, applicationName: "bouncer-b"),
            id: 8,
            logger: logger
        )
        let key2 = try #require(key)
        // The server process our client used last: what pg_cancel_backend would be aimed at.
        let lastBackend = try await int(connection, "SELECT pg_backend_pid()")  // then idle, back in the pool
        let other = try psqlThroughBouncer("SELECT pg_sleep(2)")
        try await Task.sleep(for: .milliseconds(500))
        let (observer, _) = try await PostgresConnection.connectWithBackendKey(
            on: eventLoop,
            configuration: try configuration(applicationName: "observer"),
            id: 11,
            logger: logger
        )
        let otherBackend = try await int(
            observer,
            "SELECT coalesce(max(pid), -1)::int FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(2)' AND state = 'active'"
        )
        try await observer.close()
        print(
            "[pgbouncer] the other client's statement runs on backend \(otherBackend), ours last ran on \(lastBackend)"
        )
        try await sendCancelRequest(to: key2.serverAddress!, key: key2, timeout: .seconds(2), on: eventLoop)
        let status = await wait(other)
        print("[pgbouncer] idle client's cancel; other client's pg_sleep(2): exit \(status)")
        #expect(status == 0)
        #expect(try await int(connection, "SELECT 2") == 2)
        try await connection.close()
    }

    /// The control: the old way, `pg_cancel_backend` on the pid read through PgBouncer, cancels
    /// the other client's statement.
    @Test func throughPgBouncerPgCancelBackendHitsTheOtherClient() async throws {
        let (connection, _) = try await PostgresConnection.connectWithBackendKey(
            on: eventLoop,
            configuration: try configuration(port: try Env.bouncerPort, mode: .disable, applicationName: "bouncer-c"),
            id: 12,
            logger: logger
        )
        let lastBackend = try await int(connection, "SELECT pg_backend_pid()")
        let other = try psqlThroughBouncer("SELECT pg_sleep(2)")
        try await Task.sleep(for: .milliseconds(500))
        let (canceller, _) = try await PostgresConnection.connectWithBackendKey(
            on: eventLoop,
            configuration: try configuration(applicationName: "canceller"),
            id: 13,
            logger: logger
        )
        _ = try await canceller.query("SELECT pg_cancel_backend(\(Int32(lastBackend)))", logger: logger).collect()
        try await canceller.close()
        let status = await wait(other)
        print("[pgbouncer] pg_cancel_backend(\(lastBackend)) from an idle client: other client's psql exit \(status)")
        #expect(status != 0)
        try await connection.close()
    }

    @Test func throughPgBouncerRequireFailsAsPgBouncerHasNoTLS() async throws {
        await #expect {
            _ = try await PostgresConnection.connectWithBackendKey(
                on: eventLoop,
                configuration: try configuration(port: try Env.bouncerPort, mode: .require, applicationName: "x"),
                id: 9,
                logger: logger
            )
        } throws: { error in
            guard case KeyedConnectError.sslUnsupported = error else { return false }
            return true
        }
    }
}
