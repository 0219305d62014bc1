/// A backend that can send reads to a standby (PostgreSQL with several servers in its URL): a
/// capability only such a backend adopts, so the core's ``DatabaseBackend`` stays free of it.
///
/// The pipeline gives reads that go to a standby a circuit breaker of their own
/// (``ReliableDatabase/standbyCircuitBreaker``), so writes failing while the primary is gone do not
/// stop the reads a standby can serve; a ``ReliableDatabase/withFallback(_:_:)`` read that the
/// primary failed is tried on the standby.
public protocol StandbyRouting: DatabaseBackend {
    /// As ``DatabaseBackend/probeServer(within:)``, on a standby that reads go to: what the prober
    /// of the standby's breaker asks while that breaker is open.
    func probeStandby(within attempt: AttemptContext) async throws

    /// Whether reads can go to a standby, and when (``StandbyReads``). Reads that do are counted
    /// by a circuit breaker of their own, so a primary's outage does not stop them.
    var standbyReads: StandbyReads { get }

    /// Whether a standby answers reads now: a connection to one is open and its last connect did
    /// not fail. Read from memory, for readiness (``ReliableDatabase/standbyServesReads``).
    var standbyAnswers: Bool { get }

    /// Whether a read would go to a standby now (``StandbyReads/always``, the standby not known
    /// down nor known too far behind), read from memory: the read is then counted by the standby's
    /// breaker, else by the primary's.
    var readsGoToStandby: Bool { get }

    /// Whether a read should try a standby now: false while the standby is known down (its last
    /// connect failed and no connection to it is open), except for one call a second, which gets
    /// to try it again (so a standby that came back is found).
    func standbyWorthTrying() -> Bool
}
