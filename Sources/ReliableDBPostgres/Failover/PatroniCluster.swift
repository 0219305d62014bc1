import Foundation

/// What Patroni's `GET /cluster` says of the cluster at one moment: each member's role, state,
/// timeline and replication lag. Pure: parsed from the response body, matched against the URL's
/// servers by host and port (Sources/ReliableDBPostgres/Documentation.docc/Failover.md, "Patroni").
package struct PatroniCluster: Sendable, Equatable {
    package struct Member: Sendable, Equatable {
        package var name: String
        /// `leader`, `standby_leader`, `sync_standby` or `replica`.
        package var role: String
        /// `running`, `streaming`, `starting`, `stopping`, `stopped`, `crashed`, ...
        package var state: String
        package var host: String?
        package var port: Int?
        /// Absent while the member's PostgreSQL is not running as itself: Patroni drops it from
        /// the leader the moment a switchover starts stopping it.
        package var timeline: Int?
        /// Bytes behind the leader; nil for the leader and when Patroni says `unknown`.
        package var lag: Int?

        package init(
            name: String,
            role: String,
            state: String,
            host: String? = nil,
            port: Int? = nil,
            timeline: Int? = nil,
            lag: Int? = nil
        ) {
            self.name = name
            self.role = role
            self.state = state
            self.host = host
            self.port = port
            self.timeline = timeline
            self.lag = lag
        }

        /// Whether its PostgreSQL runs and serves reads.
        package var isRunning: Bool { state == "running" || state == "streaming" }
    }

    package var members: [Member]
    /// Patroni's `pause`: it changes nothing while paused (maintenance).
    package var paused: Bool

    package init(members: [Member], paused: Bool = false) {
        self.members = members
        self.paused = paused
    }

    /// The leader that takes writes now: it holds the leader key, runs, and reports its timeline
    /// (it stops reporting one when a switchover begins stopping it). Nil while the cluster is
    /// between leaders.
    package var leader: Member? {
        members.first { $0.role == "leader" && $0.isRunning && $0.timeline != nil }
    }

    /// The members that serve reads without being the leader, nearest first.
    package var replicas: [Member] {
        members.filter { $0.role != "leader" && $0.role != "standby_leader" && $0.isRunning }
            .sorted { ($0.lag ?? .max) < ($1.lag ?? .max) }
    }

    /// The index in `endpoints` of `member`'s host and port; nil when the URL does not list it.
    package static func index(
        of member: Member,
        in endpoints: [(host: String, port: Int)]
    ) -> Int? {
        guard let host = member.host else { return nil }
        let port = member.port ?? 5432
        return endpoints.firstIndex { $0.port == port && $0.host.lowercased() == host.lowercased() }
    }

    /// Parses a `GET /cluster` body. Throws ``PatroniResponseError`` naming what was wrong.
    package init(json body: [UInt8]) throws {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(body))
        } catch {
            throw PatroniResponseError(reason: "the body is not JSON")
        }
        guard let root = object as? [String: Any], let list = root["members"] as? [[String: Any]] else {
            throw PatroniResponseError(reason: "no \"members\" list")
        }
        var members: [Member] = []
        for entry in list {
            guard let name = entry["name"] as? String, let role = entry["role"] as? String else {
                throw PatroniResponseError(reason: "a member without a name or role")
            }
            members.append(
                Member(
                    name: name,
                    role: role,
                    state: entry["state"] as? String ?? "",
                    host: entry["host"] as? String,
                    port: (entry["port"] as? NSNumber)?.intValue,
                    timeline: (entry["timeline"] as? NSNumber)?.intValue,
                    lag: (entry["lag"] as? NSNumber)?.intValue
                )
            )
        }
        self.init(members: members, paused: root["pause"] as? Bool ?? false)
    }
}

/// A Patroni REST API answered with something that is not a `/cluster` document.
package struct PatroniResponseError: Error, CustomStringConvertible, Sendable {
    var reason: String
    package var description: String { "Patroni's /cluster answer is unusable: \(reason)" }
}
