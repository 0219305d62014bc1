import Synchronization

/// Hands events to any number of subscribers without making the emitter wait.
///
/// Each ``subscribe(bufferingNewest:)`` call gets its own `AsyncStream`; a slow subscriber loses
/// its oldest events instead of slowing the code that emits them (a query must never wait for an
/// alert). Emitting with no subscribers costs one lock.
public final class EventBroadcaster<Event: Sendable>: Sendable {
    private let continuations = Mutex<[UInt64: AsyncStream<Event>.Continuation]>([:])
    private let nextID = Atomic<UInt64>(0)

    public init() {}

    /// A stream of the events emitted from now on. It ends when the consumer stops iterating.
    public func subscribe(bufferingNewest limit: Int = 256) -> AsyncStream<Event> {
        let (stream, continuation) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .bufferingNewest(limit))
        let id = nextID.add(1, ordering: .relaxed).newValue
        continuation.onTermination = { [weak self] _ in
            _ = self?.continuations.withLock { $0.removeValue(forKey: id) }
        }
        continuations.withLock { $0[id] = continuation }
        return stream
    }

    /// Delivers `event` to every current subscriber.
    public func emit(_ event: Event) {
        let targets = continuations.withLock { Array($0.values) }
        for continuation in targets {
            continuation.yield(event)
        }
    }

    /// The number of live subscriptions.
    public var subscriberCount: Int {
        continuations.withLock { $0.count }
    }
}
