import ReliableDBClock

extension PoolStateMachine {
    /// A request asks for a connection.
    ///
    /// - Parameters:
    ///   - request: The caller's id for this request, unique among waiting requests.
    ///   - timeoutAt: When the pool's own wait limit (its acquire timeout) ends the wait; a request
    ///     still waiting then fails with `.timedOut`. `nil` sets no pool limit.
    ///   - deadline: When the caller's operation runs out of time; a request still waiting then
    ///     fails with `.deadlineReached`. `nil` when the operation has no deadline. The two stay
    ///     apart so that the statistics' acquire timeouts count only the pool's limit: an operation
    ///     that ran out of its own time says nothing about the pool's size. Whichever comes first
    ///     ends the wait (the deadline on a tie), and one at or before `now` fails the request at once.
    ///   - now: The current time.
    ///   - preferredLoop: The caller's event loop; an idle connection on it is taken first, and a
    ///     connect started for this request is asked to open there.
    ///   - bypassingBackoff: While connects are failing, start the one retry now instead of at the
    ///     backoff's end (if none is in flight). For a circuit breaker's trial call: the breaker
    ///     already spaces those out, and a trial that times out waiting for the backoff would keep
    ///     the breaker open for another whole timeout.
    /// - Returns: a grant to this request (an idle connection was free), a failure for it, or
    ///   neither (it waits; a connect may be started). Overdue waiters are failed on the way.
    package mutating func lease(
        request: RequestID,
        timeoutAt: PoolInstant?,
        deadline: PoolInstant? = nil,
        now: PoolInstant,
        preferredLoop: Int? = nil,
        bypassingBackoff: Bool = false
    ) -> PoolActions {
        var actions = PoolActions()
        failOverdueWaiters(now: now, into: &actions)
        counters.requests += 1
        let end = WaitEnd(timeoutAt: timeoutAt, deadline: deadline)
        if lifecycle != .running {
            fail(request, reason: .shutdown, into: &actions)
        } else if let end, end.at <= now {
            fail(request, reason: end.reason, into: &actions)
        } else if waiters.isEmpty, let index = connections.bestIdle(preferring: preferredLoop, now: now) {
            connections[index].state = .leased(request: request, since: now)
            counters.granted += 1
            actions.grant = PoolGrant(request: request, connection: connections[index].id, waited: .zero)
            if let preferredLoop, connections[index].loopKey != preferredLoop {
                startLocalConnect(loopKey: preferredLoop, into: &actions)
            }
        } else {
            let enqueued = waiters.enqueue(request, end: end, now: now, loopKey: preferredLoop)
            precondition(enqueued, "request \(request) is already waiting; request ids must be unique")
            startConnects(now: now, loopKey: preferredLoop, bypassingBackoff: bypassingBackoff, into: &actions)
        }
        finishEvent(now: now, into: &actions)
        return actions
    }

    /// Opens one connection on `loopKey` in the background, when the caller got another loop's
    /// connection, there is room and connecting is healthy: the next lease from that loop is then
    /// local (its replies are read without a thread hop). It goes idle when it opens.
    private mutating func startLocalConnect(loopKey: Int, into actions: inout PoolActions) {
        let (connecting, total) = connections.connectingAndTotal()
        guard connecting == 0, backoff.failures == 0, total < configuration.maximumConnections else { return }
        let id = nextConnectionID
        nextConnectionID += 1
        connections.add(PoolConnection(id: id, loopKey: loopKey, state: .connecting, expiresAt: nil))
        counters.connectsStarted += 1
        actions.connects.append(PoolConnect(connection: id, loopKey: loopKey))
    }

    /// Opens up to `count` connections that no request asked for, within the connection limit, to
    /// go idle once connected: for a shell whose connections exist before anyone leases them (the
    /// SQLite writer, which GRDB opens at once). No request is counted, so the acquire figures stay
    /// those of real callers. Nothing is opened after ``shutdown()``, nor while connects are failing
    /// (the backoff's retry is for callers who wait).
    package mutating func prewarm(count: Int, now: PoolInstant) -> PoolActions {
        var actions = PoolActions()
        failOverdueWaiters(now: now, into: &actions)
        if lifecycle == .running && backoff.failures == 0 {
            let room = configuration.maximumConnections - connections.count
            for _ in 0..<Swift.max(0, Swift.min(count, room)) {
                let id = nextConnectionID
                nextConnectionID += 1
                connections.add(PoolConnection(id: id, loopKey: nil, state: .connecting, expiresAt: nil))
                counters.connectsStarted += 1
                actions.connects.append(PoolConnect(connection: id, loopKey: nil))
            }
        }
        finishEvent(now: now, into: &actions)
        return actions
    }

    /// The caller gives up on a waiting request (its task was cancelled).
    ///
    /// Returns a `.cancelled` failure for it if it was still waiting, and nothing otherwise: a
    /// request already granted must be released by its holder. A connect started on its behalf
    /// goes on; the connection will serve the next waiter or sit idle.
    package mutating func cancel(request: RequestID) -> PoolActions {
        var actions = PoolActions()
        if waiters.remove(request) != nil {
            fail(request, reason: .cancelled, into: &actions)
        }
        actions.wakeAt = nextWakeAt()
        return actions
    }

    /// Fails every waiter whose wait has ended at or before `now`, earliest first, each with the
    /// reason its end carries.
    mutating func failOverdueWaiters(now: PoolInstant, into actions: inout PoolActions) {
        while let waiter = waiters.popExpired(now: now) {
            fail(waiter.id, reason: waiter.end?.reason ?? .timedOut, into: &actions)
        }
    }

    /// Fails every waiter at once (fail-fast and shutdown), first served first.
    mutating func failAllWaiters(reason: PoolFailureReason, into actions: inout PoolActions) {
        guard !waiters.isEmpty else { return }
        for waiter in waiters.removeAll() {
            fail(waiter.id, reason: reason, into: &actions)
        }
    }

    /// Answers `request` with a failure and counts it once, under its reason: the one place a
    /// failure is counted, so the counts add up to the failures the shell saw.
    mutating func fail(_ request: RequestID, reason: PoolFailureReason, into actions: inout PoolActions) {
        switch reason {
        case .timedOut: counters.acquireTimeouts += 1
        case .deadlineReached: counters.deadlinesReached += 1
        case .shutdown: counters.failedByShutdown += 1
        case .connectFailed: counters.failedByConnect += 1
        case .cancelled: counters.cancelled += 1
        }
        actions.failures.append(PoolFailure(request: request, reason: reason))
    }

    /// Hands the connection at `index`, which just became free, to the longest waiter, or makes it
    /// idle. After shutdown it is closed instead, and past its lifetime it is retired unless
    /// `enforceLifetime` is false (a fresh connection serves one waiter even with a zero lifetime,
    /// so such a pool degrades to one use per connection instead of connecting in a loop).
    mutating func connectionAvailable(
        at index: Int,
        now: PoolInstant,
        idleSince: PoolInstant,
        enforceLifetime: Bool,
        into actions: inout PoolActions
    ) {
        if lifecycle != .running {
            beginClose(at: index, reason: .shutdown, into: &actions)
        } else if connections[index].beyondMaximum || enforceLifetime && connections[index].isExpired(at: now) {
            beginClose(at: index, reason: connections[index].retirement, into: &actions)
        } else if let waiter = waiters.popFirst() {
            precondition(actions.grant == nil, "an event frees at most one connection")
            connections[index].state = .leased(request: waiter.id, since: now)
            counters.granted += 1
            let waited = now.nanoseconds &- waiter.enqueuedAt.nanoseconds
            counters.acquireWaitNanoseconds &+= waited
            counters.maxAcquireWaitNanoseconds = Swift.max(counters.maxAcquireWaitNanoseconds, waited)
            actions.grant = PoolGrant(
                request: waiter.id,
                connection: connections[index].id,
                waited: .nanoseconds(waited)
            )
        } else {
            connections[index].state = .idle(since: idleSince, lastChecked: now)
        }
    }
}
