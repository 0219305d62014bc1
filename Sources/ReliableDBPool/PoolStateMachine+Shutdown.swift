import ReliableDBClock

extension PoolStateMachine {
    /// Stops the pool: every waiter fails with `.shutdown`, idle connections (and those being
    /// probed) close now, leased ones close when released, connecting ones close once connected,
    /// and nothing new is opened or granted. Later leases fail with `.shutdown`.
    ///
    /// The shutdown is complete when the last connection reports ``closed(connection:now:)`` (or its
    /// connect fails); that event returns ``PoolActions/shutDownCompleted``. Calling it twice is
    /// harmless.
    package mutating func shutdown() -> PoolActions {
        var actions = PoolActions()
        if lifecycle == .running {
            lifecycle = .shuttingDown
            backoff = ConnectBackoff()
            failAllWaiters(reason: .shutdown, into: &actions)
            for index in connections.indices {
                switch connections[index].state {
                case .idle, .keepAlive:
                    beginClose(at: index, reason: .shutdown, into: &actions)
                case .connecting, .leased, .closing:
                    break
                }
            }
        }
        actions.wakeAt = nextWakeAt()
        completeShutdownIfDone(into: &actions)
        return actions
    }

    mutating func completeShutdownIfDone(into actions: inout PoolActions) {
        guard lifecycle == .shuttingDown, connections.isEmpty else { return }
        lifecycle = .shutDown
        actions.shutDownCompleted = true
    }
}
