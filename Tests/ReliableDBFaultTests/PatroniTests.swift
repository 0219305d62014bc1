import Foundation
import PostgresNIO
import ReliableDB
import ReliableDBPostgres
import ReliableDBTestSupport
import Testing

/// A real Patroni cluster (two PostgreSQL nodes over one etcd member, ttl 10 s, loop_wait 2 s,
/// started by scripts/test) reached through a multi-host URL with `target_session_attrs=read-write`,
/// alone or following Patroni's REST API, under concurrent reads and writes with the settings users
/// get (breaker, retries, timeouts, pool timeout).
@Suite("A Patroni cluster", .serialized)
struct PatroniTests {
    /// How the client learns the topology.
    enum Source: String, CaseIterable, CustomTestStringConvertible {
        /// The multi-host URL alone: the leader is found when connections break.
        case url
        /// The URL's servers, with the leader and replicas read from Patroni's `/cluster`.
        case patroni

        var testDescription: String { rawValue }
    }
    static var directory: String { get throws { try FaultServers.environment("RELIABLEDB_TEST_PATRONI_DIR") } }

    /// Runs the cluster's control script to completion with `posix_spawn` and `waitpid` on a
    /// thread of its own: Foundation's `Process` did not notice a `ctl start` exit (it stayed a
    /// zombie), which hung the test.
    @discardableResult
    static func ctl(_ arguments: String...) async throws -> String {
        let path = try FaultServers.environment("RELIABLEDB_TEST_PATRONI_CTL")
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("patroni-ctl-\(UUID().uuidString)")
            .path
        defer { try? FileManager.default.removeItem(atPath: output) }
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                var actions: posix_spawn_file_actions_t = posix_spawn_file_actions_t()
                posix_spawn_file_actions_init(&actions)
                defer { posix_spawn_file_actions_destroy(&actions) }
                posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
                posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
                posix_spawn_file_actions_adddup2(&actions, 1, 2)
                let argv = ([path] + arguments).map { strdup($0) } + [nil]
                defer { for pointer in argv { free(pointer) } }
                var pid: pid_t = 0
                let spawned = posix_spawn(&pid, path, &actions, nil, argv, environ)
                guard spawned == 0 else {
                    continuation.resume(
                        throwing: ControlFailed(arguments: arguments, output: "posix_spawn: \(spawned)")
                    )
                    return
                }
                var status: Int32 = 0
                while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
                continuation.resume(returning: status)
            }
        }
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        guard status == 0 else { throw ControlFailed(arguments: arguments, output: text) }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    struct ControlFailed: Error, CustomStringConvertible {
        var arguments: [String]
        var output: String
        var description: String { "patroni ctl \(arguments.joined(separator: " ")) failed: \(output)" }
    }

    /// The cluster's URL, with a unique `application_name`.
    static func url() throws -> PostgresURL {
        var url = try FaultServers.url("RELIABLEDB_TEST_PATRONI_URL")
        url.targetSessionAttributes = .readWrite
        return url
    }

    /// The leader and the other node, once the cluster has both.
    static func roles() async throws -> (leader: String, replica: String) {
        try await ctl("wait-healthy")
        let leader = try await ctl("leader")
        return (leader, leader == "node1" ? "node2" : "node1")
    }

    static func port(_ node: String) throws -> Int {
        let text = try String(contentsOfFile: "\(try directory)/\(node)/port", encoding: .utf8)
        return Int(text.trimmingCharacters(in: .whitespacesAndNewlines))!
    }

    static func observer(_ node: String) async throws -> Observer {
        try await Observer.connect(try FaultServers.url("RELIABLEDB_TEST_PATRONI_URL", port: try port(node)))
    }

    /// Polls `condition` every 20 ms for up to `limit`; the instant it first held.
    static func when(
        within limit: Duration = .seconds(60),
        _ condition: () async -> Bool
    ) async throws -> ContinuousClock.Instant {
        let start = ContinuousClock.now
        while ContinuousClock.now - start < limit {
            if await condition() { return ContinuousClock.now }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw ControlFailed(arguments: ["wait"], output: "the condition did not hold within \(limit)")
    }

    /// Whether `node` accepts a connection and answers as a primary.
    static func isPrimary(_ node: String) async -> Bool {
        guard let observer = try? await observer(node) else { return false }
        defer { Task { try? await observer.close() } }
        return (try? await observer.int("SELECT CASE WHEN pg_is_in_recovery() THEN 0 ELSE 1 END")) == 1
    }

    static func finish(_ workload: FaultWorkload, on node: String, scenario: String) async throws -> FaultReport {
        let observer = try await observer(node)
        let report = try await workload.finish(observer, applicationName: workload.db.raw.url.applicationName)
        try await observer.execute("DROP TABLE IF EXISTS \(workload.table)")
        try await observer.close()
        try await workload.db.shutdown()
        print("fault report: patroni \(scenario): \(report)")
        return report
    }

    /// A workload with the timeouts and pool timeout users get, following Patroni or not.
    static func workload(_ fault: String, source: Source, leader: String) async throws -> FaultWorkload {
        let defaults = TimeoutConfiguration()
        var settings = FaultWorkload.Settings(breaker: .defaults)
        settings.queryTimeout = defaults.query
        settings.transactionTimeout = defaults.transaction
        settings.poolTimeout = ReliableDBConfiguration().poolTimeout
        if source == .patroni {
            let apis = try FaultServers.environment("RELIABLEDB_TEST_PATRONI_API").split(separator: ",")
            settings.patroni = PatroniConfiguration(urls: apis.map { URL(string: String($0))! })
        }
        let workload = try FaultWorkload(fault: "patroni \(fault) via \(source)", url: try url(), settings: settings)
        let setup = try await observer(leader)
        try await workload.setUp(setup)
        try await setup.close()
        return workload
    }

    /// `patronictl switchover`: the leader hands over to the replica. No acknowledged write is
    /// lost. Following Patroni, no read fails (they go to the replica while there is no leader)
    /// and a write fails only when its outcome is unknown (a COMMIT cut off in flight).
    @Test(.serialized, .timeLimit(.minutes(3)), arguments: Source.allCases)
    func aPlannedSwitchoverLosesNothing(source: Source) async throws {
        let (leader, replica) = try await Self.roles()
        let workload = try await Self.workload("switchover", source: source, leader: leader)
        try await workload.run {
            try await Task.sleep(for: .milliseconds(800))
            try await Self.ctl("switchover", replica)
            _ = try await Self.when { await Self.isPrimary(replica) }
        }
        let report = try await Self.finish(workload, on: replica, scenario: "switchover via \(source)")
        #expect(report.lostWrites.isEmpty && report.duplicatedWrites.isEmpty, "\(report)")
        #expect(report.committedAfterTimeout.isEmpty, "\(report)")
        if source == .patroni {
            #expect(report.readFailures == 0, "\(report)")
            #expect(report.otherFailures + report.timedOut == report.commitOutcomeUnknown, "\(report)")
        }
        _ = try await Self.roles()
    }

    /// `kill -9` of the leader's postmaster: Patroni restarts it in place (no failover). Calls
    /// succeed again within 1 s of it accepting connections; no acknowledged write is lost.
    @Test(.serialized, .timeLimit(.minutes(3)), arguments: Source.allCases)
    func aKilledPostmasterIsBackWithinASecondOfAcceptingConnections(source: Source) async throws {
        let (leader, _) = try await Self.roles()
        let workload = try await Self.workload("postmaster killed", source: source, leader: leader)
        try await workload.run {
            try await Task.sleep(for: .milliseconds(800))
            try await Self.ctl("kill-postmaster", leader)
            try await Task.sleep(for: .milliseconds(200))
            // The fault ends when the restarted server accepts connections as a primary again.
            _ = try await Self.when { await Self.isPrimary(leader) }
        }
        let report = try await Self.finish(workload, on: leader, scenario: "postmaster killed via \(source)")
        #expect(report.lostWrites.isEmpty && report.duplicatedWrites.isEmpty, "\(report)")
        #expect(report.committedAfterTimeout.isEmpty, "\(report)")
        #expect((report.steadyRecovery ?? .seconds(99)) <= .seconds(1), "\(report)")
        #expect((report.writeRecovery ?? .seconds(99)) <= .seconds(1), "\(report)")
    }

    /// The leader's node lost (its agent and postmaster killed): the replica is promoted when the
    /// leader key expires. Writes are back within 1 s of the promotion, and none is lost, also
    /// after the old leader rejoins as a replica (pg_rewind would drop writes made on it).
    /// Following Patroni, reads go on at the replica meanwhile, also when the promotion takes
    /// longer than the pool timeout (CI once saw 10.7 s: the writes waiting for it failed and
    /// opened the primary's breaker, which then refused the reads).
    @Test(.serialized, .timeLimit(.minutes(3)), arguments: Source.allCases)
    func aLostLeaderNodeFailsOverAndLosesNothing(source: Source) async throws {
        let (leader, replica) = try await Self.roles()
        let workload = try await Self.workload("leader node lost", source: source, leader: leader)
        let killed = Locked<ContinuousClock.Instant?>(nil)
        try await workload.run(settle: .seconds(8)) {
            try await Task.sleep(for: .milliseconds(800))
            try await Self.ctl("kill-node", leader)
            killed.withLock { $0 = ContinuousClock.now }
            // The fault ends at the promotion.
            _ = try await Self.when { await Self.isPrimary(replica) }
        }
        let promotedAfter = killed.withLock { $0 }.map { ContinuousClock.now - $0 }
        try await Self.ctl("start", leader)
        try await Self.ctl("wait-healthy")
        let report = try await Self.finish(
            workload,
            on: replica,
            scenario: "leader node lost via \(source) (promoted within \(promotedAfter.map { "\($0)" } ?? "?"))"
        )
        #expect(report.lostWrites.isEmpty && report.duplicatedWrites.isEmpty, "\(report)")
        #expect(report.committedAfterTimeout.isEmpty, "\(report)")
        #expect((report.writeRecovery ?? .seconds(99)) <= .seconds(1), "\(report)")
        if source == .patroni {
            #expect(report.readFailures == 0, "\(report)")
            // The killed leader stays named until its key expires (ttl 10 s): reads must not wait
            // for the promotion, they go to the replica once the leader is known down.
            #expect(report.longestRead < .seconds(3), "\(report)")
        }
    }
}
