/// Connection-pool numbers read from the pool itself (`connectionPool` in `/api/health`).
public struct PoolStatistics: Sendable, Equatable, Codable {
    /// Open connections.
    public var total: Int
    /// Connections lent out to an operation.
    public var active: Int
    /// Open connections waiting for work.
    public var idle: Int
    /// Callers waiting for a connection.
    public var waiting: Int
    /// The most connections the pool may open.
    public var max: Int
    /// Connections opened since start.
    public var opened: Int
    /// Connections closed since start (any reason).
    public var closed: Int
    /// Connection attempts that failed since start.
    public var connectFailures: Int
    /// Acquisitions that gave up after the pool timeout.
    public var acquireTimeouts: Int
    /// Mean and worst time callers waited for a connection.
    public var averageAcquireTime: Duration
    public var maxAcquireTime: Duration
    /// Connections closed since start, by reason (`idle`, `lifetime`, `broken`, `server`, `shutdown`).
    public var closesByReason: [String: Int]

    public init(
        total: Int = 0,
        active: Int = 0,
        idle: Int = 0,
        waiting: Int = 0,
        max: Int = 0,
        opened: Int = 0,
        closed: Int = 0,
        connectFailures: Int = 0,
        acquireTimeouts: Int = 0,
        averageAcquireTime: Duration = .zero,
        maxAcquireTime: Duration = .zero,
        closesByReason: [String: Int] = [:]
    ) {
        self.total = total
        self.active = active
        self.idle = idle
        self.waiting = waiting
        self.max = max
        self.opened = opened
        self.closed = closed
        self.connectFailures = connectFailures
        self.acquireTimeouts = acquireTimeouts
        self.averageAcquireTime = averageAcquireTime
        self.maxAcquireTime = maxAcquireTime
        self.closesByReason = closesByReason
    }

    /// Busy share of the pool's capacity in percent.
    public var utilization: Double {
        max > 0 ? Double(active) * 100 / Double(max) : 0
    }
}

extension PoolStatistics: CustomStringConvertible {
    public var description: String {
        "total=\(total) active=\(active) idle=\(idle) waiting=\(waiting) max=\(max)"
    }
}
