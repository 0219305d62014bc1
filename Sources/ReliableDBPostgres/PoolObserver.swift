import Histogram
import PostgresNIO
import ReliableDB
import Synchronization
import _ConnectionPoolModule

/// Counts what the connection pool does, for exact statistics.
///
/// At postgres-nio 1.33.2 the pool reports connects and closes but never calls its utilization
/// and queue-depth hooks, so leases and waiters are counted by the backend around each lease.
final class PoolObserver: ConnectionPoolObservabilityDelegate {
    typealias ConnectionID = Int

    struct Counters {
        var connecting = 0
        var opened = 0
        var closed = 0
        var connectFailures = 0
        var closesByReason: [String: Int] = [:]
        var lastConnectError: (any Error)?
        var active = 0
        var waiting = 0
        var acquireTimeouts = 0
        var acquireTime = Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .two)
        var acquireTotalMicroseconds: UInt64 = 0
    }

    let counters = Mutex(Counters())

    func startedConnecting(id: Int) {
        counters.withLock { $0.connecting += 1 }
    }

    func connectFailed(id: Int, error: any Error) {
        counters.withLock {
            $0.connecting -= 1
            $0.connectFailures += 1
            $0.lastConnectError = error
        }
    }

    func connectSucceeded(id: Int, streamCapacity: UInt16) {
        counters.withLock {
            $0.connecting -= 1
            $0.opened += 1
            $0.lastConnectError = nil
        }
    }

    func connectionUtilizationChanged(id: Int, streamsUsed: UInt16, streamCapacity: UInt16) {}

    func keepAliveTriggered(id: Int) {}

    func keepAliveSucceeded(id: Int) {}

    func keepAliveFailed(id: Int, error: any Error) {}

    func connectionClosing(id: Int) {}

    func connectionClosed(id: Int, error: (any Error)?) {
        let reason = (error as? PoolCloseError)?.reason ?? .server
        counters.withLock {
            $0.closed += 1
            $0.closesByReason[reason.rawValue, default: 0] += 1
        }
    }

    func requestQueueDepthChanged(_ newDepth: Int) {}

    func leaseRequested() {
        counters.withLock { $0.waiting += 1 }
    }

    func leaseEnded(granted: Bool, waited: Duration, timedOut: Bool) {
        let micros = UInt64(max(0, waited.nanosecondsClamped / 1000))
        counters.withLock {
            $0.waiting -= 1
            if granted {
                $0.active += 1
                _ = $0.acquireTime.record(micros)
                $0.acquireTotalMicroseconds &+= micros
            }
            if timedOut { $0.acquireTimeouts += 1 }
        }
    }

    func released() {
        counters.withLock { $0.active -= 1 }
    }

    var lastConnectError: (any Error)? {
        counters.withLock { $0.lastConnectError }
    }

    func statistics(maximum: Int) -> PoolStatistics {
        counters.withLock { counters in
            let open = counters.opened - counters.closed
            let samples = counters.acquireTime.totalCount
            return PoolStatistics(
                total: open,
                active: counters.active,
                idle: max(0, open - counters.active),
                waiting: counters.waiting,
                max: maximum,
                opened: counters.opened,
                closed: counters.closed,
                connectFailures: counters.connectFailures,
                acquireTimeouts: counters.acquireTimeouts,
                averageAcquireTime: samples == 0
                    ? .zero : .microseconds(Int64(counters.acquireTotalMicroseconds / samples)),
                maxAcquireTime: samples == 0 ? .zero : .microseconds(Int64(counters.acquireTime.max)),
                closesByReason: counters.closesByReason
            )
        }
    }
}

/// A lease request whose completion resumes the waiting caller.
struct LeaseRequest: ConnectionRequestProtocol {
    typealias Connection = PooledPostgresConnection
    let id: Int
    let continuation: CheckedContinuation<ConnectionLease<PooledPostgresConnection>, any Error>

    func complete(with result: Result<ConnectionLease<PooledPostgresConnection>, ConnectionPoolError>) {
        continuation.resume(with: result.mapError { $0 })
    }
}

/// Closes idle connections that fail a `SELECT 1` every 30 seconds.
struct KeepAlive: ConnectionKeepAliveBehavior {
    typealias Connection = PooledPostgresConnection
    let logger: Logger

    var keepAliveFrequency: Duration? { .seconds(30) }

    func runKeepAlive(for connection: PooledPostgresConnection) async throws {
        _ = try await connection.underlying.query("SELECT 1", logger: logger).collect()
    }
}
