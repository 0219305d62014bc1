import NIOCore
import NIOPosix

/// Why a CancelRequest may not have been delivered.
enum CancelRequestError: Error, CustomStringConvertible {
    /// No socket could be opened (refused, unreachable, no answer within the timeout).
    case connectFailed(any Error)
    /// The whole exchange did not finish within the timeout. `requestSent` tells whether the
    /// 16 bytes had been handed to the kernel: if so the server may still act on them.
    case timedOut(requestSent: Bool)
    /// The peer closed the socket before the request could be written.
    case closedBeforeSending

    var description: String {
        switch self {
        case .connectFailed(let error): "cancel request: cannot connect: \(describeNetworkError(error))"
        case .timedOut(let sent): "cancel request: no answer within the timeout (request \(sent ? "" : "not ")sent)"
        case .closedBeforeSending: "cancel request: the server closed the socket before the request was sent"
        }
    }
}

/// Sends the protocol's CancelRequest for `key` to `host:port`, the way libpq's `PQcancel` does.
///
/// Prefer ``sendCancelRequest(to:key:timeout:on:)`` with `key.serverAddress`: a name may resolve to
/// another pooler than the one that issued the key.
///
/// - Parameter timeout: bounds everything: resolving, connecting, writing and waiting for the
///   server to close. The socket is closed on every path before this returns.
func sendCancelRequest(
    host: String,
    port: Int,
    key: BackendKey,
    timeout: Duration,
    on eventLoop: any EventLoop
) async throws {
    try await sendCancelRequest(key: key, timeout: timeout, on: eventLoop) { bootstrap in
        bootstrap.connect(host: host, port: port)
    }
}

/// Sends the protocol's CancelRequest for `key` to `address` (usually `key.serverAddress`, where
/// the connection it belongs to was made).
///
/// A CancelRequest is a 16-byte packet (length 16, code 80877102, pid, secret) on a fresh socket,
/// before any authentication; the server (or PgBouncer, which maps its own per-client key to the
/// server connection that client holds right now) acts on it and closes the socket. As libpq
/// does, this waits for that close, so a return means the server has processed the request. The
/// server never answers whether anything was cancelled: the statement itself fails with 57014.
///
/// The request travels unencrypted (as libpq before PostgreSQL 17 sends it); it carries no
/// password, and the key is good only for cancelling.
///
/// - Parameter timeout: bounds the whole exchange. The socket is closed on every path, and this
///   returns only after it is closed.
func sendCancelRequest(
    to address: SocketAddress,
    key: BackendKey,
    timeout: Duration,
    on eventLoop: any EventLoop
) async throws {
    try await sendCancelRequest(key: key, timeout: timeout, on: eventLoop) { bootstrap in
        bootstrap.connect(to: address)
    }
}

/// ``sendCancelRequest(to:key:timeout:on:)`` without a task, for a deadline firing on a timer:
/// the future completes once the socket is closed.
func startCancelRequest(
    to address: SocketAddress,
    key: BackendKey,
    timeout: Duration,
    on eventLoop: any EventLoop
) -> EventLoopFuture<Void> {
    startCancelRequest(key: key, timeout: timeout, on: eventLoop) { bootstrap in
        bootstrap.connect(to: address)
    }.finished
}

private func sendCancelRequest(
    key: BackendKey,
    timeout: Duration,
    on eventLoop: any EventLoop,
    connect: @escaping @Sendable (ClientBootstrap) -> EventLoopFuture<any Channel>
) async throws {
    let (finished, outcome) = startCancelRequest(key: key, timeout: timeout, on: eventLoop, connect: connect)
    try await withTaskCancellationHandler {
        try await finished.get()
    } onCancel: {
        outcome.fail(CancellationError())
    }
}

private func startCancelRequest(
    key: BackendKey,
    timeout: Duration,
    on eventLoop: any EventLoop,
    connect: @escaping @Sendable (ClientBootstrap) -> EventLoopFuture<any Channel>
) -> (finished: EventLoopFuture<Void>, outcome: EventLoopPromise<Void>) {
    let sent = NIOLoopBoundBox.makeBoxSendingValue(false, eventLoop: eventLoop)
    return startExchangeOnFreshSocket(
        on: eventLoop,
        timeout: TimeAmount(timeout),
        timeoutError: { CancelRequestError.timedOut(requestSent: sent.value) },
        connect: connect,
        connectError: { CancelRequestError.connectFailed($0) },
        keepOpenOnSuccess: false
    ) { channel in
        let closedByServer = channel.eventLoop.makePromise(of: Void.self)
        do {
            let handler = CancelRequestHandler(key: key, outcome: closedByServer) { sent.value = true }
            try channel.pipeline.syncOperations.addHandler(handler)
        } catch {
            closedByServer.fail(error)
        }
        return closedByServer.futureResult
    }
}

/// Writes the CancelRequest as soon as the socket is up and reports the server's close.
private final class CancelRequestHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let key: BackendKey
    private let outcome: EventLoopPromise<Void>
    private let markSent: () -> Void
    private var written = false
    private var sent = false

    init(key: BackendKey, outcome: EventLoopPromise<Void>, markSent: @escaping () -> Void) {
        self.key = key
        self.outcome = outcome
        self.markSent = markSent
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { write(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        write(context: context)
        context.fireChannelActive()
    }

    /// The server sends nothing back; anything that arrives is dropped.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    /// The server closes the socket once it has acted on the request (libpq waits for this too).
    func channelInactive(context: ChannelHandlerContext) {
        if sent {
            outcome.succeed()
        } else {
            outcome.fail(CancelRequestError.closedBeforeSending)
        }
        context.fireChannelInactive()
    }

    /// A reset, even after the write, leaves unknown whether the server read the request.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        outcome.fail(error)
        context.close(promise: nil)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        outcome.fail(CancelRequestError.closedBeforeSending)
    }

    private func write(context: ChannelHandlerContext) {
        guard !written else { return }
        written = true
        var buffer = context.channel.allocator.buffer(capacity: 16)
        buffer.writeMultipleIntegers(Int32(16), Int32(80_877_102), key.pid, key.secret)
        let promise = context.eventLoop.makePromise(of: Void.self)
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let outcome = self.outcome
        promise.futureResult.whenComplete { result in
            switch result {
            case .success:
                loopBound.value.sent = true
                loopBound.value.markSent()
            case .failure(let error):
                outcome.fail(error)
            }
        }
        context.writeAndFlush(NIOAny(buffer), promise: promise)
    }
}
