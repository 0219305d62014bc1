/// What the reliability pipeline needs from a database driver.
///
/// The core knows no driver: a backend module (SQLite, PostgreSQL) implements this protocol and
/// adds typed `query`/`transaction` entry points on ``ReliableDatabase`` that feed its own
/// connection type to the caller's closure.
public protocol DatabaseBackend: ErrorClassifier {
    /// A short name for logs and JSON: `sqlite`, `postgresql`.
    var backendName: String { get }

    /// Exact pool numbers, read without touching the database.
    func poolStatistics() -> PoolStatistics

    /// Runs the cheapest possible round trip (`SELECT 1`) and reports what it learned, stopping at
    /// the attempt's deadline. Throws the real cause when the database cannot be reached.
    func probe(within attempt: AttemptContext) async throws -> ProbeResult

    /// One round trip on a connection opened for it (not a pooled one), stopping at the attempt's
    /// deadline: what the circuit breaker's prober asks while the breaker is open, since only a
    /// fresh connection tells whether the server accepts work again. Throws when it does not.
    func probeServer(within attempt: AttemptContext) async throws

    /// Whether a failed ``probeServer(within:)`` found no server of the needed role but one
    /// answering in another (a standby not promoted yet): the breaker's prober then looks again
    /// every 200 ms, so writes go on as soon as the promotion is done.
    func awaitsPromotion(_ probeError: any Error) -> Bool

    /// The server (`host:port`) new connections go to now, read from memory; nil when unknown or
    /// meaningless (an embedded database). The primary's breaker judges this server.
    var currentServer: String? { get }

    /// Closes every connection. Operations after this fail.
    func shutdown() async throws

    /// Hands the backend the instruments to record pool metrics (acquire time) into.
    func attach(_ instruments: ReliabilityInstruments)

    /// Sets the most connections without a restart (live `DB_CONNECTION_LIMIT`): a lower maximum
    /// closes idle connections first and never interrupts a lease. Returns false when the backend
    /// cannot (then the value takes effect at the next start); by default it cannot.
    func resizePool(maximumConnections: Int) -> Bool

    /// The error in plain words that name its real cause, for logs, alerts and `/api/health`
    /// (a driver's own description may hide it). Never contains a secret.
    func describe(_ error: any Error) -> String

    /// Who this backend talks to, for trace spans.
    var spanTarget: DatabaseSpanTarget { get }

    /// The server's status code for `error` (PostgreSQL's SQLSTATE), for trace spans.
    func statusCode(of error: any Error) -> String?

    /// With several servers (a multi-host URL): what each is known to be, in the configured order.
    /// Empty for a backend that talks to one server.
    func servers() -> [ServerHealth]
}

extension DatabaseBackend {
    public func attach(_ instruments: ReliabilityInstruments) {}

    public func resizePool(maximumConnections: Int) -> Bool { false }

    public func probeServer(within attempt: AttemptContext) async throws {
        _ = try await probe(within: attempt)
    }

    public var currentServer: String? { nil }

    public func awaitsPromotion(_ probeError: any Error) -> Bool { false }

    public func describe(_ error: any Error) -> String { plainDescription(of: error) }

    public var spanTarget: DatabaseSpanTarget { DatabaseSpanTarget(system: backendName) }

    public func statusCode(of error: any Error) -> String? { nil }

    public func servers() -> [ServerHealth] { [] }
}

/// One server of a multi-host configuration, as `/api/health` lists it.
public struct ServerHealth: Sendable, Equatable, Codable {
    /// `host:port`, as configured (a bounded label: the configuration lists them).
    public var host: String
    /// `primary`, `standby`, `read-only primary`; nil until a connection reached it.
    public var role: String?
    /// `current` (where new connections go), `available`, or `ejected` (failing: tried after the others for now).
    public var state: String
    /// What the last connection attempt found, in words.
    public var lastOutcome: String?

    public init(host: String, role: String?, state: String, lastOutcome: String?) {
        self.host = host
        self.role = role
        self.state = state
        self.lastOutcome = lastOutcome
    }
}

/// What one successful probe learned about the server.
public struct ProbeResult: Sendable, Equatable {
    public var serverVersion: String
    public var roundTrip: Duration
    /// The server's connection slots, for a backend whose server has a limit all its clients
    /// share (PostgreSQL's `max_connections`); nil otherwise.
    public var serverConnections: ServerConnections?

    public init(serverVersion: String, roundTrip: Duration, serverConnections: ServerConnections? = nil) {
        self.serverVersion = serverVersion
        self.roundTrip = roundTrip
        self.serverConnections = serverConnections
    }
}

/// The server's connection slots as a probe saw them. Every instance of a service (and every
/// other client) draws on the same server limit, so one instance's probe tells how close the
/// whole fleet is to it, which no instance's own pool shows.
public struct ServerConnections: Sendable, Equatable, Codable {
    /// Client connections open on the server, from every instance and application.
    public var inUse: Int
    /// The server's limit (`max_connections`).
    public var max: Int
    /// Slots only superusers may take (`superuser_reserved_connections`).
    public var reserved: Int

    public init(inUse: Int, max: Int, reserved: Int = 0) {
        self.inUse = inUse
        self.max = max
        self.reserved = reserved
    }

    /// In use as a percentage of the slots ordinary clients get (`max - reserved`); 100 or more
    /// means a new connection of an ordinary user is refused (53300).
    public var utilization: Double {
        let available = Swift.max(1, max - reserved)
        return Double(inUse) * 100 / Double(available)
    }
}
