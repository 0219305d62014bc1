import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import ReliableDB
import Synchronization

/// Where to read a Patroni cluster's topology: its members' REST APIs (`DB_PATRONI_URLS`).
///
/// With it, a ``PostgresBackend`` learns the leader and the replicas from Patroni's `GET /cluster`
/// rather than only when connections break: new connections go to the leader Patroni names,
/// connections to a demoted leader are retired, writes that find no leader wait for Patroni to
/// name one (up to their deadline and the pool timeout), and reads go to a running replica while
/// there is none (Sources/ReliableDBPostgres/Documentation.docc/Failover.md, "Patroni").
public struct PatroniConfiguration: Sendable, Equatable {
    /// The members' REST APIs (`http://host:8008`); any one that answers is enough.
    public var urls: [URL]
    /// How often `/cluster` is read. A read costs one small HTTP request to one member.
    public var interval: Duration
    /// The longest one read of `/cluster` may take before the next member's API is tried.
    public var requestTimeout: Duration

    public init(urls: [URL], interval: Duration = .milliseconds(250), requestTimeout: Duration = .seconds(1)) {
        self.urls = urls
        self.interval = interval
        self.requestTimeout = requestTimeout
    }
}

/// Reads Patroni's `/cluster` every ``PatroniConfiguration/interval`` and tells the backend what
/// changed. Lives as long as its backend; ``stop()`` ends it.
final class PatroniTopology: Sendable {
    struct Snapshot: Sendable {
        var cluster: PatroniCluster
        /// Counts the answers read, so a waiter can ask for one newer than what it saw.
        var generation: UInt64
    }

    private struct State {
        var snapshot: Snapshot?
        var generation: UInt64 = 0
        /// The API that answered last, tried first by the next read.
        var preferred = 0
        /// Why the last read failed; nil after an answer.
        var lastError: String?
        var task: Task<Void, Never>?
    }

    let configuration: PatroniConfiguration
    private let httpClient: HTTPClient
    private let clock: any ReliabilityClock
    private let logger: Logger
    private let state = Mutex(State())

    init(
        configuration: PatroniConfiguration,
        httpClient: HTTPClient = .shared,
        clock: any ReliabilityClock,
        logger: Logger
    ) {
        self.configuration = configuration
        self.httpClient = httpClient
        self.clock = clock
        self.logger = logger
    }

    /// The last answer; nil before the first.
    var snapshot: Snapshot? { state.withLock { $0.snapshot } }

    /// Why the last read of `/cluster` failed, in words; nil when it answered.
    var lastError: String? { state.withLock { $0.lastError } }

    /// Starts reading; `changed` gets every answer that differs from the one before (and the first).
    func start(_ changed: @escaping @Sendable (_ previous: PatroniCluster?, _ current: PatroniCluster) -> Void) {
        let task = Task { [self] in
            var previous: PatroniCluster?
            while !Task.isCancelled {
                if let cluster = await read(), cluster != previous {
                    changed(previous, cluster)
                    previous = cluster
                }
                try? await clock.sleep(for: configuration.interval)
            }
        }
        state.withLock { $0.task = task }
    }

    func stop() {
        state.withLock { $0.task }?.cancel()
    }

    /// Reads `/cluster` from the API that answered last, then the others in turn.
    private func read() async -> PatroniCluster? {
        let urls = configuration.urls
        let first = state.withLock { $0.preferred }
        var failures: [String] = []
        for offset in urls.indices {
            let index = (first + offset) % urls.count
            do {
                let cluster = try await read(urls[index])
                record(cluster, from: index)
                return cluster
            } catch {
                failures.append("\(Self.describe(urls[index])): \(error)")
            }
        }
        let reason = failures.joined(separator: "; ")
        let previous = state.withLock { state in
            defer { state.lastError = reason }
            return state.lastError
        }
        if previous == nil { logger.warning("Patroni's /cluster could not be read: \(reason)") }
        return nil
    }

    /// Keeps an answer of API `index` as the newest.
    func record(_ cluster: PatroniCluster, from index: Int = 0) {
        state.withLock { state in
            state.generation += 1
            state.snapshot = Snapshot(cluster: cluster, generation: state.generation)
            state.preferred = index
            state.lastError = nil
        }
    }

    private func read(_ url: URL) async throws -> PatroniCluster {
        let request = HTTPClientRequest(url: url.appendingPathComponent("cluster").absoluteString)
        let response = try await httpClient.execute(request, timeout: TimeAmount(configuration.requestTimeout))
        guard response.status == .ok else { throw PatroniResponseError(reason: "HTTP \(response.status.code)") }
        let body = try await response.body.collect(upTo: 1 << 20)
        return try PatroniCluster(json: Array(body.readableBytesView))
    }

    /// Waits for an answer newer than `generation` that names a leader, until `limit`; that
    /// answer, or nil at `limit`.
    func leaderAnswer(after generation: UInt64, until limit: MonotonicTime) async throws -> Snapshot? {
        while true {
            if let snapshot = snapshot, snapshot.generation > generation, snapshot.cluster.leader != nil {
                return snapshot
            }
            let now = clock.now
            guard now < limit else { return nil }
            try await clock.sleep(until: min(limit, now + .milliseconds(20)))
        }
    }

    /// An API URL as logs and errors show it: scheme, host and port, never credentials.
    static func describe(_ url: URL) -> String {
        guard let host = url.host else { return "a Patroni API" }
        return "\(url.scheme ?? "http")://\(host)\(url.port.map { ":\($0)" } ?? "")"
    }
}
