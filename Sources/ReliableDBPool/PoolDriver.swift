import ReliableDBClock

/// What differs between the pools a ``PoolShell`` runs: how a connection is opened, closed and
/// checked. Everything else (who waits, until when, the alarm, the figures) is the shell's.
///
/// The shell calls these outside its lock, and the driver reports each outcome back through the
/// shell (``PoolShell/connected(_:id:loopKey:)``, ``PoolShell/connectFailed(id:error:)``,
/// ``PoolShell/closed(id:)``, ``PoolShell/keepAliveDone(id:alive:)``), from any thread.
///
/// A driver whose connections need no I/O (``opensInstantly``: SQLite's admission slots, where
/// GRDB owns the real connections) is never asked to open, close or check anything: the shell
/// answers those actions to the machine itself, under the same lock, so that a caller who finds
/// no open slot is still admitted without waiting for a second event.
package protocol PoolDriver: Sendable {
    associatedtype Connection: Sendable

    /// True when opening, closing and checking a connection take no I/O. Read on every connect,
    /// close and keep-alive action, never on the lease path.
    var opensInstantly: Bool { get }

    /// The connection `id` stands for, when ``opensInstantly``.
    func instantConnection(_ id: PoolStateMachine.ConnectionID) -> Connection

    /// Starts opening connection `id`, preferably on the event loop `loopKey` names (the caller
    /// that asked for it runs there). Reports `connected` or `connectFailed`, and later `closed`
    /// once the connection's socket is gone.
    func open(_ id: PoolStateMachine.ConnectionID, loopKey: Int?, for pool: PoolShell<Self>)

    /// Closes `connection`; its `closed` report follows when the socket is gone.
    func close(_ connection: Connection)

    /// Checks that the idle `connection` still answers, then reports `keepAliveDone`.
    func keepAlive(_ connection: Connection, id: PoolStateMachine.ConnectionID, for pool: PoolShell<Self>)
}

extension PoolDriver {
    package var opensInstantly: Bool { false }

    package func instantConnection(_ id: PoolStateMachine.ConnectionID) -> Connection {
        preconditionFailure("only a driver that opens instantly makes connections without I/O")
    }
}

/// A driver whose connections need no I/O and are just their ids: admission slots.
package struct PoolSlots: PoolDriver {
    package init() {}

    package var opensInstantly: Bool { true }

    package func instantConnection(_ id: PoolStateMachine.ConnectionID) -> PoolStateMachine.ConnectionID { id }

    package func open(_ id: PoolStateMachine.ConnectionID, loopKey: Int?, for pool: PoolShell<Self>) {
        preconditionFailure("slots open instantly")
    }

    package func close(_ connection: PoolStateMachine.ConnectionID) {
        preconditionFailure("slots close instantly")
    }

    package func keepAlive(_ connection: PoolStateMachine.ConnectionID, id: Int, for pool: PoolShell<Self>) {
        preconditionFailure("slots need no keep-alive")
    }
}

/// Why a lease was not granted.
package enum PoolLeaseFailure: Error {
    /// The pool's own wait limit passed first: an acquire timeout.
    case timedOut
    /// The operation's deadline passed first.
    case deadlineReached
    /// The caller's task was cancelled.
    case cancelled
    case shutDown
    /// No connection is open and the last attempt to open one failed with this error.
    case connectFailed(any Error)
}

/// A connection granted to one caller, and how long the caller queued for it.
package struct PoolLease<Connection: Sendable>: Sendable {
    package let connection: Connection
    package let id: PoolStateMachine.ConnectionID
    /// `.zero` when an idle connection was free.
    package let waited: Duration

    @inlinable
    package init(connection: Connection, id: PoolStateMachine.ConnectionID, waited: Duration) {
        self.connection = connection
        self.id = id
        self.waited = waited
    }
}
