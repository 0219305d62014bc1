import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A TCP proxy on 127.0.0.1 that sits between a client under test and a real server and injects
/// network faults on demand.
///
/// Why: timeouts, breakers and pools only prove themselves against a network that misbehaves, and
/// a real server cannot be made slow, silent or rude on cue. Point the client at ``port`` instead
/// of the server, then switch ``Mode`` while the workload runs.
///
/// Everything runs on one event loop of the proxy's own, so the per-connection state needs no
/// locks and the order of events is the order of that loop. ``setMode(_:)`` calls are applied
/// one after another, in call order.
///
/// Call ``shutdown()`` when done: the proxy owns a thread until then.
public final class FaultProxy: Sendable {
    /// What the proxy does to the bytes and connections that pass through it.
    public enum Mode: Sendable, Hashable, CustomStringConvertible {
        /// Forward everything as it comes.
        case pass
        /// Delay every chunk, in each direction, by `milliseconds` before forwarding it, in order.
        ///
        /// Why: a slow network rather than a dead one. A round trip costs at least twice the delay.
        /// A close is delayed like the bytes before it, so nothing sent before a close is lost.
        case latency(milliseconds: Int)
        /// A partition: sockets stay open and nothing goes through.
        ///
        /// New connections are accepted (the kernel completes the handshake) and held: the upstream
        /// is not dialled, nothing is answered and nothing is closed. On open connections every
        /// byte read, in either direction, is dropped, and a close by one side is not passed on
        /// while the blackhole lasts.
        ///
        /// After the blackhole, which is the choice made here: a connection that lost a byte is
        /// dead for good, because its stream cannot be resumed. Its sockets stay open and it
        /// forwards nothing, until one side closes; that close is then passed on (so the server's
        /// side is not leaked), and one that came during the blackhole is passed on when it ends.
        /// A connection that lost nothing (an idle pooled one, or one accepted during the
        /// blackhole that sent nothing yet) carries on as if nothing happened, which is what an
        /// idle TCP connection does across a real partition.
        case blackhole
        /// Reset (RST: `SO_LINGER` 0, then close) every open connection, both the client's side and
        /// the server's, when this mode is set, and every new one as it arrives.
        ///
        /// Why: a reset is what a crashed peer, a restarted middlebox or a killed server looks
        /// like, and clients must tell it from a clean close.
        case reset
        /// Stop listening, so that connecting fails with `ECONNREFUSED`; listen again on the same
        /// port when the mode changes to anything else.
        ///
        /// Connections already open are left alone and forward as in ``pass``: set ``reset``
        /// first for "the server went away".
        case refuse

        public var description: String {
            switch self {
            case .pass: "pass"
            case .latency(let milliseconds): "latency(\(milliseconds) ms)"
            case .blackhole: "blackhole"
            case .reset: "reset"
            case .refuse: "refuse"
            }
        }
    }

    /// The host the proxy forwards to.
    public let upstreamHost: String
    /// The port the proxy forwards to.
    public let upstreamPort: Int

    private let group: MultiThreadedEventLoopGroup
    /// The one loop that the listener, every connection and every mode change run on.
    private let loop: any EventLoop
    private let state: Mutex<State>

    private struct State {
        var mode: Mode = .pass
        var port = 0
        var listener: (any Channel)?
        /// Connections until both of their sides are done; bound to ``FaultProxy/loop``.
        var connections: [Int: NIOLoopBound<ProxyConnection>] = [:]
        var openClients = 0
        var nextConnectionID = 0
        /// Set by the first ``FaultProxy/shutdown()``: no mode change is taken after it.
        var shutdownRequested = false
        /// Set on the loop when shutting down: no connection is taken after it.
        var isShutDown = false
        /// The last mode change or shutdown queued: the next one starts when it has finished.
        var tail: EventLoopFuture<Void>
    }

    private init(upstreamHost: String, upstreamPort: Int) {
        self.upstreamHost = upstreamHost
        self.upstreamPort = upstreamPort
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.loop = self.group.next()
        self.state = Mutex(State(tail: self.loop.makeSucceededVoidFuture()))
    }

    /// Starts a proxy in ``Mode/pass`` on 127.0.0.1, on a port the system picks (read it from
    /// ``port``), forwarding to `upstreamHost:upstreamPort`.
    ///
    /// Why a free port: tests run in parallel, and a fixed port would collide. The upstream is
    /// dialled per connection, so it need not be up yet.
    public static func start(upstreamHost: String, upstreamPort: Int) async throws -> FaultProxy {
        let proxy = FaultProxy(upstreamHost: upstreamHost, upstreamPort: upstreamPort)
        do {
            let listener = try await proxy.listen(port: 0).get()
            let port = listener.localAddress?.port ?? 0
            proxy.state.withLock {
                $0.listener = listener
                $0.port = port
            }
        } catch {
            try? await proxy.group.shutdownGracefully()
            throw error
        }
        return proxy
    }

    /// The port on 127.0.0.1 that clients connect to. It stays the same for the proxy's life,
    /// across ``Mode/refuse``, so a client's configuration never needs changing.
    public var port: Int {
        self.state.withLock { $0.port }
    }

    /// The mode last applied by ``setMode(_:)``.
    public var mode: Mode {
        self.state.withLock { $0.mode }
    }

    /// How many client-side connections are open now, held ones included.
    ///
    /// Why: lets a test see that a client opened, kept or gave up connections (a pool's size,
    /// a leak) without asking the client.
    public var openConnections: Int {
        self.state.withLock { $0.openClients }
    }

    /// Switches to `mode`, at any time, and returns once it is in force: open connections were
    /// told (and reset, for ``Mode/reset``) and the listener was closed or opened again.
    ///
    /// Why async: closing and reopening the listener takes a trip through the event loop, and a
    /// test must know the fault is in place before it measures anything.
    ///
    /// - Throws: ``FaultProxyError/shutDown`` after ``shutdown()``;
    ///   ``FaultProxyError/negativeLatency(_:)``; the bind error if the port cannot be listened on
    ///   again after ``Mode/refuse`` (the mode is set all the same, and the next call tries again).
    public func setMode(_ mode: Mode) async throws {
        if case .latency(let milliseconds) = mode, milliseconds < 0 {
            throw FaultProxyError.negativeLatency(milliseconds)
        }
        let done = try self.serially(shuttingDown: false) { self.apply(mode) }
        try await done?.get()
    }

    /// Closes the listener and every connection (plainly, not with a reset) and stops the
    /// proxy's thread. Waits for mode changes queued before it. Calling it again does nothing.
    public func shutdown() async throws {
        guard let done = try self.serially(shuttingDown: true, { self.tearDown() }) else { return }
        try? await done.get()
        try await self.group.shutdownGracefully()
    }

    // MARK: - On the loop

    /// Runs `operation` on the loop once every operation queued before it has finished.
    /// Returns `nil` for a second shutdown.
    private func serially(
        shuttingDown: Bool,
        _ operation: @escaping @Sendable () -> EventLoopFuture<Void>
    ) throws -> EventLoopFuture<Void>? {
        let queued: (EventLoopFuture<Void>, EventLoopPromise<Void>)? = try self.state.withLock { state in
            if state.shutdownRequested {
                if shuttingDown { return nil }
                throw FaultProxyError.shutDown
            }
            state.shutdownRequested = shuttingDown
            let promise = self.loop.makePromise(of: Void.self)
            defer { state.tail = promise.futureResult.recover { _ in } }
            return (state.tail, promise)
        }
        guard let (previous, promise) = queued else { return nil }
        // Outside the lock: the callback may run right here, and it takes the lock itself.
        previous.whenComplete { _ in operation().cascade(to: promise) }
        return promise.futureResult
    }

    private func apply(_ mode: Mode) -> EventLoopFuture<Void> {
        self.loop.preconditionInEventLoop()
        let connections = self.state.withLock { state in
            state.mode = mode
            return Array(state.connections.values)
        }
        for connection in connections {
            connection.value.modeChanged(to: mode)
        }
        return self.reconcileListener(for: mode)
    }

    /// Listens when `mode` is not ``Mode/refuse`` and does not otherwise.
    private func reconcileListener(for mode: Mode) -> EventLoopFuture<Void> {
        let (listener, port) = self.state.withLock { ($0.listener, $0.port) }
        switch (mode, listener) {
        case (.refuse, let listener?):
            self.state.withLock { $0.listener = nil }
            return listener.close()
        case (.refuse, nil), (_, .some):
            return self.loop.makeSucceededVoidFuture()
        case (_, nil):
            return self.listen(port: port).map { listener in
                self.state.withLock { $0.listener = listener }
            }
        }
    }

    private func tearDown() -> EventLoopFuture<Void> {
        self.loop.preconditionInEventLoop()
        let (listener, connections) = self.state.withLock { state in
            state.isShutDown = true
            defer { state.listener = nil }
            return (state.listener, Array(state.connections.values))
        }
        var closed: [EventLoopFuture<Void>] = []
        if let listener {
            closed.append(listener.close())
        }
        for connection in connections {
            closed.append(connection.value.closeForShutdown())
        }
        return EventLoopFuture.andAllComplete(closed, on: self.loop)
    }

    /// Binds the listener. `SO_REUSEADDR` lets it bind the same port again after ``Mode/refuse``
    /// while connections accepted on that port are still open or in `TIME_WAIT`.
    private func listen(port: Int) -> EventLoopFuture<any Channel> {
        ServerBootstrap(group: self.loop)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let connection = ProxyConnection(proxy: self, client: channel)
                    try channel.pipeline.syncOperations.addHandler(
                        ForwardHandler(connection: connection, side: .client)
                    )
                }
            }
            .bind(host: "127.0.0.1", port: port)
    }

    /// Called on the loop when a client's connection becomes active: its id and the mode to
    /// start in, or `nil` once shut down.
    fileprivate func register(_ connection: ProxyConnection) -> (id: Int, mode: Mode)? {
        let bound = NIOLoopBound(connection, eventLoop: self.loop)
        return self.state.withLock { state in
            guard !state.isShutDown else { return nil }
            let id = state.nextConnectionID
            state.nextConnectionID += 1
            state.connections[id] = bound
            state.openClients += 1
            return (id, state.mode)
        }
    }

    fileprivate func clientClosed() {
        self.state.withLock { $0.openClients -= 1 }
    }

    fileprivate func forget(_ id: Int) {
        _ = self.state.withLock { $0.connections.removeValue(forKey: id) }
    }
}

/// Why a ``FaultProxy`` call failed.
public enum FaultProxyError: Error, Hashable, CustomStringConvertible {
    /// ``FaultProxy/shutdown()`` was called: the proxy takes no more mode changes.
    case shutDown
    /// A ``FaultProxy/Mode/latency(milliseconds:)`` below zero.
    case negativeLatency(Int)

    public var description: String {
        switch self {
        case .shutDown: "the fault proxy is shut down"
        case .negativeLatency(let milliseconds): "latency must not be negative, got \(milliseconds) ms"
        }
    }
}

// MARK: - One proxied connection

private enum Side {
    case client
    case upstream
}

/// A client's connection and the upstream one made for it. Lives on the proxy's loop only.
private final class ProxyConnection {
    private enum Item {
        case data(ByteBuffer)
        /// The source side closed: close the target once everything before it is written.
        case end
    }

    /// The bytes on their way from one side to the other, in order, each with the time it may go.
    private final class Direction {
        let target: Side
        var pending = CircularBuffer<(due: NIODeadline, item: Item)>()
        var timer: Scheduled<Void>?
        var lastWrite: EventLoopFuture<Void>?

        init(target: Side) {
            self.target = target
        }

        func cancelTimer() {
            self.timer?.cancel()
            self.timer = nil
        }
    }

    private enum UpstreamState {
        /// Not dialled yet: accepted during a blackhole.
        case idle
        case connecting
        case open(any Channel)
        case closed
    }

    private enum Termination {
        case reset
        case shutdown
    }

    private let proxy: FaultProxy
    private let client: any Channel
    private var id: Int?
    private var clientOpen = false
    private var upstream = UpstreamState.idle
    private var mode = FaultProxy.Mode.pass
    /// A byte was dropped in a blackhole: nothing is forwarded any more, closes still are.
    private var poisoned = false
    private var terminated: Termination?
    private let toUpstream = Direction(target: .upstream)
    private let toClient = Direction(target: .client)

    init(proxy: FaultProxy, client: any Channel) {
        self.proxy = proxy
        self.client = client
    }

    // MARK: Events

    func clientActive() {
        guard let registration = self.proxy.register(self) else {
            self.client.close(promise: nil)
            return
        }
        self.id = registration.id
        self.mode = registration.mode
        self.clientOpen = true
        switch registration.mode {
        case .reset, .refuse:
            // `.refuse` only when the connection raced the listener's close: treat it as refused.
            self.reset()
        case .blackhole:
            break  // held: the upstream is dialled when the blackhole ends
        case .pass, .latency:
            self.connectUpstream()
        }
    }

    func upstreamActive(_ channel: any Channel) {
        self.upstream = .open(channel)
        switch self.terminated {
        case .reset?:
            Self.sendReset(on: channel)
            return
        case .shutdown?:
            channel.close(promise: nil)
            return
        case nil:
            self.drain(self.toUpstream)
            self.drain(self.toClient)
        }
    }

    private func upstreamFailed() {
        self.upstream = .closed
        if self.terminated == nil, self.clientOpen {
            // The upstream could not be reached: say so the way a broken path does.
            Self.sendReset(on: self.client)
        }
        self.forgetIfDone()
    }

    func received(_ data: ByteBuffer, from side: Side) {
        guard self.terminated == nil else { return }
        if self.mode == .blackhole || self.poisoned {
            self.poison()
            return
        }
        self.enqueue(.data(data), on: side == .client ? self.toUpstream : self.toClient)
    }

    func closed(_ side: Side) {
        switch side {
        case .client:
            if self.clientOpen {
                self.clientOpen = false
                self.proxy.clientClosed()
            }
            self.toClient.pending.removeAll()
            self.toClient.cancelTimer()
        case .upstream:
            self.upstream = .closed
            self.toUpstream.pending.removeAll()
            self.toUpstream.cancelTimer()
        }
        if self.terminated == nil {
            self.enqueue(.end, on: side == .client ? self.toUpstream : self.toClient)
        }
        self.forgetIfDone()
    }

    func modeChanged(to mode: FaultProxy.Mode) {
        guard self.terminated == nil else { return }
        self.mode = mode
        switch mode {
        case .reset:
            self.reset()
        case .blackhole:
            self.toUpstream.cancelTimer()
            self.toClient.cancelTimer()
        case .pass, .latency, .refuse:
            if case .idle = self.upstream, self.clientOpen, !self.poisoned {
                self.connectUpstream()
            }
            self.drain(self.toUpstream)
            self.drain(self.toClient)
        }
    }

    func closeForShutdown() -> EventLoopFuture<Void> {
        var closed = [self.client.closeFuture]
        self.terminate(.shutdown)
        self.client.close(promise: nil)
        if case .open(let upstream) = self.upstream {
            upstream.close(promise: nil)
            closed.append(upstream.closeFuture)
        }
        return EventLoopFuture.andAllComplete(closed, on: self.client.eventLoop)
    }

    // MARK: Forwarding

    private func connectUpstream() {
        self.upstream = .connecting
        let bound = NIOLoopBound(self, eventLoop: self.client.eventLoop)
        ClientBootstrap(group: self.client.eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ForwardHandler(connection: bound.value, side: .upstream)
                    )
                }
            }
            .connect(host: self.proxy.upstreamHost, port: self.proxy.upstreamPort)
            .assumeIsolated()
            .whenFailure { _ in self.upstreamFailed() }
    }

    private func enqueue(_ item: Item, on direction: Direction) {
        var due = NIODeadline.now()
        if case .latency(let milliseconds) = self.mode {
            due = due + .milliseconds(Int64(milliseconds))
        }
        direction.pending.append((due, item))
        self.drain(direction)
    }

    /// Writes what is due, in order, and sets a timer for the rest.
    private func drain(_ direction: Direction) {
        direction.cancelTimer()
        guard self.terminated == nil, self.mode != .blackhole else { return }
        let target: any Channel
        switch direction.target {
        case .client:
            guard self.clientOpen else { return }
            target = self.client
        case .upstream:
            guard case .open(let upstream) = self.upstream else { return }  // held until it opens
            target = upstream
        }
        let now = NIODeadline.now()
        var unflushed = false
        while let head = direction.pending.first, head.due <= now {
            direction.pending.removeFirst()
            switch head.item {
            case .data(let buffer):
                direction.lastWrite = target.write(buffer)
                unflushed = true
            case .end:
                direction.pending.removeAll()
                if unflushed {
                    target.flush()
                    unflushed = false
                }
                // Closing fails writes still queued, so wait for the last one to reach the socket.
                if let lastWrite = direction.lastWrite {
                    lastWrite.whenComplete { _ in target.close(promise: nil) }
                } else {
                    target.close(promise: nil)
                }
            }
        }
        if unflushed {
            target.flush()
        }
        if let next = direction.pending.first {
            direction.timer = self.client.eventLoop.assumeIsolated().scheduleTask(deadline: next.due) {
                self.drain(direction)
            }
        }
    }

    /// Drops the bytes held and every byte to come; keeps the closes.
    private func poison() {
        self.poisoned = true
        for direction in [self.toUpstream, self.toClient] {
            direction.pending.removeAll { entry in
                if case .data = entry.item { return true }
                return false
            }
        }
    }

    private func reset() {
        self.terminate(.reset)
        if self.clientOpen {
            Self.sendReset(on: self.client)
        }
        if case .open(let upstream) = self.upstream {
            Self.sendReset(on: upstream)
        }
    }

    private func terminate(_ termination: Termination) {
        self.terminated = termination
        for direction in [self.toUpstream, self.toClient] {
            direction.cancelTimer()
            direction.pending.removeAll()
        }
    }

    /// Closes with `SO_LINGER` 0, which makes the kernel send RST instead of FIN.
    private static func sendReset(on channel: any Channel) {
        if let options = channel as? any SocketOptionProvider {
            _ = options.setSoLinger(linger(l_onoff: 1, l_linger: 0))
        }
        channel.close(promise: nil)
    }

    private func forgetIfDone() {
        guard !self.clientOpen, let id = self.id else { return }
        switch self.upstream {
        case .idle, .closed:
            self.proxy.forget(id)
            self.id = nil
        case .connecting, .open:
            break
        }
    }
}

private final class ForwardHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let connection: ProxyConnection
    private let side: Side

    init(connection: ProxyConnection, side: Side) {
        self.connection = connection
        self.side = side
    }

    func channelActive(context: ChannelHandlerContext) {
        switch self.side {
        case .client: self.connection.clientActive()
        case .upstream: self.connection.upstreamActive(context.channel)
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.connection.received(Self.unwrapInboundIn(data), from: self.side)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.connection.closed(self.side)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A read or write failed (a reset, mostly): the channel is done, `channelInactive` follows.
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension ForwardHandler: Sendable {}
