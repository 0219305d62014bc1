import ReliableDBClock

extension PoolStateMachine {
    /// Time passed: the shell's one timer fired at (or after) the last ``PoolActions/wakeAt``.
    ///
    /// Fails overdue waiters (`.timedOut` or `.deadlineReached`), closes idle connections past their idle timeout or
    /// lifetime, starts due keep-alives, closes connections whose keep-alive timed out, and starts a
    /// connect whose backoff has passed. Calling it early, late or twice is harmless.
    package mutating func tick(now: PoolInstant) -> PoolActions {
        var actions = PoolActions()
        failOverdueWaiters(now: now, into: &actions)
        finishEvent(now: now, into: &actions)
        return actions
    }

    /// The common tail of every event that knows the time: fire what is due, start the connects
    /// waiters need, work out the next wake-up, and notice a finished shutdown.
    ///
    /// Firing timers here rather than only in ``tick(now:)`` means no event ever returns with
    /// something already overdue, so ``PoolActions/wakeAt`` is always after `now`.
    mutating func finishEvent(now: PoolInstant, into actions: inout PoolActions) {
        var next = fireConnectionTimers(now: now, into: &actions)
        startConnects(now: now, loopKey: nil, into: &actions)
        next = earliest(next, waiters.earliestDeadline())
        next = earliest(next, pendingRetry())
        actions.wakeAt = next
        completeShutdownIfDone(into: &actions)
    }

    /// The next wake-up without firing anything, for events that carry no time.
    mutating func nextWakeAt() -> PoolInstant? {
        var next = waiters.earliestDeadline()
        let idleOut = idleTimeoutApplies
        for connection in connections.all {
            next = earliest(next, connection.nextDue(timing, idleOut: idleOut))
        }
        return earliest(next, pendingRetry())
    }

    /// Acts on every connection timer due at `now` and returns the earliest one still ahead.
    private mutating func fireConnectionTimers(now: PoolInstant, into actions: inout PoolActions) -> PoolInstant? {
        var next: PoolInstant?
        // Only idle connections beyond the minimum idle out: a warm pool does not churn.
        var idle = configuration.minimumIdle > 0 ? connections.idleCount() : 0
        var idleOut = idleTimeoutApplies
        for index in connections.indices {
            switch connections[index].dueTimer(at: now, timing, idleOut: idleOut) {
            case .close(let reason):
                if configuration.minimumIdle > 0 {
                    switch connections[index].state {
                    case .idle, .keepAlive:
                        idle -= 1
                        idleOut = idle > configuration.minimumIdle
                    case .connecting, .leased, .closing:
                        break
                    }
                }
                beginClose(at: index, reason: reason, into: &actions)
            case .keepAlive:
                if case .idle(let since, _) = connections[index].state {
                    connections[index].state = .keepAlive(started: now, idleSince: since)
                    actions.keepAlives.append(connections[index].id)
                }
            case nil:
                break
            }
            next = earliest(next, connections[index].nextDue(timing, idleOut: idleOut))
        }
        return next
    }

    /// Whether idle connections may idle out now: no minimum idle, or more idle than it.
    var idleTimeoutApplies: Bool {
        configuration.minimumIdle == 0 || connections.idleCount() > configuration.minimumIdle
    }

    /// Starts connects for waiters no pending connect will serve, within the connection limit, and
    /// when none is needed for them, for the idle connections missing below the minimum idle
    /// (``PoolConfiguration/warmUpConcurrency`` at a time).
    ///
    /// While connects are failing, only one is in flight at a time and only after the backoff: the
    /// database is probably down, and a connect per waiter would be a thundering herd on recovery.
    /// `bypassingBackoff` starts that one connect before the backoff's end.
    mutating func startConnects(
        now: PoolInstant,
        loopKey: Int?,
        bypassingBackoff: Bool = false,
        into actions: inout PoolActions
    ) {
        guard lifecycle == .running, !waiters.isEmpty || configuration.minimumIdle > 0 else { return }
        let (connecting, total) = connections.connectingAndTotal()
        var wanted = Swift.min(waiters.count - connecting, configuration.maximumConnections - total)
        if wanted <= 0 { wanted = warmUpWanted(connecting: connecting, total: total) }
        if backoff.failures > 0 {
            wanted = connecting == 0 && (bypassingBackoff || backoff.retryAt <= now) ? Swift.min(wanted, 1) : 0
        }
        guard wanted > 0 else { return }
        for _ in 0..<wanted {
            let id = nextConnectionID
            nextConnectionID += 1
            connections.add(PoolConnection(id: id, loopKey: loopKey, state: .connecting, expiresAt: nil))
            counters.connectsStarted += 1
            actions.connects.append(PoolConnect(connection: id, loopKey: loopKey))
        }
    }

    /// Connects to start for the minimum idle: the idle connections missing, less those already
    /// connecting, at most ``PoolConfiguration/warmUpConcurrency`` in flight, within the limit.
    private func warmUpWanted(connecting: Int, total: Int) -> Int {
        guard configuration.minimumIdle > 0 else { return 0 }
        let missing = configuration.minimumIdle - connections.idleCount() - connecting
        let room = Swift.min(PoolConfiguration.warmUpConcurrency - connecting, configuration.maximumConnections - total)
        return Swift.max(0, Swift.min(missing, room))
    }

    /// When the backed-off connect retry is due, if one is waiting to happen: connects are failing,
    /// none is in flight, someone is waiting (or idle connections are missing below the minimum)
    /// and there is room for another connection.
    private func pendingRetry() -> PoolInstant? {
        guard lifecycle == .running, backoff.failures > 0 else { return nil }
        let (connecting, total) = connections.connectingAndTotal()
        guard connecting == 0, total < configuration.maximumConnections else { return nil }
        guard !waiters.isEmpty || warmUpWanted(connecting: 0, total: total) > 0 else { return nil }
        return backoff.retryAt
    }
}
