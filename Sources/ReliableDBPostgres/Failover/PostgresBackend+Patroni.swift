import Foundation
import ReliableDB

/// Following Patroni: what the backend does with each `/cluster` answer, and how a lease waits for
/// a leader (Sources/ReliableDBPostgres/Documentation.docc/Failover.md, "Patroni").
extension PostgresBackend {
    /// A Patroni configuration this URL can use: at least one API, each an http(s) URL with a host.
    static func validate(_ patroni: PatroniConfiguration, for url: PostgresURL) throws {
        guard !patroni.urls.isEmpty else {
            throw PatroniConfigurationError(reason: "no Patroni REST API URL was given")
        }
        for api in patroni.urls where !["http", "https"].contains(api.scheme?.lowercased() ?? "") || api.host == nil {
            throw PatroniConfigurationError(
                reason: "\(PatroniTopology.describe(api)) is not an http(s) URL with a host (expected http://host:8008)"
            )
        }
        guard patroni.interval > .zero else {
            throw PatroniConfigurationError(reason: "the interval must be above zero, not \(patroni.interval)")
        }
    }

    /// A new `/cluster` answer: connections go to the leader it names, and those to a leader it
    /// no longer names are retired.
    func follow(_ cluster: PatroniCluster, after previous: PatroniCluster?) {
        let endpoints = url.endpoints.map { (host: $0.host, port: $0.port) }
        let unlisted = cluster.members.filter { PatroniCluster.index(of: $0, in: endpoints) == nil }.map(\.name)
        let newlyUnlisted = unlistedMembers.withLock { seen in
            defer { seen.formUnion(unlisted) }
            return unlisted.filter { !seen.contains($0) }
        }
        for name in newlyUnlisted {
            logger.warning("Patroni member \(name) is not among the URL's servers: it gets no connection")
        }
        guard let leader = cluster.leader else {
            if previous?.leader != nil {
                logger.warning("Patroni names no leader: writes wait for one, reads go to a replica")
            }
            return
        }
        guard let index = PatroniCluster.index(of: leader, in: endpoints) else { return }
        let endpoint = url.endpoints[index]
        if let before = hostWalk.follow(index, outcome: "is the leader (Patroni)") {
            pool.retireOpenConnections()
            logger.warning(
                "Patroni names \(leader.name) (\(endpoint)) the leader: connections to \(url.endpoints[before]) are retired"
            )
        }
        if previous?.leader != leader {
            // Callers held back by the pool's connect backoff get a connect to it now.
            pool.serverReachable()
        }
    }

    /// A connection of the primary pool that follows Patroni: while Patroni names no leader, or
    /// when no server took the connection, the lease waits for an answer naming one, then tries
    /// again, until the attempt's deadline or the pool timeout, whichever comes first.
    func leaseFollowingPatroni(
        _ patroni: PatroniTopology,
        within attempt: AttemptContext
    ) async throws -> PooledPostgresConnection {
        let start = clock.now
        let waitEnds = start + poolTimeout
        let limit = attempt.deadline.map { min($0, waitEnds) } ?? waitEnds
        while true {
            if let seen = patroni.snapshot, seen.cluster.leader == nil {
                try await awaitLeader(patroni, after: seen.generation, until: limit, attempt: attempt, or: nil)
            }
            let remaining = limit - clock.now
            do {
                return try await lease(from: pool, within: attempt, wait: max(remaining, .zero))
            } catch let error as PostgresUnavailableError {
                try await awaitLeader(
                    patroni,
                    after: patroni.snapshot?.generation ?? 0,
                    until: limit,
                    attempt: attempt,
                    or: error
                )
            }
        }
    }

    /// Waits for an answer newer than `generation` that names a leader. At the attempt's deadline
    /// the attempt ends as any attempt does at it; at the pool timeout, with `error` (or as a pool
    /// timeout when there was none).
    private func awaitLeader(
        _ patroni: PatroniTopology,
        after generation: UInt64,
        until limit: MonotonicTime,
        attempt: AttemptContext,
        or error: PostgresUnavailableError?
    ) async throws {
        if try await patroni.leaderAnswer(after: generation, until: limit) != nil { return }
        if let deadline = attempt.deadline, deadline <= limit { throw AttemptDeadlineExceeded() }
        throw error
            ?? PostgresUnavailableError(
                target: url.description,
                cause: "Patroni named no leader within the pool timeout (\(poolTimeout))"
            )
    }

    /// Whether Patroni is read and names no leader now: reads go to a replica.
    var patroniBetweenLeaders: Bool {
        guard let snapshot = patroni?.snapshot else { return false }
        return snapshot.cluster.leader == nil
    }
}

/// A ``PatroniConfiguration`` that cannot be used, with what was expected.
public struct PatroniConfigurationError: Error, CustomStringConvertible, Sendable {
    public var reason: String
    public var description: String { "Invalid Patroni configuration (DB_PATRONI_URLS): \(reason)" }
}
