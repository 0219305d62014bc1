import Synchronization

/// A position in a PostgreSQL cluster's write-ahead log, with the history it belongs to: the
/// cluster (`pg_control_system().system_identifier`) and the timeline, which a promotion changes.
/// Positions of different histories are not compared (Sources/ReliableDB/Documentation.docc/ReadYourWrites.md).
public struct WALPosition: Sendable, Hashable, CustomStringConvertible {
    /// The cluster's system identifier, as PostgreSQL prints it.
    public var systemIdentifier: String
    public var timeline: Int
    /// The LSN as a number (`0/3000148` is `0x3000148`).
    public var lsn: UInt64

    public init(systemIdentifier: String, timeline: Int, lsn: UInt64) {
        self.systemIdentifier = systemIdentifier
        self.timeline = timeline
        self.lsn = lsn
    }

    /// Parses PostgreSQL's `pg_lsn` text, `X/Y` in hexadecimal.
    public static func lsn(parsing text: some StringProtocol) -> UInt64? {
        let parts = text.split(separator: "/")
        guard parts.count == 2, parts.allSatisfy({ (1...8).contains($0.count) }),
            let high = UInt64(parts[0], radix: 16), let low = UInt64(parts[1], radix: 16)
        else { return nil }
        return high << 32 | low
    }

    /// The LSN as PostgreSQL prints it.
    public var lsnText: String {
        String(lsn >> 32, radix: 16, uppercase: true) + "/" + String(lsn & 0xFFFF_FFFF, radix: 16, uppercase: true)
    }

    /// Whether `self` is at or past `other` in the same history.
    public func covers(_ other: WALPosition) -> Bool {
        systemIdentifier == other.systemIdentifier && timeline == other.timeline && lsn >= other.lsn
    }

    public var description: String { "\(lsnText) (timeline \(timeline))" }

    // MARK: The token

    /// The token's version: a reader refuses (and ignores) a version it does not know.
    static let tokenVersion = "rdb1"

    /// The position as a token a client can carry (a cookie, a header): `rdb1.SYSID.TIMELINE.LSN`.
    /// It is not signed, and needs not be: it only decides where its holder's own reads go. A
    /// forged one can make them wait (at most ``ConsistencySession/maxWait``) or go to the primary,
    /// or read older data than they wrote themselves; it reaches nobody else's session.
    public var token: String {
        "\(Self.tokenVersion).\(systemIdentifier).\(timeline).\(lsnText)"
    }

    /// Parses a token ``token`` made; nil for anything else (a token is never an error: without
    /// it, reads are as they are without a session).
    public init?(token: some StringProtocol) {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == Self.tokenVersion,
            !parts[1].isEmpty, parts[1].count <= 20, parts[1].allSatisfy(\.isNumber),
            let timeline = Int(parts[2]), timeline > 0,
            let lsn = Self.lsn(parsing: parts[3])
        else { return nil }
        self.init(systemIdentifier: String(parts[1]), timeline: timeline, lsn: lsn)
    }
}

/// A read-your-writes session: the newest write position its holder has seen. Within
/// ``ReliableDatabase/withConsistency(token:maxWait:_:)`` every write on a primary advances it, and a read
/// goes to a standby only once that standby has replayed it (Sources/ReliableDB/Documentation.docc/ReadYourWrites.md).
///
/// The position travels between instances of a service as ``token`` (a cookie or a header), so
/// no shared store is needed.
public final class ConsistencySession: Sendable {
    private let state: Mutex<WALPosition?>
    private let unknown = Atomic<Bool>(false)
    /// How long a read waits for a standby to replay the session's position before it goes to the
    /// primary.
    public let maxWait: Duration

    /// The default wait: one network round trip of replay lag on a healthy standby is well below
    /// it, and a read never pays more than this for the standby.
    public static let defaultMaxWait = Duration.milliseconds(500)

    /// A session starting at `token`'s position; an absent, malformed or unknown-version token
    /// starts an empty one.
    public init(token: String?, maxWait: Duration = ConsistencySession.defaultMaxWait) {
        state = Mutex(token.flatMap { WALPosition(token: $0) })
        self.maxWait = maxWait
    }

    /// The newest position the session has seen; nil before its first write (and without a token).
    public var position: WALPosition? { state.withLock { $0 } }

    /// The token for the newest position, to hand back to the client; nil when there is none.
    public var token: String? { position?.token }

    /// A write committed at `position`: the session moves to it unless it already is further on
    /// the same history. Another history (a failover happened) replaces it.
    package func advance(to position: WALPosition) {
        state.withLock { current in
            if let current, position.systemIdentifier == current.systemIdentifier,
                position.timeline == current.timeline, position.lsn <= current.lsn
            {
                return
            }
            current = position
        }
    }

    /// A write committed whose position could not be learnt: the session's reads go to the
    /// primary from now on.
    package func positionUnknown() {
        unknown.store(true, ordering: .releasing)
    }

    /// Whether a write's position was lost, so only the primary is sure to have it.
    package var readsNeedPrimary: Bool { unknown.load(ordering: .acquiring) }

    /// The header that carries the token between a client and the service: for API clients, which
    /// send it back with their next request (the Vapor and Hummingbird middleware read and write it).
    public static let headerName = "X-ReliableDB-Consistency"
    /// The cookie that carries the token for browsers, which send it back unasked.
    public static let cookieName = "reliabledb-consistency"
    /// The cookie's lifetime: a token older than any replay lag worth waiting for routes nothing,
    /// as every standby has replayed it.
    public static let cookieMaxAge = Duration.seconds(300)

    /// The token a request carries: its header, else its cookie.
    package static func token(header: String?, cookie: String?) -> String? {
        header.flatMap { $0.isEmpty ? nil : $0 } ?? cookie
    }

    /// The session of the running task, set by ``ReliableDatabase/withConsistency(token:maxWait:_:)``.
    @TaskLocal public static var current: ConsistencySession?
}

/// Where one traced read of a session went, for its span: set by the backend, read when the span
/// ends.
package final class ConsistencyRouteNote: Sendable {
    private let route = Mutex<String?>(nil)

    package init() {}

    /// `standby`, `primary` or `other_history` (as `db_consistency_reads_total`'s `route`).
    package func note(_ route: String) { self.route.withLock { $0 = route } }
    package var noted: String? { route.withLock { $0 } }

    @TaskLocal package static var current: ConsistencyRouteNote?
}

extension ReliableDatabase {
    /// Runs `body` in a read-your-writes session starting at `token` (from the client; nil for
    /// none) and returns its result with the token to hand back: the newest position, which is
    /// `token`'s own when `body` wrote nothing (nil when `token` was not a valid one).
    public func withConsistency<T: Sendable>(
        token: String?,
        maxWait: Duration = ConsistencySession.defaultMaxWait,
        _ body: () async throws -> T
    ) async rethrows -> (value: T, token: String?) {
        let session = ConsistencySession(token: token, maxWait: maxWait)
        let value = try await ConsistencySession.$current.withValue(session) { try await body() }
        return (value, session.token)
    }
}
