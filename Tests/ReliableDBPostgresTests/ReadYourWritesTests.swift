import Foundation
import InMemoryTracing
import Logging
import PostgresNIO
import Prometheus
import ReliableDB
import ReliableDBPostgres
import ReliableDBPrometheus
import ReliableDBTestSupport
import Synchronization
import Testing

/// Read-your-writes across two instances that share nothing but the token, against the primary
/// and a standby that applies WAL 300 ms late (`recovery_min_apply_delay`, scripts/test).
@Suite("Read your writes by WAL position", .serialized, .timeLimit(.minutes(3)))
struct ReadYourWritesTests {
    static let logger = Logger(label: "test.read-your-writes")

    /// Primary and delayed standby, reads to the standby (`standby_reads=true`).
    static func url() throws -> PostgresURL {
        var url = try PostgresURL.parse(try TestServer.environment("RELIABLEDB_TEST_HA_PRIMARY_URL")).get()
        let standby = try PostgresURL.parse(try TestServer.environment("RELIABLEDB_TEST_DELAYED_STANDBY_URL")).get()
        url.endpoints = [.init(host: url.host, port: url.port), .init(host: standby.host, port: standby.port)]
        url.sslMode = .disable
        url.standbyReads = true
        url.maxStandbyLag = .seconds(30)
        url.applicationName = "rdb-ryw"
        return url
    }

    /// An instance of the service: its own pools, nothing shared with the other.
    static func instance() throws -> ReliableDatabase<PostgresBackend> {
        try ReliableDatabase(backend: try PostgresBackend(url: try url(), connectionLimit: 20))
    }

    struct Pairs {
        var pairs = 0
        var misses = 0
        /// Reads a standby answered.
        var onStandby = 0
    }

    /// `workers` × `perWorker` pairs: a write on `writer`, then at once a read of it on `reader`,
    /// handing the token over when `withToken`.
    static func run(
        writer: ReliableDatabase<PostgresBackend>,
        reader: ReliableDatabase<PostgresBackend>,
        table: String,
        withToken: Bool,
        workers: Int = 16,
        perWorker: Int
    ) async throws -> Pairs {
        try await withThrowingTaskGroup(of: Pairs.self) { group in
            for worker in 0..<workers {
                group.addTask {
                    var counts = Pairs()
                    for pair in 0..<perWorker {
                        let id = "\(withToken ? "t" : "n")-\(worker)-\(pair)"
                        let write = {
                            try await writer.transaction(.init("ryw-write", table: table)) { connection in
                                _ = try await connection.query(
                                    "INSERT INTO \(unescaped: table) (id) VALUES (\(id))",
                                    logger: logger
                                ).collect()
                            }
                        }
                        let read = {
                            try await reader.query(.read("ryw-read", table: table)) { connection in
                                var found = (0, false)
                                let rows = try await connection.query(
                                    "SELECT count(*)::int, pg_is_in_recovery() FROM \(unescaped: table) WHERE id = \(id)",
                                    logger: logger
                                )
                                for try await row in rows.decode((Int, Bool).self) { found = row }
                                return found
                            }
                        }
                        let found: (Int, Bool)
                        if withToken {
                            let token = try await writer.withConsistency(token: nil) { try await write() }.token
                            #expect(token != nil)
                            found = try await reader.withConsistency(token: token) { try await read() }.value
                        } else {
                            try await write()
                            found = try await read()
                        }
                        counts.pairs += 1
                        if found.0 == 0 { counts.misses += 1 }
                        if found.1 { counts.onStandby += 1 }
                    }
                    return counts
                }
            }
            var total = Pairs()
            for try await counts in group {
                total.pairs += counts.pairs
                total.misses += counts.misses
                total.onStandby += counts.onStandby
            }
            return total
        }
    }

    @Test func withTheTokenNoReadMissesItsOwnWriteAndMostStayOnTheStandby() async throws {
        let writer = try Self.instance()
        let reader = try Self.instance()
        let table = "ryw_\(UUID().uuidString.prefix(8).lowercased())"
        _ = try await writer.query(.init("create")) { connection in
            try await connection.query("CREATE TABLE \(unescaped: table) (id text NOT NULL)", logger: Self.logger)
                .collect()
        }
        // The standby has the table 300 ms later, and reads go to it once it has measured its lag
        // (unknown on a fresh standby until it replays a transaction; kept for a second).
        var onStandby = false
        for _ in 0..<200 where !onStandby {
            onStandby =
                (try? await reader.query(.read("has-table")) { connection in
                    var inRecovery = false
                    let rows = try await connection.query(
                        "SELECT pg_is_in_recovery() FROM \(unescaped: table) UNION ALL SELECT pg_is_in_recovery()",
                        logger: Self.logger
                    )
                    for try await value in rows.decode(Bool.self) { inRecovery = value }
                    return inRecovery
                }) ?? false
            if !onStandby { try await Task.sleep(for: .milliseconds(50)) }
        }
        let without = try await Self.run(writer: writer, reader: reader, table: table, withToken: false, perWorker: 20)
        let before = reader.raw.consistencyStatistics
        let with = try await Self.run(writer: writer, reader: reader, table: table, withToken: true, perWorker: 63)
        let stats = reader.raw.consistencyStatistics
        let served = stats.servedByStandby - before.servedByStandby
        let averageWait = stats.waits > 0 ? stats.waited / stats.waits : .zero
        print(
            "read-your-writes report: without the token \(without.misses) of \(without.pairs) reads missed their write "
                + "(\(without.onStandby) on the standby); "
                + "with it \(with.misses) of \(with.pairs), \(served) served by the standby (\(with.onStandby) seen there), "
                + "\(stats.sentToPrimary) sent to the primary, \(stats.waits) waited (average \(averageWait)); "
                + "positions learnt by the writer: \(writer.raw.consistencyStatistics.positionsLearnt)"
        )
        #expect(without.misses > 0, "the standby must really lag, or this shows nothing")
        #expect(with.misses == 0)
        #expect(with.pairs >= 1_000)
        #expect(served > 0, "some reads stay on the standby")
        _ = try await writer.query(.init("drop")) { connection in
            try await connection.query("DROP TABLE \(unescaped: table)", logger: Self.logger).collect()
        }
        try await writer.shutdown()
        try await reader.shutdown()
    }

    /// A token from another history (another cluster, or a timeline a failover replaced) never
    /// sends a read to a standby, and one the standby does not reach in time does not hold it:
    /// both go to the primary, counted.
    @Test func aTokenOfAnotherHistoryOrTooFarAheadGoesToThePrimary() async throws {
        let writer = try Self.instance()
        let reader = try Self.instance()
        let token = try #require(
            try await writer.withConsistency(token: nil) {
                try await writer.query(.init("touch")) { _ in () }
            }.token
        )
        let position = try #require(WALPosition(token: token))
        #expect(position.token == token)
        func readServer(_ token: String, maxWait: Duration = .milliseconds(100)) async throws -> Bool {
            try await reader.withConsistency(token: token, maxWait: maxWait) {
                try await reader.query(.read("which")) { connection in
                    var inRecovery = false
                    for try await value in try await connection.query("SELECT pg_is_in_recovery()", logger: Self.logger)
                        .decode(Bool.self)
                    {
                        inRecovery = value
                    }
                    return inRecovery
                }
            }.value
        }
        var otherTimeline = position
        otherTimeline.timeline += 1
        var otherCluster = position
        otherCluster.systemIdentifier = "1" + position.systemIdentifier.dropFirst()
        var ahead = position
        ahead.lsn += 1 << 40
        #expect(try await readServer(otherTimeline.token) == false)
        #expect(try await readServer(otherCluster.token) == false)
        #expect(reader.raw.consistencyStatistics.otherHistory == 2)
        #expect(try await readServer(ahead.token) == false, "never reached: the primary after the wait")
        #expect(reader.raw.consistencyStatistics.sentToPrimary == 1)
        // The write's own token, once the 300 ms delay has passed: the standby.
        #expect(try await readServer(token, maxWait: .seconds(2)) == true)
        // Tokens that are not ours start an empty session: reads as without one.
        for bad in ["", "rdb2.1.1.0/0", "rdb1.x.1.0/0", "rdb1.1.0.0/0", "rdb1.1.1.zz"] {
            #expect(WALPosition(token: bad) == nil, "\(bad)")
            #expect(ConsistencySession(token: bad).position == nil)
        }
        try await writer.shutdown()
        try await reader.shutdown()
    }

    /// What learning the position costs a write: the same transaction, alternately in a session
    /// and not, measured side by side (printed, not asserted: machines are noisy).
    @Test func theTokensCostIsMeasuredSideBySide() async throws {
        let writer = try Self.instance()
        let table = "ryw_cost_\(UUID().uuidString.prefix(8).lowercased())"
        _ = try await writer.query(.init("create")) { connection in
            try await connection.query("CREATE TABLE \(unescaped: table) (id int)", logger: Self.logger).collect()
        }
        func write(_ n: Int) async throws {
            try await writer.transaction(.init("cost", table: table)) { connection in
                _ = try await connection.query("INSERT INTO \(unescaped: table) VALUES (\(n))", logger: Self.logger)
                    .collect()
            }
        }
        var plain: [Duration] = []
        var session: [Duration] = []
        for n in 0..<400 {
            let start = ContinuousClock.now
            if n % 2 == 0 {
                try await write(n)
                plain.append(ContinuousClock.now - start)
            } else {
                _ = try await writer.withConsistency(token: nil) { try await write(n) }
                session.append(ContinuousClock.now - start)
            }
        }
        let (p, s) = (plain.sorted()[plain.count / 2], session.sorted()[session.count / 2])
        print("read-your-writes cost: a write's median \(p) without a session, \(s) with one (+\(s - p))")
        #expect(writer.raw.consistencyStatistics.positionsLearnt == 200)
        _ = try await writer.query(.init("drop")) { connection in
            try await connection.query("DROP TABLE \(unescaped: table)", logger: Self.logger).collect()
        }
        try await writer.shutdown()
    }

    /// A session's read is counted by where it went, its wait recorded, and its span marked.
    @Test func aSessionReadIsCountedAndMarkedOnItsSpan() async throws {
        let exporter = PrometheusExporter(registry: PrometheusCollectorRegistry())
        let tracer = InMemoryTracer()
        let writer = try Self.instance()
        let reader = try ReliableDatabase(
            backend: try PostgresBackend(url: try Self.url(), connectionLimit: 4),
            instruments: ReliabilityInstruments(factory: exporter.metricsFactory),
            tracer: tracer
        )
        let token = try await writer.withConsistency(token: nil) {
            try await writer.query(.init("touch")) { _ in () }
        }.token
        // The standby replays the write about 300 ms later: the read waits for it there.
        _ = try await reader.withConsistency(token: token, maxWait: .seconds(5)) {
            try await reader.query(.read("ryw-span")) { _ in () }
        }
        let span = try #require(tracer.finishedSpans.last { $0.operationName == "ryw-span" })
        #expect(span.attributes["reliabledb.consistency.routed"]?.toSpanAttribute() == true)
        #expect(span.attributes["reliabledb.consistency.route"]?.toSpanAttribute() == "standby")
        let text = exporter.render(metrics: reader.metrics(), health: nil)
        #expect(text.contains(#"db_consistency_reads_total{route="standby"} 1"#), "\(text)")
        #expect(text.contains("db_consistency_wait_seconds_count 1"), "\(text)")
        try await writer.shutdown()
        try await reader.shutdown()
    }
}
