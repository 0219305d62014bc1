import Logging
import Synchronization

/// Whether the connections go through a transaction-pooling PgBouncer, which hands each
/// transaction to any of its server connections: `pgbouncer=true` says so, and without it the
/// pooler gives itself away by refusing a startup parameter (08P01 "unsupported startup
/// parameter", which only a pooler answers). Once known it stays known: the backstop moves into
/// each transaction (``ServerBackstop``) and nothing is prepared by name
/// (Sources/ReliableDB/Documentation.docc/Deadlines.md, PgBouncer).
final class PoolerDetection: Sendable {
    private let detected: Atomic<Bool>
    private let logger: Logger

    init(declared: Bool, logger: Logger) {
        detected = Atomic(declared)
        self.logger = logger
    }

    var isDetected: Bool { detected.load(ordering: .relaxed) }

    /// Records the pooler's answer; says so once, with what to set to skip the detection.
    func found(_ evidence: String) {
        guard detected.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        logger.warning(
            "\(evidence), as a transaction-pooling PgBouncer does: the statement_timeout backstop is set per transaction and nothing is prepared by name from now on; set pgbouncer=true in DATABASE_URL to start that way"
        )
    }
}
