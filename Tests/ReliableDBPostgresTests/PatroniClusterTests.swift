import Foundation
import Logging
import ReliableDB
import ReliableDBTesting
import Testing

@testable import ReliableDBPostgres

/// Patroni's `GET /cluster` answers, as Patroni 3.0.2 gave them on this machine during a
/// switchover (scripts/test's cluster), and what the backend takes from each.
@Suite("Patroni's /cluster")
struct PatroniClusterTests {
    static func cluster(_ json: String) throws -> PatroniCluster {
        try PatroniCluster(json: Array(json.utf8))
    }

    static let steady = """
        {"members": [{"name": "node1", "role": "leader", "state": "running", "api_url": "http://127.0.0.1:57173/patroni", \
        "host": "127.0.0.1", "port": 58157, "timeline": 1}, {"name": "node2", "role": "sync_standby", "state": "running", \
        "api_url": "http://127.0.0.1:44971/patroni", "host": "127.0.0.1", "port": 58557, "timeline": 1, "lag": 0}]}
        """
    /// 0.8 s into `patronictl switchover`: the leader is stopping and no longer reports a timeline.
    static let leaderStopping = """
        {"members": [{"name": "node1", "role": "leader", "state": "running", "host": "127.0.0.1", "port": 58157}, \
        {"name": "node2", "role": "replica", "state": "running", "host": "127.0.0.1", "port": 58557, "timeline": 1, "lag": 0}]}
        """
    /// The leader key released, no new leader yet.
    static let betweenLeaders = """
        {"members": [{"name": "node1", "role": "replica", "state": "stopping", "host": "127.0.0.1", "port": 58157, \
        "lag": "unknown"}, {"name": "node2", "role": "replica", "state": "running", "host": "127.0.0.1", "port": 58557, \
        "timeline": 1, "lag": 0}]}
        """
    static let newLeader = """
        {"members": [{"name": "node1", "role": "replica", "state": "stopped", "host": "127.0.0.1", "port": 58157, \
        "lag": "unknown"}, {"name": "node2", "role": "leader", "state": "running", "host": "127.0.0.1", "port": 58557, \
        "timeline": 2}], "pause": true}
        """

    let endpoints = [(host: "127.0.0.1", port: 58157), (host: "127.0.0.1", port: 58557)]

    @Test func aSwitchoverIsSeenAsTheLeaderStoppingThenNoLeaderThenTheNewOne() throws {
        let steady = try Self.cluster(Self.steady)
        #expect(steady.leader?.name == "node1")
        #expect(steady.replicas.map(\.name) == ["node2"])
        #expect(steady.members[1].lag == 0 && steady.members[0].lag == nil)
        #expect(try Self.cluster(Self.leaderStopping).leader == nil, "a leader without a timeline is stopping")
        let between = try Self.cluster(Self.betweenLeaders)
        #expect(between.leader == nil)
        #expect(between.replicas.map(\.name) == ["node2"], "a stopping member serves nothing")
        #expect(between.members[0].lag == nil, "\"unknown\" lag")
        let new = try Self.cluster(Self.newLeader)
        #expect(new.leader?.name == "node2" && new.leader?.timeline == 2)
        #expect(new.paused)
        #expect(new.leader.flatMap { PatroniCluster.index(of: $0, in: endpoints) } == 1)
    }

    @Test func membersAreMatchedToTheURLsServersByHostAndPort() {
        let member = PatroniCluster.Member(
            name: "a",
            role: "leader",
            state: "running",
            host: "DB-1.internal",
            timeline: 1
        )
        #expect(
            PatroniCluster.index(of: member, in: [(host: "db-1.internal", port: 5432)]) == 0,
            "port 5432 by default"
        )
        #expect(PatroniCluster.index(of: member, in: [(host: "db-1.internal", port: 5433)]) == nil)
        var hostless = member
        hostless.host = nil
        #expect(PatroniCluster.index(of: hostless, in: [(host: "db-1.internal", port: 5432)]) == nil)
    }

    @Test(arguments: ["", "not json", "[]", #"{"members": 3}"#, #"{"members": [{"role": "leader"}]}"#])
    func anUnusableAnswerIsAnErrorThatSaysWhy(body: String) {
        #expect(throws: PatroniResponseError.self) { try Self.cluster(body) }
    }

    @Test func aConfigurationWithoutAnAPIOrWithABadOneIsRefusedAtConstruction() throws {
        let url = try PostgresURL.parse("postgres://app@127.0.0.1:1,127.0.0.1:2/db?target_session_attrs=read-write")
            .get()
        for patroni in [
            PatroniConfiguration(urls: []),
            PatroniConfiguration(urls: [URL(string: "file:///tmp/patroni")!]),
            PatroniConfiguration(urls: [URL(string: "http://127.0.0.1:8008")!], interval: .zero),
        ] {
            #expect(throws: PatroniConfigurationError.self) { try PostgresBackend(url: url, patroni: patroni) }
        }
    }

    /// A lease that finds no leader waits for an answer newer than the one it saw that names one,
    /// and gives up at its limit: on the manual clock.
    @Test func aWaitForALeaderEndsAtTheFirstNewerAnswerNamingOneOrAtItsLimit() async throws {
        let clock = ManualClock()
        let topology = PatroniTopology(
            configuration: PatroniConfiguration(urls: [URL(string: "http://127.0.0.1:1")!]),
            clock: clock,
            logger: Logger(label: "test.patroni")
        )
        topology.record(try Self.cluster(Self.betweenLeaders))
        let seen = try #require(topology.snapshot?.generation)
        let limit = clock.now + .seconds(10)
        let waiter = Task { try await topology.leaderAnswer(after: seen, until: limit) }
        #expect(await clock.waitForSleepers())
        // An answer that still names no leader does not end the wait.
        topology.record(try Self.cluster(Self.leaderStopping))
        clock.advance(by: .milliseconds(20))
        #expect(await clock.waitForSleepers())
        topology.record(try Self.cluster(Self.newLeader))
        clock.advance(by: .milliseconds(20))
        let answer = try await waiter.value
        #expect(answer?.cluster.leader?.name == "node2")
        #expect(answer.map { $0.generation > seen } == true)

        // No answer naming a leader: nil at the limit, not before.
        topology.record(try Self.cluster(Self.betweenLeaders))
        let again = try #require(topology.snapshot?.generation)
        let shortLimit = clock.now + .milliseconds(100)
        let giving = Task { try await topology.leaderAnswer(after: again, until: shortLimit) }
        for _ in 0..<4 {
            #expect(await clock.waitForSleepers())
            clock.advance(by: .milliseconds(20))
        }
        #expect(await clock.waitForSleepers(), "still waiting at 80 ms")
        clock.advance(by: .milliseconds(20))
        #expect(try await giving.value == nil)
    }
}
