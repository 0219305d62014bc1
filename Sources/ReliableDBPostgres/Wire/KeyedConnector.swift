import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import PostgresNIO
import ReliableDB
import Synchronization

// MARK: - Errors

/// Why a connection failed before PostgresNIO took it over (TCP connect, TLS negotiation).
///
/// Once PostgresNIO has the channel, its own `PSQLError`s are thrown as from
/// `PostgresConnection.connect`.
enum KeyedConnectError: Error, CustomStringConvertible {
    /// No TCP or Unix-socket connection (refused, unresolvable, no answer in time).
    case connectFailed(any Error)
    /// `sslmode` requires TLS and the server answered the SSLRequest with 'N'.
    case sslUnsupported
    /// The server answered the SSLRequest with neither 'S' nor 'N' (an ErrorResponse from a
    /// very old server, or not PostgreSQL at all).
    case unexpectedSSLResponse(UInt8)
    /// Bytes followed the server's 'S' before the TLS handshake: a man in the middle could have
    /// injected them (CVE-2021-23222), so the connection is refused as libpq and PostgresNIO do.
    case unencryptedDataAfterSSLResponse
    /// The TLS handshake failed (certificate not trusted, host name mismatch, ...).
    case tlsHandshakeFailed(any Error)
    /// Connecting and negotiating did not finish within the connect timeout.
    case timedOut(TimeAmount)
    /// The server closed the connection during negotiation.
    case closedDuringNegotiation
    /// The event loop is not a NIOPosix loop, which `ClientBootstrap` needs.
    case unsupportedEventLoop

    var description: String {
        switch self {
        case .connectFailed(let error): describeNetworkError(error)
        case .sslUnsupported: "the server does not support TLS, but sslmode requires it"
        case .unexpectedSSLResponse(let byte): "unexpected answer to the SSL request (byte \(byte))"
        case .unencryptedDataAfterSSLResponse: "the server sent unencrypted data after agreeing to TLS"
        case .tlsHandshakeFailed(let error): "TLS handshake failed: \(plainDescription(of: error))"
        case .timedOut(let amount): "no answer within the connect timeout (\(amount.nanoseconds / 1_000_000) ms)"
        case .closedDuringNegotiation: "the server closed the connection during TLS negotiation"
        case .unsupportedEventLoop: "the event loop cannot open sockets with ClientBootstrap"
        }
    }
}

// MARK: - Connecting with the cancel key

extension PostgresConnection {
    /// Opens a connection like `PostgresConnection.connect(on:configuration:id:logger:)` and also
    /// returns its cancel key, which PostgresNIO 1.33.2 reads but keeps internal.
    ///
    /// Why this way: the only public seam is `Configuration(establishedChannel:...)`, so this opens
    /// the socket itself, puts a ``BackendKeySniffer`` in the pipeline that watches the startup
    /// messages for BackendKeyData ('K') and then removes itself, and hands the channel to
    /// PostgresNIO. The sniffer has to see plaintext, but PostgresNIO would add its TLS handler
    /// *in front of* anything already in the pipeline; so for `prefer`/`require` this does the
    /// SSLRequest and TLS handshake itself (same rules as PostgresNIO and libpq: 'N' fails only
    /// `require`, bytes after 'S' fail) and gives PostgresNIO the encrypted channel with TLS
    /// "disabled". It must also swallow the handshake-completed event: PostgresNIO treats one it
    /// did not ask for as a fatal state error.
    ///
    /// - Parameter configuration: a TCP (`host:port`) or Unix-socket configuration; its TLS mode,
    ///   `tlsServerName`, credentials, startup parameters and `requireBackendKeyData` apply as in
    ///   PostgresNIO. `connectTimeout` bounds the whole connect, negotiation and startup. An
    ///   established-channel configuration is passed through, with no key.
    /// - Returns: the connection and its key; the key is nil when the server sent none (Amazon
    ///   RDS Proxy, with `requireBackendKeyData` off).
    static func connectWithBackendKey(
        on eventLoop: any EventLoop,
        configuration: PostgresConnection.Configuration,
        id: PostgresConnection.ID,
        logger: Logger
    ) async throws -> (PostgresConnection, BackendKey?) {
        let (connection, cancel) = startConnectWithBackendKey(
            on: eventLoop,
            configuration: configuration,
            id: id,
            logger: logger
        )
        return try await withTaskCancellationHandler {
            try await connection.get()
        } onCancel: {
            cancel()
        }
    }

    /// ``connectWithBackendKey(on:configuration:id:logger:)`` without a task, for the pool: a future
    /// of the connection and its key, and a closure that calls the connect off (it then fails with
    /// `CancellationError`, its socket closed).
    static func startConnectWithBackendKey(
        on eventLoop: any EventLoop,
        configuration: PostgresConnection.Configuration,
        id: PostgresConnection.ID,
        logger: Logger
    ) -> (EventLoopFuture<(PostgresConnection, BackendKey?)>, cancel: @Sendable () -> Void) {
        let endpoint: KeyedEndpoint
        if let host = configuration.host, let port = configuration.port {
            endpoint = .tcp(host: host, port: port)
        } else if let path = configuration.unixSocketPath {
            endpoint = .unixSocket(path: path)
        } else {
            let connection = connect(on: eventLoop, configuration: configuration, id: id, logger: logger)
            return (connection.map { ($0, nil) }, {})
        }

        let connectTimeout = configuration.options.connectTimeout
        let deadline = NIODeadline.now() + connectTimeout
        var serverName = configuration.options.tlsServerName
        if serverName == nil, case .tcp(let host, _) = endpoint, (try? SocketAddress(ipAddress: host, port: 0)) == nil {
            serverName = host  // as PostgresNIO: SNI and verification use the host name, never an IP literal
        }
        let (prepared, calledOff) = prepareChannel(
            endpoint: endpoint,
            tls: configuration.tls,
            serverName: serverName,
            deadline: deadline,
            connectTimeout: connectTimeout,
            on: eventLoop
        )
        // Once prepared, the socket is PostgresNIO's startup to finish: calling off then closes it.
        let handedOver = HandOver()
        let connection = prepared.flatMap { prepared -> EventLoopFuture<(PostgresConnection, BackendKey?)> in
            let calledOffAlready = handedOver.state.withLock { state in
                state.channel = prepared.channel
                return state.calledOff
            }
            if calledOffAlready { prepared.channel.close(promise: nil) }
            let remaining = deadline - .now()
            guard remaining > .zero else {
                prepared.channel.close(promise: nil)
                return prepared.channel.closeFuture.flatMapResult { _ in
                    .failure(KeyedConnectError.timedOut(connectTimeout))
                }
            }
            var handover = PostgresConnection.Configuration(
                establishedChannel: prepared.channel,
                tls: .disable,
                username: configuration.username,
                password: configuration.password,
                database: configuration.database
            )
            handover.options = configuration.options
            handover.options.connectTimeout = remaining  // PostgresNIO bounds startup with it
            return connect(on: eventLoop, configuration: handover, id: id, logger: logger)
                .flatMapError { error in
                    // PostgresNIO closes it too; wait, so that no socket outlives the error.
                    prepared.channel.close(promise: nil)
                    return prepared.channel.closeFuture.flatMapResult { _ in .failure(error) }
                }
                .flatMap { connection in
                    // Startup has seen ReadyForQuery, which follows BackendKeyData, so this is resolved.
                    prepared.key.map { (connection, $0) }.recover { _ in (connection, nil) }
                }
        }
        return (
            connection,
            {
                calledOff.fail(CancellationError())
                let channel = handedOver.state.withLock { state in
                    state.calledOff = true
                    return state.channel
                }
                channel?.close(promise: nil)
            }
        )
    }

    /// Connects and negotiates TLS; the returned channel carries a ``BackendKeySniffer``. On
    /// failure, cancellation (failing the returned promise) or the deadline the socket is closed
    /// before the future fails.
    private static func prepareChannel(
        endpoint: KeyedEndpoint,
        tls: Configuration.TLS,
        serverName: String?,
        deadline: NIODeadline,
        connectTimeout: TimeAmount,
        on eventLoop: any EventLoop
    ) -> (EventLoopFuture<PreparedChannel>, EventLoopPromise<PreparedChannel>) {
        startExchangeOnFreshSocket(
            on: eventLoop,
            timeout: deadline - .now(),
            timeoutError: { KeyedConnectError.timedOut(connectTimeout) },
            connect: { bootstrap in
                switch endpoint {
                case .tcp(let host, let port): bootstrap.connect(host: host, port: port)
                case .unixSocket(let path): bootstrap.connect(unixDomainSocketPath: path)
                }
            },
            connectError: { KeyedConnectError.connectFailed($0) },
            keepOpenOnSuccess: true
        ) { channel in
            negotiate(channel: channel, tls: tls, serverName: serverName)
        }
    }

    /// Runs on the channel's event loop: SSLRequest and TLS handshake if asked for, then the sniffer.
    private static func negotiate(
        channel: any Channel,
        tls: Configuration.TLS,
        serverName: String?
    ) -> EventLoopFuture<PreparedChannel> {
        let eventLoop = channel.eventLoop
        let secured: EventLoopFuture<Void>
        if let sslContext = tls.sslContext {
            let answer = eventLoop.makePromise(of: Bool.self)
            do {
                try channel.pipeline.syncOperations.addHandler(SSLRequestHandler(answer: answer))
            } catch {
                answer.fail(error)
            }
            let enforced = tls.isEnforced
            secured = answer.futureResult.flatMap { supported in
                guard supported else {
                    if enforced { return eventLoop.makeFailedFuture(KeyedConnectError.sslUnsupported) }
                    return eventLoop.makeSucceededVoidFuture()
                }
                let handshake = eventLoop.makePromise(of: Void.self)
                do {
                    let tlsHandler = try NIOSSLClientHandler(context: sslContext, serverHostname: serverName)
                    try channel.pipeline.syncOperations.addHandler(tlsHandler, position: .first)
                    try channel.pipeline.syncOperations.addHandler(TLSHandshakeWaiter(done: handshake))
                } catch {
                    handshake.fail(KeyedConnectError.tlsHandshakeFailed(error))
                }
                return handshake.futureResult
            }
        } else {
            secured = eventLoop.makeSucceededVoidFuture()
        }
        return secured.flatMapThrowing {
            let key = eventLoop.makePromise(of: BackendKey?.self)
            do {
                let sniffer = BackendKeySniffer(key: key, serverAddress: channel.remoteAddress)
                try channel.pipeline.syncOperations.addHandler(sniffer)
            } catch {
                key.succeed(nil)
                throw error
            }
            return PreparedChannel(channel: channel, key: key.futureResult)
        }
    }
}

// MARK: - Channel setup

private enum KeyedEndpoint: Sendable {
    case tcp(host: String, port: Int)
    case unixSocket(path: String)
}

private struct PreparedChannel: Sendable {
    let channel: any Channel
    /// Resolved by the sniffer at BackendKeyData, ReadyForQuery, an ErrorResponse or close.
    let key: EventLoopFuture<BackendKey?>
}

// MARK: - TLS negotiation

/// Sends the SSLRequest (length 8, code 80877103) and reads the server's one-byte answer.
private final class SSLRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let answer: EventLoopPromise<Bool>
    private var requested = false
    private var decided = false

    init(answer: EventLoopPromise<Bool>) {
        self.answer = answer
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { request(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        request(context: context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !decided else { return }
        var buffer = unwrapInboundIn(data)
        guard let byte = buffer.readInteger(as: UInt8.self) else { return }
        decided = true
        let outcome: Result<Bool, KeyedConnectError>
        if buffer.readableBytes > 0 {
            outcome = .failure(.unencryptedDataAfterSSLResponse)
        } else if byte == UInt8(ascii: "S") {
            outcome = .success(true)
        } else if byte == UInt8(ascii: "N") {
            outcome = .success(false)
        } else {
            outcome = .failure(.unexpectedSSLResponse(byte))
        }
        // Leave first: whoever waits on `answer` adds the TLS handler in our place at once.
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        answer.completeWith(outcome.mapError { $0 })
    }

    func channelInactive(context: ChannelHandlerContext) {
        answer.fail(KeyedConnectError.closedDuringNegotiation)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        answer.fail(KeyedConnectError.connectFailed(error))
        context.close(promise: nil)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if !decided { answer.fail(KeyedConnectError.closedDuringNegotiation) }
    }

    private func request(context: ChannelHandlerContext) {
        guard !requested else { return }
        requested = true
        var buffer = context.channel.allocator.buffer(capacity: 8)
        buffer.writeMultipleIntegers(Int32(8), Int32(80_877_103))
        context.writeAndFlush(NIOAny(buffer), promise: nil)
    }
}

/// Waits for the TLS handshake and keeps its completion event from PostgresNIO, which would stop
/// on a precondition failure if it saw one it had not asked for.
private final class TLSHandshakeWaiter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let done: EventLoopPromise<Void>
    private var completed = false

    init(done: EventLoopPromise<Void>) {
        self.done = done
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            // Leave first: whoever waits on `done` adds the sniffer and hands the channel over.
            completed = true
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            done.succeed()
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        done.fail(KeyedConnectError.tlsHandshakeFailed(error))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        done.fail(KeyedConnectError.closedDuringNegotiation)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if !completed { done.fail(KeyedConnectError.closedDuringNegotiation) }
    }
}

// MARK: - Reading the backend key

/// Watches the server's startup messages for BackendKeyData ('K', length 12, pid, secret) and
/// passes every byte on unchanged, then leaves the pipeline.
///
/// It sits after TLS and before PostgresNIO's decoder, reads a copy of each buffer and keeps at
/// most a 5-byte header or the 8-byte key, skipping other message bodies by count, so it costs
/// nothing after startup. It stops at the key, at ReadyForQuery ('Z': no key was sent), at an
/// ErrorResponse ('E': startup failed), or at anything that is not a message frame.
final class BackendKeySniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private enum State {
        case header
        case skipping(Int)
        case key
        case finished
    }

    private let key: EventLoopPromise<BackendKey?>
    private let serverAddress: SocketAddress?
    private var state = State.header
    private var pending = ByteBuffer()
    private var removed = false

    init(key: EventLoopPromise<BackendKey?>, serverAddress: SocketAddress?) {
        self.key = key
        self.serverAddress = serverAddress
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        scan(unwrapInboundIn(data))
        context.fireChannelRead(data)
        // Passing the bytes on may have closed the channel, which removes every handler.
        if case .finished = state, !removed {
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(nil)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        removed = true
        finish(nil)  // ignored if the key was already reported
    }

    private func scan(_ buffer: ByteBuffer) {
        var buffer = buffer
        while buffer.readableBytes > 0 {
            switch state {
            case .finished:
                return
            case .skipping(let count):
                let skipped = min(count, buffer.readableBytes)
                buffer.moveReaderIndex(forwardBy: skipped)
                state = count == skipped ? .header : .skipping(count - skipped)
            case .header:
                guard fill(from: &buffer, upTo: 5),
                    let (type, length) = pending.readMultipleIntegers(as: (UInt8, Int32).self)
                else { return }
                pending.clear()
                let bodyLength = Int(length) - 4
                if bodyLength < 0 {
                    finish(nil)  // not a message frame: give up watching, never disturb the bytes
                } else if type == UInt8(ascii: "K") && bodyLength == 8 {
                    state = .key
                } else if type == UInt8(ascii: "Z") || type == UInt8(ascii: "E") {
                    finish(nil)
                } else {
                    state = bodyLength == 0 ? .header : .skipping(bodyLength)
                }
            case .key:
                guard fill(from: &buffer, upTo: 8),
                    let (pid, secret) = pending.readMultipleIntegers(as: (Int32, Int32).self)
                else { return }
                pending.clear()
                finish(BackendKey(pid: pid, secret: secret, serverAddress: serverAddress))
            }
        }
    }

    /// Moves bytes into `pending` until it holds `count`; false while it holds fewer.
    private func fill(from buffer: inout ByteBuffer, upTo count: Int) -> Bool {
        let wanted = min(count - pending.readableBytes, buffer.readableBytes)
        if wanted > 0, var slice = buffer.readSlice(length: wanted) {
            pending.writeBuffer(&slice)
        }
        return pending.readableBytes == count
    }

    private func finish(_ found: BackendKey?) {
        if case .finished = state { return }
        state = .finished
        key.succeed(found)
    }
}

/// The socket a connect has handed to PostgresNIO's startup, and whether the connect was called off.
private final class HandOver: Sendable {
    let state = Mutex<(channel: (any Channel)?, calledOff: Bool)>((nil, false))
}
