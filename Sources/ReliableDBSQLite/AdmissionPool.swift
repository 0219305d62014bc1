import ReliableDB
import ReliableDBPool

/// Why a caller was not admitted.
enum AdmissionFailure: Error {
    /// The pool timeout passed first.
    case poolTimeout
    /// The attempt's own deadline passed first.
    case deadline
    /// The caller's task was cancelled.
    case cancelled
    case shutDown
}

/// One admission: the slot to give back, and how long the caller queued for it.
struct Admission: Sendable {
    let slot: PoolStateMachine.ConnectionID
    let waited: Duration
}

/// Admission in front of GRDB's pool: SQLite's slots in a ``PoolShell``, the shell the PostgreSQL
/// pool runs on.
///
/// GRDB waits for a free reader by blocking a dispatch queue, which neither task cancellation nor
/// a deadline can interrupt. Admitting callers here first, with the same capacity as GRDB's pool,
/// means GRDB never has to wait: waiting happens here, where it ends at the pool timeout, the
/// attempt's deadline or the caller's cancellation, and where it is counted.
///
/// GRDB owns the real SQLite connections, so a slot needs no I/O (``PoolSlots``): the shell
/// answers its connects and closes under the same lock. The alarm is disarmed while no one waits,
/// since slots have no idle timers. An admission with a free slot costs one lock and no suspension.
final class AdmissionPool: Sendable {
    private let shell: PoolShell
    let poolTimeout: Duration

    var limit: Int { shell.limit }

    /// - Parameters:
    ///   - limit: the most callers admitted at once.
    ///   - openSlots: slots opened (and left idle) at once, to mirror connections GRDB opens
    ///     eagerly (its writer).
    init(limit: Int, poolTimeout: Duration, clock: any ReliabilityClock, openSlots: Int = 0) {
        shell = PoolShell(
            configuration: PoolConfiguration(maximumConnections: limit),
            driver: PoolSlots(),
            clock: clock,
            prewarm: openSlots,
            disarmsWhenIdle: true
        )
        self.poolTimeout = poolTimeout
    }

    /// The shell's alarm holds the shell; nothing else ends that cycle.
    deinit {
        shell.detachAlarm()
    }

    // MARK: Admission

    /// A slot, waiting at most the pool timeout or until the attempt's deadline, whichever ends
    /// first. Throws ``AdmissionFailure``.
    func admit(within attempt: AttemptContext) async throws -> Admission {
        do {
            // At least a nanosecond, so that a zero pool timeout still takes a free slot.
            let lease = try await shell.lease(timeout: max(poolTimeout, .nanoseconds(1)), deadline: attempt.deadline)
            return Admission(slot: lease.id, waited: lease.waited)
        } catch let failure as PoolLeaseFailure {
            switch failure {
            case .timedOut: throw AdmissionFailure.poolTimeout
            case .deadlineReached: throw AdmissionFailure.deadline
            case .cancelled: throw AdmissionFailure.cancelled
            case .shutDown, .connectFailed: throw AdmissionFailure.shutDown
            }
        }
    }

    /// Gives a slot back; the longest waiter gets it.
    func release(_ admission: Admission) {
        shell.release(admission.slot)
    }

    /// Fails the waiters and admits no one any more. Slots in use close when released.
    func shutdown() {
        shell.beginShutdown()
    }

    /// Waits, after ``shutdown()``, until every slot in use has been released: then no one uses
    /// GRDB's connections any more. Suspends rather than blocks, unlike GRDB's own close.
    func waitUntilShutDown() async {
        await shell.waitUntilShutDown()
    }

    // MARK: Statistics

    /// The machine's figures, read under one lock so they agree with each other.
    func statistics() -> PoolCounters {
        shell.statistics
    }
}
