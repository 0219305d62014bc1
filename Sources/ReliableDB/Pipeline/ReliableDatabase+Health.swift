/// What the pipeline tells about itself and its database: metrics, probes, readiness on a
/// standby, and its end.
extension ReliableDatabase {
    /// Whether reads are served by a standby now, whatever the primary does: the standby answers
    /// and its breaker lets reads through. Readiness stays up on it while the primary is gone
    /// (Sources/ReliableDBPostgres/Documentation.docc/Failover.md): every replica of a service shares the primary, so taking them all out of
    /// the load balancer would stop the reads a standby can serve, with the writes.
    public var standbyServesReads: Bool {
        guard let standbyCircuitBreaker, !standbyCircuitBreaker.isRejectingCalls else { return false }
        return standbyRouting?.standbyAnswers ?? false
    }

    /// The combined snapshot: pipeline counters, pool statistics and breaker state.
    public func metrics() -> MetricsSnapshot {
        var breaker = circuitBreaker.metrics
        // Until it judged a server, the breaker is about the one connections go to.
        if breaker.server == nil { breaker.server = raw.currentServer }
        return MetricsSnapshot(
            queries: operationMetrics.snapshot(),
            pool: raw.poolStatistics(),
            circuitBreaker: breaker,
            standbyCircuitBreaker: standbyCircuitBreaker?.metrics,
            loadShedding: loadShedder?.snapshot,
            servers: raw.servers()
        )
    }

    /// Probes the database through the pipeline with the health-check timeout, outside the breaker.
    /// Returns what the probe learned, or the error that explains why the database is unreachable.
    public func probe() async -> Result<ProbeResult, any Error> {
        do {
            let backend = raw
            return .success(try await execute(.healthCheck) { try await backend.probe(within: $0) })
        } catch {
            return .failure(error)
        }
    }

    /// Whether the database answers a probe within the health-check timeout.
    public func healthCheck() async -> Bool {
        if case .success = await probe() { return true }
        return false
    }

    /// Probes the breaker's prober sent while the breaker was open, for tests.
    package var breakerProbes: Int { prober.probes }

    /// A probe outside the breaker completed a round trip (the health monitor's): an open primary
    /// breaker turns HALF_OPEN at once (``CircuitBreaker/serverAnswered(by:)``).
    package func serverAnswered() {
        circuitBreaker.serverAnswered()
    }

    /// Closes the backend's connections.
    public func shutdown() async throws {
        prober.stop()
        standbyProber?.stop()
        deadlines.stop()
        try await raw.shutdown()
    }
}
