import ReliableDBClock

extension PoolStateMachine {
    /// A connect started by a `connect` action succeeded.
    ///
    /// The connection goes to the longest waiter, or idle. A success ends any connect backoff.
    /// After ``shutdown()`` the connection is closed instead.
    ///
    /// - Parameters:
    ///   - loop: The event loop the connection ended up on, when the shell chose one for a `connect`
    ///     without a loop key; `nil` keeps the key from the `connect` action.
    ///   - lifetimeJitter: A random value in 0...1 drawn by the shell; the connection's lifetime is
    ///     `maxLifetime * (1 - lifetimeJitterFraction * lifetimeJitter)`.
    package mutating func connected(
        connection id: ConnectionID,
        loop: Int? = nil,
        now: PoolInstant,
        lifetimeJitter: Double = 0
    ) -> PoolActions {
        var actions = PoolActions()
        failOverdueWaiters(now: now, into: &actions)
        if let index = connections.index(of: id), connections[index].state == .connecting {
            counters.opened += 1
            backoff.failures = 0
            if let loop { connections[index].loopKey = loop }
            connections[index].expiresAt = configuration.lifetime(jitter: lifetimeJitter).map { now + $0 }
            connectionAvailable(at: index, now: now, idleSince: now, enforceLifetime: false, into: &actions)
        }
        finishEvent(now: now, into: &actions)
        return actions
    }

    /// A connect started by a `connect` action failed.
    ///
    /// The next connect waits for the backoff (doubling per consecutive failure, capped). If no
    /// connection is open, every waiter is failed with `.connectFailed` at once: with the database
    /// unreachable, making callers wait out their whole timeout only piles up load (fail-fast).
    /// The returned failures all stem from this call, so the shell answers them with the error it
    /// is reporting.
    package mutating func connectFailed(connection id: ConnectionID, now: PoolInstant) -> PoolActions {
        var actions = PoolActions()
        failOverdueWaiters(now: now, into: &actions)
        if let index = connections.index(of: id), connections[index].state == .connecting {
            recordConnectFailure(at: index, now: now, into: &actions)
        }
        finishEvent(now: now, into: &actions)
        return actions
    }

    /// The holder of a leased connection gives it back.
    ///
    /// With `discard` (the classification said the connection is broken, or a timed-out statement
    /// could not be stopped) it is closed; otherwise it goes to the longest waiter, or idle, unless
    /// it is past its lifetime or the pool is shutting down. A release of a connection that is not
    /// leased (already reported closed, or unknown) is ignored.
    package mutating func release(connection id: ConnectionID, discard: Bool = false, now: PoolInstant) -> PoolActions {
        var actions = PoolActions()
        failOverdueWaiters(now: now, into: &actions)
        if let index = connections.index(of: id), case .leased = connections[index].state {
            if discard {
                beginClose(at: index, reason: .broken, into: &actions)
            } else {
                connectionAvailable(at: index, now: now, idleSince: now, enforceLifetime: true, into: &actions)
            }
        }
        finishEvent(now: now, into: &actions)
        return actions
    }

    /// A keep-alive probe started by a `keepAlive` action finished.
    ///
    /// A live connection returns to idle (or to a request that arrived during the probe) with its
    /// idle clock unchanged; a dead one is closed. A result for a probe that already timed out is
    /// ignored: the connection is closing.
    package mutating func keepAliveDone(connection id: ConnectionID, alive: Bool, now: PoolInstant) -> PoolActions {
        var actions = PoolActions()
        failOverdueWaiters(now: now, into: &actions)
        if let index = connections.index(of: id), case .keepAlive(_, let idleSince) = connections[index].state {
            if alive {
                connectionAvailable(at: index, now: now, idleSince: idleSince, enforceLifetime: true, into: &actions)
            } else {
                beginClose(at: index, reason: .keepAliveFailed, into: &actions)
            }
        }
        finishEvent(now: now, into: &actions)
        return actions
    }

    /// A connection's socket closed, whatever state it was in; the machine forgets it.
    ///
    /// The normal end of a `close` action. A connection that closes on its own while idle, leased
    /// or being probed counts as `.broken` (its holder's later release is ignored). One that closes
    /// while connecting counts as a failed connect, with fail-fast and backoff. The freed slot may
    /// start a connect for waiters.
    package mutating func closed(connection id: ConnectionID, now: PoolInstant) -> PoolActions {
        var actions = PoolActions()
        failOverdueWaiters(now: now, into: &actions)
        if let index = connections.index(of: id) {
            switch connections[index].state {
            case .connecting:
                recordConnectFailure(at: index, now: now, into: &actions)
            case .closing:
                connections.remove(at: index)
                counters.closed += 1
            case .idle, .leased, .keepAlive:
                counters.closes.broken += 1
                connections.remove(at: index)
                counters.closed += 1
            }
        }
        finishEvent(now: now, into: &actions)
        return actions
    }

    /// Moves the connection at `index` to `closing` and asks the shell to close it.
    mutating func beginClose(at index: Int, reason: PoolCloseReason, into actions: inout PoolActions) {
        connections[index].state = .closing(reason)
        counters.closes[reason] += 1
        actions.closes.append(PoolClose(connection: connections[index].id, reason: reason))
    }

    private mutating func recordConnectFailure(at index: Int, now: PoolInstant, into actions: inout PoolActions) {
        connections.remove(at: index)
        counters.connectFailures += 1
        guard lifecycle == .running else { return }
        backoff.failures += 1
        backoff.retryAt = now + configuration.connectBackoff(afterFailures: backoff.failures)
        if connections.openCount() == 0 {
            failAllWaiters(reason: .connectFailed, into: &actions)
        }
    }
}

extension PoolStateMachine {
    /// Connection `refused` found its server changed role under it (a primary demoted while its
    /// connections stay open): every connection that existed then is retired, as HikariCP's
    /// `softEvictConnections` does. Idle ones close now, leased and probing ones when they come
    /// back; connects in flight are kept (the walk checks the role). A refusal by a connection
    /// that already existed at the last eviction changes nothing: that eviction covered it, and
    /// the connections opened since walked the servers after the change.
    package mutating func evictAll(refused: ConnectionID, now: PoolInstant) -> PoolActions {
        var actions = PoolActions()
        failOverdueWaiters(now: now, into: &actions)
        if refused >= evictedBelow {
            evictedBelow = nextConnectionID
            for index in connections.indices {
                switch connections[index].state {
                case .idle:
                    connections[index].evicted = true
                    beginClose(at: index, reason: .evicted, into: &actions)
                case .leased, .keepAlive:
                    connections[index].evicted = true
                case .connecting, .closing:
                    break
                }
            }
        }
        finishEvent(now: now, into: &actions)
        return actions
    }

    /// A new maximum (live settings). Raised, it lets waiters get connects at once. Lowered, the
    /// connections beyond it leave without interrupting anyone: idle ones close now, then
    /// connects in flight, probed and leased ones are marked to close when they come back (in
    /// that order). Nothing is opened while more than the maximum are open. The minimum idle
    /// asked for is capped by the maximum, and comes back when the maximum does.
    package mutating func resize(maximumConnections: Int, now: PoolInstant) -> PoolActions {
        var actions = PoolActions()
        failOverdueWaiters(now: now, into: &actions)
        var resized = configuration
        resized.maximumConnections = maximumConnections
        resized.minimumIdle = configuredMinimumIdle
        configuration = resized.normalized
        for index in connections.indices { connections[index].beyondMaximum = false }
        var excess = connections.count - connections.closingCount() - configuration.maximumConnections
        for index in connections.indices where excess > 0 {
            if case .idle = connections[index].state {
                beginClose(at: index, reason: .resized, into: &actions)
                excess -= 1
            }
        }
        let order: [(PoolConnectionState) -> Bool] = [
            { $0 == .connecting },
            { if case .keepAlive = $0 { true } else { false } },
            { if case .leased = $0 { true } else { false } },
        ]
        for matches in order {
            for index in connections.indices.reversed() where excess > 0 && matches(connections[index].state) {
                connections[index].beyondMaximum = true
                excess -= 1
            }
        }
        finishEvent(now: now, into: &actions)
        return actions
    }

    /// The server was just reached another way (a health probe's own connection): connects are
    /// no longer failing, so a caller waiting for the backed-off retry gets a connect now instead
    /// of up to ``PoolConfiguration/connectBackoffMaximum`` after the server came back.
    package mutating func serverReachable(now: PoolInstant) -> PoolActions {
        if lifecycle == .running { backoff.failures = 0 }
        // Then as a tick: overdue waiters fail, what is due fires, the connects waiters need start.
        return tick(now: now)
    }
}
