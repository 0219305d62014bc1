import NIOCore
import NIOPosix
import ReliableDBTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The fault proxy against a tiny echo server: each mode does what it says, and bytes are never
/// lost or reordered while they are meant to flow.
@Suite("FaultProxy", .timeLimit(.minutes(1)))
struct FaultProxyTests {
    /// How long a test waits for something that should happen.
    static let patience = Duration.seconds(10)
    /// How long a test watches for something that should not happen.
    static let quiet = Duration.milliseconds(300)

    @Test func passForwardsEveryByteInOrder() async throws {
        try await withProxy { proxy, _ in
            let clients = [
                try await TestClient.connect(port: proxy.port),
                try await TestClient.connect(port: proxy.port),
            ]
            var expected: [[UInt8]] = []
            for (index, client) in clients.enumerated() {
                let payload = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index) }
                expected.append(payload)
                for start in stride(from: 0, to: payload.count, by: 7_000) {
                    try await client.send(Array(payload[start..<min(start + 7_000, payload.count)]))
                }
            }
            for (client, payload) in zip(clients, expected) {
                #expect(await client.waitForBytes(payload.count, within: Self.patience))
                #expect(client.received == payload)
            }
        }
    }

    @Test func latencyDelaysEachDirection() async throws {
        try await withProxy { proxy, _ in
            let client = try await TestClient.connect(port: proxy.port)
            try await client.roundTrip("warm up")  // the upstream is dialled before the clock starts
            try await proxy.setMode(.latency(milliseconds: 100))
            #expect(proxy.mode == .latency(milliseconds: 100))
            let clock = ContinuousClock()
            let start = clock.now
            try await client.roundTrip("ping")
            // Out and back: each way is delayed. Only a lower bound: the machine may be slow.
            #expect(clock.now - start >= .milliseconds(200))
        }
    }

    @Test func latencyKeepsOrderAcrossChunksAndModeChanges() async throws {
        try await withProxy { proxy, _ in
            let client = try await TestClient.connect(port: proxy.port)
            try await client.roundTrip("warm up")
            try await proxy.setMode(.latency(milliseconds: 200))
            var expected = Array("warm up".utf8)
            for index in 0..<50 {
                let chunk = Array("slow \(index);".utf8)
                expected += chunk
                try await client.send(chunk)
            }
            // Sent in pass after slower bytes: must still come after them.
            try await proxy.setMode(.pass)
            let fast = Array("fast".utf8)
            expected += fast
            try await client.send(fast)
            #expect(await client.waitForBytes(expected.count, within: Self.patience))
            #expect(client.received == expected)
        }
    }

    @Test func blackholeHoldsSocketsOpenAndForwardsNothing() async throws {
        try await withProxy { proxy, echo in
            let busy = try await TestClient.connect(port: proxy.port)
            let idle = try await TestClient.connect(port: proxy.port)
            try await busy.roundTrip("hello")
            try await idle.roundTrip("hello")
            try await proxy.setMode(.blackhole)

            try await busy.send(Array("lost".utf8))
            let held = try await TestClient.connect(port: proxy.port)  // accepted, never answered
            let heldQuiet = try await TestClient.connect(port: proxy.port)
            try await held.send(Array("unanswered".utf8))
            #expect(await eventually(within: Self.patience) { proxy.openConnections == 4 })
            try await Task.sleep(for: Self.quiet)
            for client in [busy, held, heldQuiet] {
                #expect(client.received.count == (client === busy ? 5 : 0), "a read would time out")
                #expect(client.isActive && !client.isClosed, "the socket stays open")
            }
            #expect(echo.openConnections == 2, "held connections do not reach the server")

            try await proxy.setMode(.pass)
            // The chosen semantics: a connection that lost bytes stays dead (open, silent) ...
            try await busy.send(Array("after".utf8))
            try await held.send(Array("after".utf8))
            try await Task.sleep(for: Self.quiet)
            #expect(busy.received.count == 5 && held.received.isEmpty)
            #expect(busy.isActive && held.isActive)
            // ... one that lost nothing carries on, and new ones work.
            try await idle.roundTrip("still here")
            try await heldQuiet.roundTrip("late but fine")
            try await TestClient.connect(port: proxy.port).roundTrip("new")
            // Closing a dead connection still closes its server side: nothing leaks upstream.
            let before = echo.openConnections
            await busy.close()
            #expect(await eventually(within: Self.patience) { echo.openConnections == before - 1 })
        }
    }

    @Test func aCloseDuringABlackholeReachesTheServerWhenItEnds() async throws {
        try await withProxy { proxy, echo in
            let client = try await TestClient.connect(port: proxy.port)
            try await client.roundTrip("hello")
            try await proxy.setMode(.blackhole)
            await client.close()
            try await Task.sleep(for: Self.quiet)
            #expect(echo.openConnections == 1, "a close is held like the bytes")
            try await proxy.setMode(.pass)
            #expect(await eventually(within: Self.patience) { echo.openConnections == 0 })
        }
    }

    @Test func resetResetsOpenConnectionsAndNewOnes() async throws {
        try await withProxy { proxy, echo in
            let open = try await TestClient.connect(port: proxy.port)
            try await open.roundTrip("hello")
            try await proxy.setMode(.reset)
            #expect(await open.waitForClose(within: Self.patience))
            #expect(open.errno == ECONNRESET, "a reset, not a clean close")
            #expect(await eventually(within: Self.patience) { echo.openConnections == 0 })

            try await expectReset(connectingTo: proxy.port)
            #expect(await eventually(within: Self.patience) { proxy.openConnections == 0 })

            try await proxy.setMode(.pass)
            try await TestClient.connect(port: proxy.port).roundTrip("back")
        }
    }

    @Test func refuseStopsListeningThenListensAgainOnTheSamePort() async throws {
        try await withProxy { proxy, _ in
            let port = proxy.port
            let open = try await TestClient.connect(port: port)
            try await open.roundTrip("hello")
            try await proxy.setMode(.refuse)
            await #expect {
                _ = try await TestClient.connect(port: port)
            } throws: { error in
                (error as? IOError)?.errnoCode == ECONNREFUSED
            }
            try await open.roundTrip("open ones carry on")

            try await proxy.setMode(.pass)
            #expect(proxy.port == port)
            try await TestClient.connect(port: port).roundTrip("listening again")
            // And once more, now that the port has connections of both listeners.
            try await proxy.setMode(.refuse)
            try await proxy.setMode(.latency(milliseconds: 1))
            try await TestClient.connect(port: port).roundTrip("and again")
        }
    }

    @Test func openConnectionsCountsClientConnections() async throws {
        try await withProxy { proxy, echo in
            #expect(proxy.openConnections == 0)
            var clients: [TestClient] = []
            for _ in 0..<3 {
                clients.append(try await TestClient.connect(port: proxy.port))
            }
            #expect(await eventually(within: Self.patience) { proxy.openConnections == 3 })
            await clients[0].close()
            #expect(await eventually(within: Self.patience) { proxy.openConnections == 2 })
            #expect(await eventually(within: Self.patience) { echo.openConnections == 2 })
            try await clients[1].roundTrip("counted")
            await clients[1].close()
            await clients[2].close()
            #expect(await eventually(within: Self.patience) { proxy.openConnections == 0 })
            #expect(await eventually(within: Self.patience) { echo.openConnections == 0 })
        }
    }

    @Test(arguments: [FaultProxy.Mode.pass, .latency(milliseconds: 50)])
    func aServerCloseReachesTheClientAfterItsBytes(mode: FaultProxy.Mode) async throws {
        try await withProxy { proxy, _ in
            try await proxy.setMode(mode)
            let client = try await TestClient.connect(port: proxy.port)
            try await client.send(Array("bye QUIT".utf8))  // the echo server answers, then closes
            #expect(await client.waitForClose(within: Self.patience))
            #expect(client.received == Array("bye QUIT".utf8))
            #expect(await eventually(within: Self.patience) { proxy.openConnections == 0 })
        }
    }

    @Test func anUnreachableUpstreamResetsTheClient() async throws {
        let freePort = try await {
            let echo = try await EchoServer.start()
            try await echo.close()
            return echo.port
        }()
        let proxy = try await FaultProxy.start(upstreamHost: "127.0.0.1", upstreamPort: freePort)
        try await expectReset(connectingTo: proxy.port)
        #expect(await eventually(within: Self.patience) { proxy.openConnections == 0 })
        try await proxy.shutdown()
    }

    @Test func shutdownClosesEverythingAndRefusesMore() async throws {
        let echo = try await EchoServer.start()
        let proxy = try await FaultProxy.start(upstreamHost: "127.0.0.1", upstreamPort: echo.port)
        let client = try await TestClient.connect(port: proxy.port)
        try await client.roundTrip("hello")
        try await proxy.shutdown()
        #expect(await client.waitForClose(within: Self.patience))
        #expect(await eventually(within: Self.patience) { echo.openConnections == 0 })
        await #expect(throws: FaultProxyError.shutDown) { try await proxy.setMode(.pass) }
        try await proxy.shutdown()  // a second one does nothing
        await #expect(throws: IOError.self) { _ = try await TestClient.connect(port: proxy.port) }
        try await echo.close()
    }

    @Test func negativeLatencyIsRejected() async throws {
        try await withProxy { proxy, _ in
            await #expect(throws: FaultProxyError.negativeLatency(-1)) {
                try await proxy.setMode(.latency(milliseconds: -1))
            }
            #expect(proxy.mode == .pass)
        }
    }
}

// MARK: - Helpers

/// Runs `body` with a proxy in front of a fresh echo server, and shuts both down after.
private func withProxy(_ body: (FaultProxy, EchoServer) async throws -> Void) async throws {
    let echo = try await EchoServer.start()
    let proxy: FaultProxy
    do {
        proxy = try await FaultProxy.start(upstreamHost: "127.0.0.1", upstreamPort: echo.port)
    } catch {
        try? await echo.close()
        throw error
    }
    do {
        try await body(proxy, echo)
    } catch {
        try? await proxy.shutdown()
        try? await echo.close()
        throw error
    }
    try await proxy.shutdown()
    try await echo.close()
}

/// Connects to `port` and expects a reset: the kernel accepts the connection before the proxy
/// sees it, so the reset can come after the connect or race it and fail it.
private func expectReset(connectingTo port: Int) async throws {
    let client: TestClient
    do {
        client = try await TestClient.connect(port: port)
    } catch let error as IOError {
        #expect(error.errnoCode == ECONNRESET)
        return
    }
    #expect(await client.waitForClose(within: FaultProxyTests.patience))
    #expect(client.errno == ECONNRESET, "a reset, not a clean close")
}

/// Polls `condition` until it holds or `within` has passed.
private func eventually(within: Duration, _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + within
    while !condition() {
        guard ContinuousClock.now < deadline else { return false }
        try? await Task.sleep(for: .milliseconds(5))
    }
    return true
}

/// A server that echoes what it reads, and closes after echoing a chunk that contains `QUIT`.
private final class EchoServer: Sendable {
    private let channel: any Channel
    private let counter: Counter
    let port: Int

    private init(channel: any Channel, counter: Counter) {
        self.channel = channel
        self.counter = counter
        self.port = channel.localAddress?.port ?? 0
    }

    static func start() async throws -> EchoServer {
        let counter = Counter()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(EchoHandler(counter: counter))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        return EchoServer(channel: channel, counter: counter)
    }

    /// Connections the server has open now.
    var openConnections: Int { self.counter.value.withLock { $0 } }

    func close() async throws {
        try await self.channel.close()
    }
}

private final class Counter: Sendable {
    let value = Mutex(0)
}

private final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let counter: Counter

    init(counter: Counter) {
        self.counter = counter
    }

    func channelActive(context: ChannelHandlerContext) {
        self.counter.value.withLock { $0 += 1 }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.counter.value.withLock { $0 -= 1 }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = Self.unwrapInboundIn(data)
        let quit = String(buffer: buffer).contains("QUIT")
        let written = context.writeAndFlush(data)
        if quit {
            let context = NIOLoopBound(context, eventLoop: context.eventLoop)
            written.whenComplete { _ in context.value.close(promise: nil) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// A client that collects what it reads, and whether and how its connection ended.
private final class TestClient: Sendable {
    private let channel: any Channel
    private let inbox: Inbox

    private init(channel: any Channel, inbox: Inbox) {
        self.channel = channel
        self.inbox = inbox
    }

    static func connect(port: Int) async throws -> TestClient {
        let inbox = Inbox()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Collector(inbox: inbox))
                }
            }
            .connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: port))
            .get()
        return TestClient(channel: channel, inbox: inbox)
    }

    var received: [UInt8] { self.inbox.state.withLock { $0.bytes } }
    var isClosed: Bool { self.inbox.state.withLock { $0.closed } }
    /// The errno of the error that ended the connection, if one did.
    var errno: Int32? { self.inbox.state.withLock { $0.errno } }
    var isActive: Bool { self.channel.isActive }

    func send(_ bytes: [UInt8]) async throws {
        try await self.channel.writeAndFlush(ByteBuffer(bytes: bytes))
    }

    func waitForBytes(_ count: Int, within: Duration) async -> Bool {
        await eventually(within: within) { self.received.count >= count }
    }

    func waitForClose(within: Duration) async -> Bool {
        await eventually(within: within) { self.isClosed }
    }

    /// Sends `text` and waits for its echo, which must come back whole and alone.
    func roundTrip(_ text: String) async throws {
        let before = self.received.count
        try await self.send(Array(text.utf8))
        #expect(await self.waitForBytes(before + text.utf8.count, within: FaultProxyTests.patience))
        #expect(Array(self.received.dropFirst(before)) == Array(text.utf8))
    }

    func close() async {
        try? await self.channel.close()
    }
}

private final class Inbox: Sendable {
    struct State {
        var bytes: [UInt8] = []
        var closed = false
        var errno: Int32?
    }

    let state = Mutex(State())
}

private final class Collector: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let inbox: Inbox

    init(inbox: Inbox) {
        self.inbox = inbox
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = Self.unwrapInboundIn(data)
        self.inbox.state.withLock { $0.bytes += buffer.readableBytesView }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? IOError {
            self.inbox.state.withLock { $0.errno = $0.errno ?? error.errnoCode }
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.inbox.state.withLock { $0.closed = true }
        context.fireChannelInactive()
    }
}
