import Synchronization

/// Whether a backend can send reads to a server other than the one writes go to (a standby of a
/// multi-host URL), and when it does (Sources/ReliableDBPostgres/Documentation.docc/Failover.md).
public enum StandbyReads: Sendable, Equatable {
    /// One server: every operation goes to it.
    case unavailable
    /// Reads go where writes go; a ``ReliableDatabase/withFallback(_:_:)`` read that fails there
    /// is tried once more on a standby.
    case onFallback
    /// Reads go to a standby (`standby_reads=true`), and to the primary when none qualifies.
    case always
}

/// What one ``ReliableDatabase/withFallback(_:_:)`` read asks of the backend, and what the backend
/// did: a task-local, so that it reaches the backend through any read the caller wrote.
package final class ReadScope: Sendable {
    /// Where the scope's reads (operations marked `readOnly`) go.
    package enum Route: Sendable {
        /// Where the backend sends reads (a standby with `standby_reads=true`, else the primary).
        case usual
        /// A second try after the primary failed the read: a standby and nowhere else.
        case standby
        /// A second try after a standby failed the read: the primary.
        case primary
    }

    package let route: Route
    private let served = Mutex<ServedByStandby?>(nil)

    package struct ServedByStandby: Sendable, Equatable {
        /// `host:port` of the standby.
        package var server: String
        /// Its replay lag when last measured; nil when unknown.
        package var lag: Duration?
        /// Whether the primary could be reached when the read ran.
        package var primaryReachable: Bool

        package init(server: String, lag: Duration?, primaryReachable: Bool) {
            self.server = server
            self.lag = lag
            self.primaryReachable = primaryReachable
        }
    }

    @TaskLocal package static var current: ReadScope?

    package init(route: Route) {
        self.route = route
    }

    /// Called by the backend when a read of this scope ran on a standby.
    package func servedByStandby(_ answer: ServedByStandby) {
        served.withLock { $0 = answer }
    }

    /// The standby that answered the scope's last read that went to one.
    package var standby: ServedByStandby? { served.withLock { $0 } }
}
