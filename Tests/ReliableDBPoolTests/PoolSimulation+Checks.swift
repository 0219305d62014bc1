import ReliableDB

@testable import ReliableDBPool

extension PoolSimulation {
    /// Updates the shell model from one event's actions, checking each action is one the machine
    /// may take at this point.
    mutating func apply(_ actions: PoolActions, for event: Event, before: [Int: PoolConnectionState], hasNow: Bool) {
        switch event {
        case .release(let connection, _):
            if case .leased? = before[connection] { holders[connection] = nil }
        case .connected(let connection), .connectFailed(let connection):
            pendingConnects.remove(connection)
        case .closed(let connection):
            pendingConnects.remove(connection)
            pendingCloses.remove(connection)
            pendingKeepAlives.remove(connection)
            holders[connection] = nil
        case .keepAliveDone(let connection, _):
            pendingKeepAlives.remove(connection)
        case .lease, .prewarm, .cancel, .tick, .serverReachable, .evictAll, .resize, .shutdown:
            break
        }
        if let grant = actions.grant { applyGrant(grant, for: event, before: before) }
        if case .prewarm(let count) = event {
            let room = machine.configuration.maximumConnections - before.count
            let failing = machine.consecutiveConnectFailures > 0
            let expected = shutdownCalled || failing ? 0 : Swift.max(0, Swift.min(count, room))
            // At least that many: the event also starts the connects waiters still need.
            expect(actions.connects.count >= expected, "prewarm \(count) started \(actions.connects.count)")
        }
        for failure in actions.failures { applyFailure(failure, for: event, before: before, hasNow: hasNow) }
        if case .lease(let request, _) = event, !answered.contains(request) {
            waiting[request] = leaseWait
        }
        for connect in actions.connects {
            expect(!shutdownCalled, "connect \(connect.connection) after shutdown")
            expect(knownConnections.insert(connect.connection).inserted, "connection id \(connect.connection) reused")
            expect(machine.state(of: connect.connection) == .connecting, "connect \(connect.connection) not connecting")
            pendingConnects.insert(connect.connection)
        }
        if !actions.connects.isEmpty {
            let total = machine.connectionStates.count
            expect(total <= machine.configuration.maximumConnections, "connects while \(total) exceed the maximum")
        }
        if !actions.connects.isEmpty && machine.consecutiveConnectFailures > 0 {
            let connecting = machine.connectionStates.values.filter { $0 == .connecting }.count
            expect(actions.connects.count == 1 && connecting == 1, "more than one connect while connects fail")
            let trial = if case .lease(_, trial: true) = event { true } else { false }
            expect(trial || machine.backoff.retryAt <= now, "connect before the backoff \(machine.backoff.retryAt)")
        }
        for close in actions.closes { applyClose(close, for: event, before: before, hasNow: hasNow) }
        let minimumIdle = machine.configuration.minimumIdle
        if minimumIdle > 0 {
            // Idling out never takes the idle connections below the minimum.
            let idleAfter = machine.statistics.idle + machine.statistics.keepAlive
            let idledOut = actions.closes.filter { $0.reason == .idle }.count
            expect(
                idledOut == 0 || idleAfter >= minimumIdle,
                "\(idledOut) idled out, \(idleAfter) left of \(minimumIdle)"
            )
        }
        for connection in actions.keepAlives {
            coverage.keepAlives += 1
            expect(hasNow, "keep-alive from an event without time")
            if case .idle? = before[connection] {
            } else {
                expect(false, "keep-alive for \(connection) that was \(String(describing: before[connection]))")
            }
            if case .keepAlive(let started, _)? = machine.state(of: connection) {
                expect(started == now, "keep-alive \(connection) started at \(started)")
            } else {
                expect(false, "keep-alive \(connection) is not in keepAlive state")
            }
            expect(pendingKeepAlives.insert(connection).inserted, "second keep-alive for \(connection)")
        }
        if actions.shutDownCompleted {
            completions += 1
            expect(shutdownCalled, "shutdown completed without shutdown")
        }
        wakeAt = actions.wakeAt
    }

    private mutating func applyGrant(_ grant: PoolGrant, for event: Event, before: [Int: PoolConnectionState]) {
        coverage.grants += 1
        grants += 1
        expect(!shutdownCalled, "grant \(grant) after shutdown")
        expect(!evicted.contains(grant.connection), "granted \(grant.connection), evicted before")
        if case .lease(grant.request, _) = event {
            expect(grant.waited == .zero, "immediate grant waited \(grant.waited)")
            expect(leaseWait.end.map { now < $0 } ?? true, "immediate grant at or after the end of its wait")
        } else if let wait = waiting[grant.request] {
            coverage.queuedGrants += 1
            expect(wait.end.map { now < $0 } ?? true, "grant to \(grant.request) at or after its end \(wait.end!)")
            expect(grant.waited == now - wait.enqueuedAt, "grant to \(grant.request) waited \(grant.waited)")
            waiting[grant.request] = nil
        } else {
            expect(false, "grant to \(grant.request), which is not waiting")
        }
        expect(answered.insert(grant.request).inserted, "request \(grant.request) answered twice")
        waitedTotal += grant.waited.nanosecondsClamped
        waitedMax = Swift.max(waitedMax, grant.waited.nanosecondsClamped)
        let prior = before[grant.connection]
        let fromIdle: Bool
        switch prior {
        case .idle?: fromIdle = true
        case .connecting?: fromIdle = event == .connected(grant.connection)
        case .leased?: fromIdle = event == .release(grant.connection, discard: false)
        case .keepAlive?: fromIdle = event == .keepAliveDone(grant.connection, alive: true)
        case .closing?, nil: fromIdle = false
        }
        expect(fromIdle, "granted \(grant.connection), which was \(String(describing: prior)), on \(event)")
        if event != .connected(grant.connection), let index = machine.connections.index(of: grant.connection) {
            let expiresAt = machine.connections[index].expiresAt
            expect(expiresAt.map { now < $0 } ?? true, "granted \(grant.connection) past its lifetime")
        }
        expect(
            machine.state(of: grant.connection) == .leased(request: grant.request, since: now),
            "granted connection \(grant.connection) is \(String(describing: machine.state(of: grant.connection)))"
        )
        expect(holders[grant.connection] == nil, "connection \(grant.connection) granted while held")
        holders[grant.connection] = grant.request
    }

    private mutating func applyFailure(
        _ failure: PoolFailure,
        for event: Event,
        before: [Int: PoolConnectionState],
        hasNow: Bool
    ) {
        let wait: Wait
        if case .lease(failure.request, _) = event {
            wait = leaseWait
        } else if let waited = waiting[failure.request] {
            wait = waited
            waiting[failure.request] = nil
        } else {
            expect(false, "failure for \(failure.request), which is not waiting")
            return
        }
        expect(answered.insert(failure.request).inserted, "request \(failure.request) answered twice")
        failuresSeen[failure.reason, default: 0] += 1
        switch failure.reason {
        case .timedOut, .deadlineReached:
            if failure.reason == .timedOut { coverage.timeouts += 1 } else { coverage.deadlines += 1 }
            expect(hasNow && wait.end.map { $0 <= now } ?? false, "\(failure) before the end of its wait")
            expect(failure.reason == wait.endReason, "\(failure), but \(wait) ends by \(wait.endReason)")
        case .shutdown:
            expect(shutdownCalled, "shutdown failure without shutdown")
        case .cancelled:
            coverage.cancels += 1
            expect(event == .cancel(failure.request), "cancelled \(failure.request) on \(event)")
        case .connectFailed:
            coverage.failFast += 1
            switch event {
            case .connectFailed: break
            case .closed(let connection):
                expect(before[connection] == .connecting, "fail-fast on a close of an open connection")
            default: expect(false, "fail-fast on \(event)")
            }
        }
    }

    private mutating func applyClose(
        _ close: PoolClose,
        for event: Event,
        before: [Int: PoolConnectionState],
        hasNow: Bool
    ) {
        coverage.closes[close.reason, default: 0] += 1
        let prior = before[close.connection]
        let allowed: Bool
        switch prior {
        case .idle?, .keepAlive?: allowed = true
        case .leased?: allowed = event == .release(close.connection, discard: close.reason == .broken)
        case .connecting?: allowed = event == .connected(close.connection)
        case .closing?, nil: allowed = false
        }
        expect(allowed, "closed \(close.connection), which was \(String(describing: prior)), on \(event)")
        expect(machine.state(of: close.connection) == .closing(close.reason), "closed connection is not closing")
        switch close.reason {
        case .shutdown: expect(shutdownCalled, "shutdown close without shutdown")
        case .broken: expect(event == .release(close.connection, discard: true), "broken close on \(event)")
        case .idle, .lifetime, .keepAliveFailed: expect(hasNow, "timer close without time")
        case .evicted:
            expect(evicted.contains(close.connection), "evicted close of \(close.connection), never evicted")
        case .resized:
            // Idle ones when the maximum is lowered; the others only as they come back.
            switch event {
            case .resize: expect(isIdle(prior), "resized \(String(describing: prior)) at once")
            case .release, .keepAliveDone, .connected: break
            default: expect(false, "resized close on \(event)")
            }
        }
        holders[close.connection] = nil
        expect(pendingCloses.insert(close.connection).inserted, "closed \(close.connection) twice")
    }

    private func isIdle(_ state: PoolConnectionState?) -> Bool {
        if case .idle? = state { true } else { false }
    }

    /// Checks the machine against the model and against its own promises.
    mutating func checkInvariants(after event: Event, hasNow: Bool) {
        let states = machine.connectionStates
        let statistics = machine.statistics
        var recount = PoolCounters()
        for (id, state) in states {
            switch state {
            case .connecting:
                recount.connecting += 1
                expect(pendingConnects.contains(id), "\(id) connecting without a pending connect")
            case .idle:
                recount.idle += 1
                expect(holders[id] == nil && !pendingCloses.contains(id), "\(id) idle but held or closing")
            case .leased(let request, _):
                recount.active += 1
                expect(
                    holders[id] == request,
                    "\(id) leased to \(request), shell thinks \(String(describing: holders[id]))"
                )
            case .keepAlive:
                recount.keepAlive += 1
                expect(pendingKeepAlives.contains(id), "\(id) probing without a pending keep-alive")
            case .closing:
                recount.closing += 1
                expect(pendingCloses.contains(id), "\(id) closing without a pending close")
            }
        }
        recount.waiting = waiting.count
        expect(
            [statistics.connecting, statistics.idle, statistics.active, statistics.keepAlive, statistics.closing]
                == [recount.connecting, recount.idle, recount.active, recount.keepAlive, recount.closing],
            "statistics \(statistics) differ from a recount \(recount)"
        )
        expect(statistics.total == states.count, "total \(statistics.total) != \(states.count)")
        // Beyond the maximum only right after it was lowered, and never growing until it is met.
        let maximum = machine.configuration.maximumConnections
        if case .resize = event {
            allowedTotal = Swift.max(maximum, statistics.total)
            if statistics.total > maximum { coverage.shrinks += 1 }
        }
        let allowed = Swift.max(maximum, Swift.min(allowedTotal ?? maximum, statistics.total))
        expect(statistics.total <= (allowedTotal ?? maximum), "\(statistics.total) connections, \(maximum) allowed")
        allowedTotal = allowed
        if statistics.total == machine.configuration.maximumConnections { coverage.fullPool += 1 }
        expect(pendingConnects.allSatisfy { states[$0] == .connecting }, "a pending connect is not connecting")
        expect(
            pendingCloses.allSatisfy { if case .closing? = states[$0] { true } else { false } },
            "pending close lost"
        )
        for (connection, request) in holders {
            guard case .leased(request, _)? = states[connection] else {
                expect(false, "held connection \(connection) is \(String(describing: states[connection]))")
                continue
            }
        }

        let machineWaiting = machine.waitingRequests
        expect(Set(machineWaiting) == Set(waiting.keys), "waiting \(machineWaiting) vs model \(waiting.keys.sorted())")
        expect(machineWaiting == machineWaiting.sorted(), "waiters out of FIFO order: \(machineWaiting)")
        expect(statistics.waiting == waiting.count, "waiting gauge \(statistics.waiting) != \(waiting.count)")
        expect(statistics.idle == 0 || statistics.waiting == 0, "idle connection while requests wait")
        coverage.maxWaiting = Swift.max(coverage.maxWaiting, waiting.count)

        if hasNow { checkTimers(statistics) }
        checkCounters(statistics, states: states)
        if hasNow { checkWarmUp(statistics) }
    }

    /// With a minimum idle, while connects succeed and nobody waits: the missing idle connections
    /// are being opened, as many at once as the warm-up allows and the limit leaves room for.
    private mutating func checkWarmUp(_ statistics: PoolCounters) {
        let configuration = machine.configuration
        guard configuration.minimumIdle > 0, !shutdownCalled, machine.consecutiveConnectFailures == 0 else { return }
        guard statistics.waiting == 0 else { return }
        let missing = configuration.minimumIdle - statistics.idle - statistics.keepAlive
        let room = configuration.maximumConnections - statistics.total + statistics.connecting
        let expected = Swift.max(0, Swift.min(missing, PoolConfiguration.warmUpConcurrency, room))
        if missing > 0 && statistics.connecting > 0 { coverage.warmUps += 1 }
        expect(
            statistics.connecting >= expected,
            "\(missing) idle missing, \(statistics.connecting) connecting (expected \(expected)): \(statistics)"
        )
    }

    private mutating func checkTimers(_ statistics: PoolCounters) {
        var due: PoolInstant?
        for (request, wait) in waiting {
            if let end = wait.end {
                expect(end > now, "request \(request) still waiting past the end of its wait \(end)")
                due = earliest(due, end)
            }
        }
        let idleOut = machine.idleTimeoutApplies
        for connection in machine.connections.all {
            let timer = connection.dueTimer(at: now, machine.timing, idleOut: idleOut)
            expect(timer == nil, "connection \(connection.id) has an overdue timer \(String(describing: timer))")
            due = earliest(due, connection.nextDue(machine.timing, idleOut: idleOut))
        }
        if let wakeAt { expect(wakeAt > now, "wakeAt \(wakeAt) is not after now") }
        // Liveness: waiters with room for a connection and none coming must have a retry scheduled.
        let room = statistics.total < machine.configuration.maximumConnections
        if !shutdownCalled && !waiting.isEmpty && room && statistics.connecting == 0 {
            let retryAt = machine.backoff.retryAt
            expect(wakeAt.map { $0 <= retryAt } ?? false, "waiters stranded: no connect, no retry at \(retryAt)")
        }
        if let due {
            expect(wakeAt.map { $0 <= due } ?? false, "wakeAt \(String(describing: wakeAt)) misses \(due)")
        }
    }

    private mutating func checkCounters(_ statistics: PoolCounters, states: [Int: PoolConnectionState]) {
        let answeredOrWaiting = statistics.granted + statistics.failed + statistics.waiting
        expect(statistics.requests == answeredOrWaiting, "requests \(statistics.requests) != \(answeredOrWaiting)")
        // Every failed request is counted exactly once, under the reason it was answered with.
        let counted: [PoolFailureReason: Int] = [
            .timedOut: statistics.acquireTimeouts, .deadlineReached: statistics.deadlinesReached,
            .cancelled: statistics.cancelled, .connectFailed: statistics.failedByConnect,
            .shutdown: statistics.failedByShutdown,
        ]
        for reason in PoolFailureReason.allCases {
            let seen = failuresSeen[reason, default: 0]
            expect(counted[reason] == seen, "\(reason): counted \(String(describing: counted[reason])), seen \(seen)")
        }
        expect(
            statistics.acquireWaitNanoseconds == waitedTotal,
            "acquire wait total \(statistics.acquireWaitNanoseconds)"
        )
        expect(
            statistics.maxAcquireWaitNanoseconds == waitedMax,
            "acquire wait max \(statistics.maxAcquireWaitNanoseconds)"
        )
        expect(statistics.requests == requestsMade, "requests \(statistics.requests), made \(requestsMade)")
        expect(statistics.granted == grants, "granted \(statistics.granted), seen \(grants)")
        expect(answered.count + waiting.count == requestsMade, "a request is neither answered nor waiting")
        expect(
            statistics.connectsStarted == statistics.connecting + statistics.connectFailures + statistics.opened,
            "connects started \(statistics.connectsStarted) do not add up"
        )
        expect(statistics.connectsStarted == knownConnections.count, "connects started != connect actions")
        expect(statistics.opened == statistics.open + statistics.closing + statistics.closed, "opened does not add up")
        expect(statistics.closes.total == statistics.closing + statistics.closed, "closes by reason do not add up")
        expect(machine.isShuttingDown == shutdownCalled, "shutting down \(machine.isShuttingDown)")
        if shutdownCalled && states.isEmpty {
            expect(machine.isShutDownComplete && completions == 1, "empty after shutdown but not complete")
        } else {
            expect(!machine.isShutDownComplete, "complete with \(states.count) connections")
        }
    }
}
