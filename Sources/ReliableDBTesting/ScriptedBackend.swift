import ReliableDB
import Synchronization

/// An error whose class the test chooses, so tests can drive every branch of the pipeline.
public struct ClassifiedError: Error, Equatable, Sendable {
    public var errorClass: ErrorClass
    public var mayHaveReachedServer: Bool
    /// The error ended one established connection (``ErrorClassification/connectionScoped``).
    public var connectionScoped: Bool

    public init(errorClass: ErrorClass, mayHaveReachedServer: Bool = false, connectionScoped: Bool = false) {
        self.errorClass = errorClass
        self.mayHaveReachedServer = mayHaveReachedServer
        self.connectionScoped = connectionScoped
    }
}

/// A backend with no database behind it, for testing code that uses ReliableDB (alerting,
/// dashboards, retry policies) without a server: the test sets whether probes succeed and which
/// pool numbers are reported, and its operations return or throw what the test scripts
/// (``ClassifiedError`` picks the class the pipeline sees).
public final class ScriptedBackend: DatabaseBackend, StandbyRouting {
    private struct State {
        var reachable = true
        var pool: PoolStatistics
        var probes = 0
        var servers: [ServerHealth] = []
        var standbyReads = StandbyReads.unavailable
        var standbyAnswers = false
        var shutdowns = 0
        var probeTime: (clock: any ReliabilityClock, duration: Duration)?
        var serverConnections: ServerConnections?
        var currentServer: String?
    }

    private let state: Mutex<State>
    /// What a successful probe reports as the server version.
    public let serverVersion: String

    public init(pool: PoolStatistics = PoolStatistics(max: 1), serverVersion: String = "scripted 1.0") {
        state = Mutex(State(pool: pool))
        self.serverVersion = serverVersion
    }

    public var backendName: String { "test" }

    /// Whether probes succeed; an unreachable backend's probe throws a connection-class error.
    public var reachable: Bool {
        get { state.withLock { $0.reachable } }
        set { state.withLock { $0.reachable = newValue } }
    }

    /// The pool numbers reported.
    public var pool: PoolStatistics {
        get { state.withLock { $0.pool } }
        set { state.withLock { $0.pool = newValue } }
    }

    /// What ``servers()`` reports, as a multi-host backend would.
    public var serverList: [ServerHealth] {
        get { state.withLock { $0.servers } }
        set { state.withLock { $0.servers = newValue } }
    }

    public func servers() -> [ServerHealth] { serverList }

    /// Where new connections go (`host:port`), as a multi-host backend says after a failover.
    public var currentServer: String? {
        get { state.withLock { $0.currentServer } }
        set { state.withLock { $0.currentServer = newValue } }
    }

    /// Whether a standby answers reads, as a multi-host backend with an open standby connection says.
    public var standbyAnswers: Bool {
        get { state.withLock { $0.standbyAnswers } }
        set { state.withLock { $0.standbyAnswers = newValue } }
    }

    /// Whether the pipeline gives reads a standby breaker, as a multi-host backend would.
    public var standbyReads: StandbyReads {
        get { state.withLock { $0.standbyReads } }
        set { state.withLock { $0.standbyReads = newValue } }
    }

    /// Reads go to the scripted standby only with ``StandbyReads/always``.
    public var readsGoToStandby: Bool { standbyReads == .always }

    /// The scripted standby is always worth a try when there is one.
    public func standbyWorthTrying() -> Bool { standbyReads != .unavailable }

    /// The standby answers as the scripted server does.
    public func probeStandby(within attempt: AttemptContext) async throws {
        try await probeServer(within: attempt)
    }

    /// The server's connection slots a successful probe reports.
    public var serverConnections: ServerConnections? {
        get { state.withLock { $0.serverConnections } }
        set { state.withLock { $0.serverConnections = newValue } }
    }

    /// Probes run so far.
    public var probes: Int { state.withLock { $0.probes } }

    /// Times ``shutdown()`` ran.
    public var shutdowns: Int { state.withLock { $0.shutdowns } }

    /// Makes every probe take `duration` on `clock` (a ``ManualClock`` holds it until advanced).
    public func holdProbes(on clock: any ReliabilityClock, for duration: Duration) {
        state.withLock { $0.probeTime = (clock, duration) }
    }

    public func classify(_ error: any Error) -> ErrorClassification {
        if let error = error as? ClassifiedError {
            return ErrorClassification(
                error.errorClass,
                mayHaveReachedServer: error.mayHaveReachedServer,
                discardConnection: error.connectionScoped,
                connectionScoped: error.connectionScoped
            )
        }
        return ErrorClassification(.caller)
    }

    public func poolStatistics() -> PoolStatistics { pool }

    public func probe(within attempt: AttemptContext) async throws -> ProbeResult {
        let (reachable, hold, connections) = state.withLock { state in
            state.probes += 1
            return (state.reachable, state.probeTime, state.serverConnections)
        }
        if let hold { try await hold.clock.sleep(for: hold.duration) }
        guard reachable else { throw ClassifiedError(errorClass: .connection) }
        return ProbeResult(serverVersion: serverVersion, roundTrip: .milliseconds(1), serverConnections: connections)
    }

    public func shutdown() async throws {
        state.withLock { $0.shutdowns += 1 }
    }
}
