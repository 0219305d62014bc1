import ReliableDBClock

/// A pooled connection as the shell holds it: an object its backend's adapter casts back to its
/// own type (`unsafeDowncast`, no check) when it leases one.
package typealias PoolConnectionObject = any AnyObject & Sendable

/// What a slot of a pool whose connections need no I/O is (``PoolSlots``): one shared object,
/// since such a pool's callers need only the slot's id.
package final class PoolSlot: Sendable {
    package static let shared = PoolSlot()
}

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
    typealias Connection = PoolConnectionObject

    /// True when opening, closing and checking a connection take no I/O. Read on every connect,
    /// close and keep-alive action, never on the lease path.
    var opensInstantly: Bool { get }

    /// The connection `id` stands for, when ``opensInstantly``.
    func instantConnection(_ id: PoolStateMachine.ConnectionID) -> Connection

    /// Starts opening connection `id`, preferably on the event loop `loopKey` names (the caller
    /// that asked for it runs there). Reports `connected` or `connectFailed`, and later `closed`
    /// once the connection's socket is gone.
    func open(_ id: PoolStateMachine.ConnectionID, loopKey: Int?, for pool: PoolShell)

    /// Closes `connection`; its `closed` report follows when the socket is gone.
    func close(_ connection: Connection)

    /// Checks that the idle `connection` still answers, then reports `keepAliveDone`.
    func keepAlive(_ connection: Connection, id: PoolStateMachine.ConnectionID, for pool: PoolShell)
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

    package func instantConnection(_ id: PoolStateMachine.ConnectionID) -> Connection { PoolSlot.shared }

    package func open(_ id: PoolStateMachine.ConnectionID, loopKey: Int?, for pool: PoolShell) {
        preconditionFailure("slots open instantly")
    }

    package func close(_ connection: Connection) {
        preconditionFailure("slots close instantly")
    }

    package func keepAlive(_ connection: Connection, id: Int, for pool: PoolShell) {
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
package struct PoolLease: Sendable {
    package let connection: PoolConnectionObject
    package let id: PoolStateMachine.ConnectionID
    /// `.zero` when an idle connection was free.
    package let waited: Duration
    package init(connection: PoolConnectionObject, id: PoolStateMachine.ConnectionID, waited: Duration) {
        self.connection = connection
        self.id = id
        self.waited = waited
    }
}
