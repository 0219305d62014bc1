import Foundation
import Logging
import PostgresNIO
import ReliableDB
import ReliableDBPostgres
import ReliableDBTestSupport
import Synchronization
import Testing

/// Failover to a promoted standby under concurrent reads and writes, on the primary and streaming
/// standby scripts/test starts. It promotes the standby, so it runs last among the tests that use
/// that pair (the fault suite runs after the rest).
@Suite("Failover to a promoted standby", .serialized)
struct FailoverTests {
    static func control(_ server: String, _ arguments: String...) async throws {
        try await FaultServer.control(script: "RELIABLEDB_TEST_HA_\(server)_CTL", arguments)
    }

    /// A primary demoted without losing its connections (made read-only, as a switchover does
    /// before it hands the role over): writes refused with 25006 are retried on another
    /// connection, whose walk skips the demoted server and finds the other writable one.
    @Test(.timeLimit(.minutes(2)))
    func writesLeaveADemotedPrimaryWithoutARestart() async throws {
        let (demotedURL, otherURL) = (
            try FaultServers.url("RELIABLEDB_TEST_HA_PRIMARY_URL"),
            try FaultServers.url("RELIABLEDB_TEST_FAULT_POSTGRES_URL")
        )
        let url = Self.readWrite(demotedURL, otherURL)
        let workload = try FaultWorkload(fault: "primary demoted to read-only", url: url)
        let demoted = try await Observer.connect(demotedURL)
        let other = try await Observer.connect(otherURL)
        try await workload.setUp(demoted)
        try await workload.setUp(other)
        do {
            try await workload.run {
                try await Task.sleep(for: .milliseconds(800))
                try await demoted.execute("ALTER SYSTEM SET default_transaction_read_only = on")
                try await demoted.execute("SELECT pg_reload_conf()")
                try await Task.sleep(for: .seconds(2))
            }
        } catch {
            try? await demoted.execute("ALTER SYSTEM RESET default_transaction_read_only")
            try? await demoted.execute("SELECT pg_reload_conf()")
            throw error
        }
        try await demoted.execute("ALTER SYSTEM RESET default_transaction_read_only")
        try await demoted.execute("SELECT pg_reload_conf()")
        let evicted = workload.db.metrics().pool.closesByReason["evicted"] ?? 0
        let onDemoted = try await demoted.ledgerCounts(workload.table)
        try await demoted.execute("DROP TABLE IF EXISTS \(workload.table)")
        try await demoted.close()
        // The ledger is split across the two servers: what is not on the other one must be on the demoted one.
        let report = try await workload.finish(other, applicationName: url.applicationName)
        try await other.close()
        let lost = report.lostWrites.filter { onDemoted[$0] == nil }
        let onBoth = report.lostWrites.isEmpty ? [] : onDemoted.keys.filter { !report.lostWrites.contains($0) }
        print(
            "fault report: demotion: \(onDemoted.count) writes on the primary before it turned read-only,"
                + " \(report.acknowledgedWrites - report.lostWrites.count) on the other server after; lost \(lost.count);"
                + " connections retired with the demoted server: \(evicted)"
        )
        #expect(lost.isEmpty, "acknowledged writes on neither server: \(lost)")
        #expect(onDemoted.values.allSatisfy { $0 == 1 } && report.duplicatedWrites.isEmpty)
        #expect(onBoth.isEmpty || onBoth.allSatisfy { onDemoted[$0] != nil })
        #expect(report.acknowledgedWrites - report.lostWrites.count > 0, "writes resumed on the other server")
        #expect(report.recovery != nil, "writes succeeded after the demotion: \(report)")
        #expect(report.worstOverrun <= .milliseconds(100), "\(report)")
    }

    /// A demoted server's idle connections are retired with the first write it refuses, so that
    /// write is the only one that needs a retry (without it, each idle connection would be
    /// refused once more before the pool let it go).
    @Test(.timeLimit(.minutes(1)))
    func aDemotedServersOtherConnectionsAreRetiredWithTheFirstRefusedWrite() async throws {
        let (demotedURL, otherURL) = (
            try FaultServers.url("RELIABLEDB_TEST_HA_PRIMARY_URL"),
            try FaultServers.url("RELIABLEDB_TEST_FAULT_POSTGRES_URL")
        )
        let url = Self.readWrite(demotedURL, otherURL)
        let table = "demoted_\(UInt32.random(in: 0...UInt32.max))"
        let demoted = try await Observer.connect(demotedURL)
        let other = try await Observer.connect(otherURL)
        for server in [demoted, other] { try await server.execute("CREATE TABLE \(table) (id int)") }
        let db = try ReliableDatabase(
            backend: try PostgresBackend(url: url, connectionLimit: 4, poolTimeout: .seconds(2)),
            configuration: .init(retry: .init(attempts: 3, initialDelay: .milliseconds(10)))
        )
        var failedWrites = 0
        func write(_ id: Int) async throws {
            try await db.query(.init("demoted-write", idempotent: true)) { connection in
                _ = try await connection.query(
                    "INSERT INTO \(unescaped: table) (id) VALUES (\(id))",
                    logger: Self.logger
                )
                .collect()
            }
        }
        do {
            // Four connections open and idle on the server about to be demoted.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        try await db.query(.read("warm-up")) { connection in
                            _ = try await connection.query("SELECT pg_sleep(0.1)", logger: Self.logger).collect()
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(db.metrics().pool.idle == 4)
            try await demoted.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            try await demoted.execute("SELECT pg_reload_conf()")
            try await Task.sleep(for: .milliseconds(200))
            for id in 0..<10 {
                do { try await write(id) } catch { failedWrites += 1 }
            }
        } catch {
            try? await demoted.execute("ALTER SYSTEM RESET default_transaction_read_only")
            try? await demoted.execute("SELECT pg_reload_conf()")
            try? await db.shutdown()
            for server in [demoted, other] { try? await server.close() }
            throw error
        }
        try await demoted.execute("ALTER SYSTEM RESET default_transaction_read_only")
        try await demoted.execute("SELECT pg_reload_conf()")
        let metrics = db.metrics()
        try await db.shutdown()
        let onOther = try await other.int("SELECT count(*)::int FROM \(table)")
        for server in [demoted, other] {
            try await server.execute("DROP TABLE \(table)")
            try await server.close()
        }
        print(
            "fault report: demotion with idle connections: \(metrics.retries) retried writes,"
                + " \(metrics.pool.closesByReason["evicted"] ?? 0) connections retired,"
                + " \(onOther) of 10 writes on the other server"
        )
        #expect(onOther == 10 && failedWrites == 0)
        #expect(metrics.retries == 1, "only the first write met the demoted server")
        #expect(metrics.pool.closesByReason["evicted"] == 3)
    }

    /// Reads on the standby (`standby_reads=true`) under load; the standby is stopped: reads move
    /// to the primary within their deadline, and writes never notice.
    @Test(.timeLimit(.minutes(2)))
    func readsMoveToThePrimaryWhenTheStandbyStops() async throws {
        let (primaryURL, standbyURL) = (
            try FaultServers.url("RELIABLEDB_TEST_HA_PRIMARY_URL"),
            try FaultServers.url("RELIABLEDB_TEST_HA_STANDBY_URL")
        )
        var url = Self.readWrite(primaryURL, standbyURL)
        url.standbyReads = true
        let workload = try FaultWorkload(fault: "standby stopped under read load", url: url)
        let observer = try await Observer.connect(primaryURL)
        try await workload.setUp(observer)
        try await Self.waitForReplication(of: workload.table, to: standbyURL)
        let stoppedAt = Locked<ContinuousClock.Instant?>(nil)
        do {
            try await workload.run {
                try await Task.sleep(for: .milliseconds(800))
                try await Self.control("STANDBY", "stop", "fast")
                stoppedAt.withLock { $0 = ContinuousClock.now }
                try await Task.sleep(for: .seconds(2))
            }
        } catch {
            try? await Self.control("STANDBY", "start")
            throw error
        }
        // The standby is still down: reads are served, by the primary.
        var onPrimary = 0
        for _ in 0..<20 {
            let inRecovery = try await workload.db.query(.read("after-the-stop")) { connection in
                var inRecovery = true
                for try await value in try await connection.query("SELECT pg_is_in_recovery()", logger: Self.logger)
                    .decode(Bool.self)
                {
                    inRecovery = value
                }
                return inRecovery
            }
            if !inRecovery { onPrimary += 1 }
        }
        try await Self.control("STANDBY", "start")
        let report = try await workload.finish(observer, applicationName: url.applicationName)
        try await observer.close()
        print("fault report: standby stopped: 20 of 20 reads after the stop served, \(onPrimary) by the primary")
        workload.expectGuarantees(report, recoveryExpected: false)
        #expect(onPrimary == 20)
    }

    static let logger = Logger(label: "test.failover")

    /// A URL listing `first` then `second`, with `target_session_attrs=read-write`.
    static func readWrite(_ first: PostgresURL, _ second: PostgresURL) -> PostgresURL {
        var url = first
        url.endpoints = [first.endpoints[0], second.endpoints[0]]
        url.targetSessionAttributes = .readWrite
        return url
    }

    static func waitForReplication(of table: String, to standbyURL: PostgresURL) async throws {
        let standby = try await Observer.connect(standbyURL)
        for _ in 0..<100 {
            let replicated = try await standby.int("SELECT count(*)::int FROM pg_tables WHERE tablename = '\(table)'")
            if replicated == 1 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        try await standby.close()
    }

    /// Stop the primary, promote the standby: writes resume on the new primary without a restart,
    /// no acknowledged write is lost or applied twice, and reads are answered throughout (by the
    /// standby, marked degraded, while the primary is gone). When the old primary comes back still
    /// claiming the role (split brain), it gets no write; rebuilt as a standby of the new primary,
    /// it gets none either and replays the new primary's writes.
    @Test(.timeLimit(.minutes(3)))
    func writesMoveToThePromotedStandbyAndNeverBackToTheOldPrimary() async throws {
        let (primaryURL, standbyURL) = (
            try FaultServers.url("RELIABLEDB_TEST_HA_PRIMARY_URL"),
            try FaultServers.url("RELIABLEDB_TEST_HA_STANDBY_URL")
        )
        let url = Self.readWrite(primaryURL, standbyURL)
        var settings = FaultWorkload.Settings()
        // The breaker a user gets (60 s open): the old primary's failures must not hold the new
        // one's writes (Sources/ReliableDB/Documentation.docc/Breaker.md).
        settings.breaker = .defaults
        // Short, so the old primary is no longer skipped when it comes back: what keeps writes
        // off it then is that the walk starts at the new primary.
        settings.maxServerEjection = .milliseconds(300)
        settings.readsWithFallback = true
        let workload = try FaultWorkload(fault: "failover to the promoted standby", url: url, settings: settings)
        let observer = try await Observer.connect(primaryURL)
        try await workload.setUp(observer)
        // The standby has the table before the primary goes.
        try await observer.execute("SELECT pg_switch_wal()")
        try await observer.close()
        try await Self.waitForReplication(of: workload.table, to: standbyURL)

        // libpq on the same URL, beside it: the reference for the write gap.
        let reference = LibpqWriter(url: url, table: workload.table)
        let referenceTask = Task { await reference.run() }
        let promoted = Locked<ContinuousClock.Instant?>(nil)
        // The primary breaker's transitions, printed against the promotion for the report.
        let transitions = Locked<[(ContinuousClock.Instant, CircuitTransition)]>([])
        let watching = Task {
            for await transition in workload.db.circuitBreaker.transitions.subscribe() {
                transitions.withLock { $0.append((ContinuousClock.now, transition)) }
            }
        }
        defer { watching.cancel() }
        try await workload.run(settle: .seconds(10)) {
            try await Task.sleep(for: .milliseconds(800))
            // fast: a clean shutdown sends every committed transaction to the standby first.
            try await Self.control("PRIMARY", "stop", "fast")
            // A second without a primary, as an operator or Patroni takes: longer than the retries
            // of one operation (3 attempts, at most 300 ms of backoff), so the outage is felt.
            try await Task.sleep(for: .seconds(1))
            try await Self.control("STANDBY", "promote")
            promoted.withLock { $0 = ContinuousClock.now }
        }
        // Until libpq wrote again too (it may be slower than ReliableDB).
        for _ in 0..<100 where reference.firstSuccess(after: promoted.withLock { $0 }) == nil {
            try await Task.sleep(for: .milliseconds(50))
        }
        reference.stop()
        await referenceTask.value
        // Split brain: the old primary comes back as a primary. The new primary's backends are
        // ended so the pool must connect again; a walk in URL order would now reach the old one.
        try await Self.control("PRIMARY", "start")
        try await Task.sleep(for: .milliseconds(500))  // past any ejection of the old primary
        let newPrimary = try await Observer.connect(standbyURL)
        try await newPrimary.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '\(url.applicationName)'"
        )
        let splitBrain = try await Self.write(40, prefix: "split", through: workload)
        let old = try await Observer.connect(primaryURL)
        let onOldPrimary = try await old.ledgerCounts(workload.table)
        try await old.close()
        let sinceRestart = splitBrain.acknowledged.filter { onOldPrimary[$0] != nil }

        // The old primary rebuilt as a standby of the new one, as an operator does next.
        try await Self.control(
            "PRIMARY",
            "rebuild-standby",
            try FaultServers.environment("RELIABLEDB_TEST_HA_STANDBY_SOCKET_DIR"),
            "\(standbyURL.port)"
        )
        try await newPrimary.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '\(url.applicationName)'"
        )
        let rebuilt = try await Self.write(40, prefix: "rebuilt", through: workload)
        try await Self.waitForReplication(of: workload.table, to: primaryURL)
        let rebuiltStandby = try await Observer.connect(primaryURL)
        let inRecovery = try await rebuiltStandby.int("SELECT pg_is_in_recovery()::int")
        var replayed = 0
        for _ in 0..<100 {
            replayed = try await rebuiltStandby.int(
                "SELECT count(*)::int FROM \(workload.table) WHERE id LIKE 'rebuilt-%'"
            )
            if replayed == rebuilt.acknowledged.count { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        try await rebuiltStandby.close()

        let report = try await workload.finish(newPrimary, applicationName: url.applicationName)
        try await newPrimary.close()
        if let at = promoted.withLock({ $0 }) {
            let lines = transitions.withLock { $0 }.map { time, transition in
                "\(transition.from)→\(transition.to) (\(transition.reason)) at \(time - at)"
            }
            print(
                "fault report: failover: primary breaker, relative to the promotion: \(lines.joined(separator: "; "))"
            )
        }
        let unavailable = promoted.withLock { $0 }.flatMap { _ in report.writeRecovery }
        let libpqGap = promoted.withLock { $0 }.flatMap { at in reference.firstSuccess(after: at).map { $0 - at } }
        print(
            "fault report: failover write gap after the promotion: ReliableDB \(unavailable.map { "\($0)" } ?? "never"),"
                + " libpq \(libpqGap.map { "\($0)" } ?? "never") (\(reference.attempts) psql writes,"
                + " \(reference.failures) failed)"
        )
        print(
            "fault report: failover: writes resumed \(unavailable.map { "\($0)" } ?? "never") after the promotion,"
                + " longest without an acknowledged write \(report.longestWriteGap);"
                + " reads \(report.reads), \(report.readFailures) failed, \(report.degradedByStandby) answered by the"
                + " standby and \(report.degradedFromCache) from the cache, degraded;"
                + " split brain: \(splitBrain.acknowledged.count) writes acknowledged, \(splitBrain.failures) failed,"
                + " \(sinceRestart.count) on the old primary; rebuilt as a standby: \(rebuilt.acknowledged.count) writes"
                + " acknowledged, \(rebuilt.failures) failed, \(replayed) replayed on it"
        )
        #expect(report.otherFailures + report.timedOut > 0, "the failover was felt: \(report)")
        workload.expectGuarantees(report, recoveryExpected: false)
        #expect(unavailable.map { $0 <= .seconds(3) } == true, "writes resumed within 3 s of the promotion: \(report)")
        if let unavailable, let libpqGap {
            #expect(
                unavailable <= libpqGap + .milliseconds(500),
                "write gap \(unavailable) against libpq's \(libpqGap) on the same URL"
            )
        } else {
            Issue.record(
                "no write gap to compare: ReliableDB \(String(describing: unavailable)), libpq \(String(describing: libpqGap))"
            )
        }
        #expect(report.readFailures == 0, "every read was answered: \(report)")
        #expect(report.degradedByStandby > 0, "the standby answered reads while the primary was gone: \(report)")
        #expect(splitBrain.acknowledged.count >= 35, "writes went on during the split brain")
        #expect(sinceRestart.isEmpty, "writes reached the old primary: \(sinceRestart)")
        #expect(inRecovery == 1, "the old primary was rebuilt as a standby")
        #expect(rebuilt.acknowledged.count == 40, "every write after the rebuild went to the new primary")
        #expect(replayed == rebuilt.acknowledged.count, "the rebuilt standby replays the new primary's writes")
    }

    /// `count` idempotent single-row writes, 25 ms apart: which were acknowledged, how many failed.
    static func write(
        _ count: Int,
        prefix: String,
        through workload: FaultWorkload
    ) async throws -> (acknowledged: [String], failures: Int) {
        var acknowledged: [String] = []
        var failures = 0
        for index in 0..<count {
            let id = "\(prefix)-\(index)"
            do {
                try await workload.db.query(.init("\(prefix)-write", idempotent: true)) { connection in
                    _ = try await connection.query(
                        "INSERT INTO \(unescaped: workload.table) (id) VALUES (\(id))",
                        logger: Self.logger
                    ).collect()
                }
                acknowledged.append(id)
            } catch {
                failures += 1
            }
            try await Task.sleep(for: .milliseconds(25))
        }
        return (acknowledged, failures)
    }
}

/// Writes through libpq (`psql`, one process a write) on a multi-host URL with
/// `target_session_attrs=read-write`, as fast as it can: what plain libpq does across a failover.
final class LibpqWriter: Sendable {
    let conninfo: String
    let table: String
    private let state = Mutex<
        (
            stopped: Bool, attempts: Int, failures: Int,
            successes: [(start: ContinuousClock.Instant, end: ContinuousClock.Instant)]
        )
    >(
        (false, 0, 0, [])
    )

    init(url: PostgresURL, table: String) {
        let hosts = url.endpoints.map(\.host).joined(separator: ",")
        let ports = url.endpoints.map { String($0.port) }.joined(separator: ",")
        conninfo =
            "host=\(hosts) port=\(ports) user=\(url.username) password=\(url.password?.value ?? "")"
            + " dbname=\(url.database) target_session_attrs=read-write connect_timeout=2 sslmode=disable"
            + " application_name=\(url.applicationName)-libpq"
        self.table = table
    }

    var attempts: Int { state.withLock { $0.attempts } }
    var failures: Int { state.withLock { $0.failures } }

    /// When the first write that started after `instant` succeeded, as the workload measures its own.
    func firstSuccess(after instant: ContinuousClock.Instant?) -> ContinuousClock.Instant? {
        guard let instant else { return nil }
        return state.withLock { $0.successes.first { $0.start >= instant }?.end }
    }

    func stop() { state.withLock { $0.stopped = true } }

    func run() async {
        var sequence = 0
        while !state.withLock({ $0.stopped }) {
            sequence += 1
            let start = ContinuousClock.now
            let result = try? await runToCompletion(
                "/usr/bin/psql",
                [conninfo, "-X", "-q", "-c", "INSERT INTO \(table) (id) VALUES ('libpq-\(sequence)')"]
            )
            let end = ContinuousClock.now
            state.withLock { state in
                state.attempts += 1
                if result?.status == 0 { state.successes.append((start, end)) } else { state.failures += 1 }
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }
}
