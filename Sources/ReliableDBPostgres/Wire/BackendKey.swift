import NIOCore

/// The cancel key of one server session, as the server (or the pooler in front of it) sent it in
/// its BackendKeyData ('K') message at startup.
///
/// A protocol CancelRequest naming this key is the only cancel a transaction-mode pooler such as
/// PgBouncer routes to the statement *this* client is running: `pg_cancel_backend(pid)` names a
/// server process, which behind a pooler serves whichever client it was lent to at that moment.
/// Behind PgBouncer, `pid` and `secret` are PgBouncer's own per-client values, not a real
/// backend's. The secret lets anyone who knows it cancel our statements, so `description`,
/// `debugDescription` and `dump` never show it.
struct BackendKey: Sendable, Hashable {
    /// The server process id (behind a pooler: the pooler's id for this client).
    let pid: Int32
    /// The cancel secret. Never log it.
    let secret: Int32
    /// The address the connection was actually made to. A CancelRequest must reach the same
    /// server or pooler, and a host name may resolve elsewhere the next time (DNS round robin over
    /// several PgBouncers), so the cancel goes here rather than to the name. Nil when unknown.
    let serverAddress: SocketAddress?

    init(pid: Int32, secret: Int32, serverAddress: SocketAddress? = nil) {
        self.pid = pid
        self.secret = secret
        self.serverAddress = serverAddress
    }
}

extension BackendKey: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    var description: String {
        "BackendKey(pid: \(pid), secret: <redacted>, server: \(serverAddress.map { "\($0)" } ?? "unknown"))"
    }

    var debugDescription: String { description }

    /// Keeps `dump` and the debugger's summaries from printing the secret.
    var customMirror: Mirror {
        Mirror(self, children: ["pid": pid, "secret": "<redacted>", "serverAddress": serverAddress as Any])
    }
}
