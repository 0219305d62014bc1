import NIOCore
import NIOPosix

/// Opens a socket and runs `exchange` on it under one deadline, so that no path leaves the socket
/// open behind the caller.
///
/// Timeouts exist for partitions, and a partition is exactly when a half-done socket is easy to
/// forget: this fails at the deadline or on task cancellation even while the TCP connect is still
/// pending, closes the socket on every failure (and, unless `keepOpenOnSuccess`, on success too),
/// waits for that close before returning, and closes a socket whose connect completes only after
/// the caller was answered. (A connect still pending then is bounded by the same timeout, the
/// most NIO lets us do: its bootstrap cannot be called off.)
///
/// - Parameters:
///   - timeout: bounds resolving, connecting and the whole exchange.
///   - timeoutError: the error at the deadline; called on the event loop.
///   - connectError: wraps a connect failure.
///   - exchange: runs on the event loop once connected; its future decides the outcome.
func exchangeOnFreshSocket<Value: Sendable>(
    on eventLoop: any EventLoop,
    timeout: TimeAmount,
    timeoutError: @escaping @Sendable () -> any Error,
    connect: @escaping @Sendable (ClientBootstrap) -> EventLoopFuture<any Channel>,
    connectError: @escaping @Sendable (any Error) -> any Error,
    keepOpenOnSuccess: Bool,
    exchange: @escaping @Sendable (any Channel) -> EventLoopFuture<Value>
) async throws -> Value {
    let (finished, outcome) = startExchangeOnFreshSocket(
        on: eventLoop,
        timeout: timeout,
        timeoutError: timeoutError,
        connect: connect,
        connectError: connectError,
        keepOpenOnSuccess: keepOpenOnSuccess,
        exchange: exchange
    )
    return try await withTaskCancellationHandler {
        try await finished.get()
    } onCancel: {
        outcome.fail(CancellationError())
    }
}

/// ``exchangeOnFreshSocket(on:timeout:timeoutError:connect:connectError:keepOpenOnSuccess:exchange:)``
/// without a task: returns the future that completes once the socket is closed (or kept), and the
/// promise that calls the exchange off (failing it ends the exchange with that error).
func startExchangeOnFreshSocket<Value: Sendable>(
    on eventLoop: any EventLoop,
    timeout: TimeAmount,
    timeoutError: @escaping @Sendable () -> any Error,
    connect: @escaping @Sendable (ClientBootstrap) -> EventLoopFuture<any Channel>,
    connectError: @escaping @Sendable (any Error) -> any Error,
    keepOpenOnSuccess: Bool,
    exchange: @escaping @Sendable (any Channel) -> EventLoopFuture<Value>
) -> (finished: EventLoopFuture<Value>, outcome: EventLoopPromise<Value>) {
    // Completed once, by the exchange, a failure, the deadline or cancellation; later completions
    // are ignored.
    let outcome = eventLoop.makePromise(of: Value.self)
    // Completed after `outcome`, once the socket it leaves behind (if any) is closed.
    let finished = eventLoop.makePromise(of: Value.self)
    let deadline = NIODeadline.now() + timeout

    eventLoop.execute {
        let state = NIOLoopBoundBox(FreshSocketState(), eventLoop: eventLoop)
        let timer = eventLoop.scheduleTask(deadline: deadline) { outcome.fail(timeoutError()) }
        outcome.futureResult.whenComplete { result in
            timer.cancel()
            state.value.decided = true
            let keep: Bool
            if case .success = result { keep = keepOpenOnSuccess } else { keep = false }
            guard let channel = state.value.channel, !keep else {
                finished.completeWith(result)
                return
            }
            channel.close(promise: nil)
            channel.closeFuture.whenComplete { _ in finished.completeWith(result) }
        }

        guard let bootstrap = ClientBootstrap(validatingGroup: eventLoop) else {
            outcome.fail(KeyedConnectError.unsupportedEventLoop)
            return
        }
        connect(bootstrap.connectTimeout(timeout)).whenComplete { result in
            switch result {
            case .failure(let error):
                outcome.fail(connectError(error))
            case .success(let channel):
                guard !state.value.decided else {
                    channel.close(promise: nil)  // connected after the caller was answered
                    return
                }
                state.value.channel = channel
                exchange(channel).cascade(to: outcome)
            }
        }
    }

    return (finished.futureResult, outcome)
}

private struct FreshSocketState {
    var channel: (any Channel)?
    var decided = false
}
