import AsyncHTTPClient
import Foundation
import NIOCore
import PostgresNIO
import ReliableDB
import ReliableDBTestSupport
import Synchronization
import Testing

/// Several `reliabledb serve --demo` processes, as the replicas of one service, under concurrent
/// reads (`GET /api/users`) and writes (`POST /api/users`) with the settings users get, while
/// the engines they run on fail: a server with fewer slots than their pools together, PgBouncer
/// with PostgreSQL restarted behind it, a Patroni cluster's switchover, killed postmaster and lost
/// leader node. Each prints a `fleet report:` line: failed requests by cause, the longest request,
/// the longest gap between acknowledged writes, recovery per instance, and connection attempts.
@Suite("A fleet of serve --demo instances", .serialized)
struct FleetTests {
    static let instances = 4
    static let workersPerInstance = 3

    // MARK: (a) fewer server slots than the pools together

    /// Four instances with the default pool of 10 (and 3 requests in flight each) over a server
    /// other clients leave 4 slots of: the server refuses some of their connects with 53300, no
    /// write is lost and every instance keeps serving.
    @Test(.timeLimit(.minutes(3)))
    func aServerWithFewerSlotsThanThePoolsTogetherServesTheFleet() async throws {
        let url = try FaultServers.url("RELIABLEDB_TEST_FAULT_POSTGRES_URL")
        var hogs: [Observer] = []
        let free = try await Observer.connect(url)
        let used = try await free.int(
            "SELECT count(*)::int FROM pg_stat_activity WHERE backend_type = 'client backend'"
        )
        try await free.close()
        // max_connections 200, 3 reserved for superusers: leave 4 for the fleet.
        while hogs.count < 197 - used - 4 { hogs.append(try await Observer.connect(url)) }
        let refusalsBefore = try Self.refusals()
        let outcome: Result<FleetReport, any Error>
        do {
            let fleet = try await Fleet.start(url: try FaultServers.environment("RELIABLEDB_TEST_FAULT_POSTGRES_URL"))
            let load = FleetLoad(fleet: fleet, tag: "slots")
            let ran = await Result(catching: { try await load.run { try await Task.sleep(for: .seconds(6)) } })
            // The fleet's slots are free again once it stops: the check needs one.
            await fleet.stop()
            outcome = await Result(catching: {
                try ran.get()
                return try await load.finish(on: url)
            })
        } catch {
            outcome = .failure(error)
        }
        // Closed on every path: PostgresNIO asserts that a connection is closed before it goes.
        for hog in hogs { try? await hog.close() }
        let report = try outcome.get()
        let refused = try Self.refusals() - refusalsBefore
        print("fleet report: 4 instances, 40 pool slots over 4 server slots: \(report), 53300 refusals=\(refused)")
        #expect(report.lost.isEmpty, "\(report)")
        #expect(report.failedReads == 0, "\(report)")
        #expect(report.recovery.count == Self.instances, "every instance served: \(report)")
    }

    /// How many connections the fault server has refused with 53300 so far (its log).
    static func refusals() throws -> Int {
        let log = try String(
            contentsOfFile: try FaultServers.environment("RELIABLEDB_TEST_FAULT_POSTGRES_LOG"),
            encoding: .utf8
        )
        return log.components(separatedBy: "sorry, too many clients already").count - 1
    }

    // MARK: (b) PgBouncer, PostgreSQL restarted behind it

    /// Through PgBouncer in transaction mode without `pgbouncer=true` (ReliableDB finds it): the
    /// server behind it stops (fast) and starts 2 s later. Writes that reached the server before
    /// the stop are acknowledged or reported unknown, never lost; every instance recovers.
    @Test(.timeLimit(.minutes(3)))
    func pgBouncerWithTheServerRestartedBehindItLosesNothing() async throws {
        let fleet = try await Fleet.start(url: try FaultServers.environment("RELIABLEDB_TEST_FAULT_PGBOUNCER_URL"))
        let load = FleetLoad(fleet: fleet, tag: "bouncer")
        let restarted = Locked<ContinuousClock.Instant?>(nil)
        let logBefore = try Self.serverLog().count
        try await load.run {
            try await Task.sleep(for: .seconds(1))
            try await FaultServers.controlOutageServer("stop", "fast")
            try await Task.sleep(for: .seconds(2))
            try await FaultServers.controlOutageServer("start")
            restarted.withLock { $0 = ContinuousClock.now }
        }
        let report = try await load.finish(on: try FaultServers.url("RELIABLEDB_TEST_FAULT_POSTGRES_URL"))
        await fleet.stop()
        let attempts = try Self.connectionsReceived(since: logBefore, within: .seconds(2))
        print(
            "fleet report: 4 instances through PgBouncer, PostgreSQL restarted behind it: \(report), server connects in the first 2 s after the restart=\(attempts)"
        )
        #expect(report.lost.isEmpty, "\(report)")
        #expect(report.recovery.count == Self.instances, "every instance answered after the restart: \(report)")
    }

    static func serverLog() throws -> String {
        try String(contentsOfFile: try FaultServers.environment("RELIABLEDB_TEST_FAULT_POSTGRES_LOG"), encoding: .utf8)
    }

    /// Connections the fault server received in its log after `offset`, within `window` of the
    /// first line that says it is ready.
    static func connectionsReceived(since offset: Int, within window: Duration) throws -> Int {
        let log = try serverLog()
        let tail = log.utf8.count > offset ? String(log.utf8.dropFirst(offset))! : ""
        let lines = tail.split(separator: "\n")
        guard let ready = lines.first(where: { $0.contains("database system is ready to accept connections") }),
            let start = Self.timestamp(ready)
        else { return -1 }
        return lines.filter { line in
            guard line.contains("connection received"), let at = Self.timestamp(line) else { return false }
            return at >= start && at.timeIntervalSince(start) <= Double(window.components.seconds)
        }.count
    }

    /// The `2026-12-07 15:05:07.494 UTC` a PostgreSQL log line starts with.
    static func timestamp(_ line: Substring) -> Date? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss.SSS"
        return formatter.date(from: String(line.prefix(23)))
    }
}

/// (c) The fleet on the Patroni cluster: in PatroniTests' suite, which scripts/test runs beside the
/// other suites (the cluster is the only server it touches, and one test at a time uses it).
extension PatroniTests {
    enum PatroniFault: String, CaseIterable, CustomTestStringConvertible {
        case switchover
        case killedPostmaster = "killed postmaster"
        case lostLeaderNode = "lost leader node"
        var testDescription: String { rawValue }
    }

    /// The fleet on the Patroni cluster, following its REST API (`DB_PATRONI_URLS`): no read fails
    /// and no acknowledged write is lost; through a switchover, only writes whose outcome is
    /// unknown may fail.
    @Test(.serialized, .timeLimit(.minutes(3)), arguments: PatroniFault.allCases)
    func onPatroniNoReadFailsAndNoWriteIsLost(fault: PatroniFault) async throws {
        let (leader, replica) = try await PatroniTests.roles()
        let fleet = try await Fleet.start(
            url: try FaultServers.environment("RELIABLEDB_TEST_PATRONI_URL"),
            environment: ["DB_PATRONI_URLS": try FaultServers.environment("RELIABLEDB_TEST_PATRONI_API")]
        )
        let load = FleetLoad(fleet: fleet, tag: "patroni-\(fault.rawValue.replacingOccurrences(of: " ", with: "-"))")
        try await load.run {
            try await Task.sleep(for: .seconds(1))
            switch fault {
            case .switchover:
                try await PatroniTests.ctl("switchover", replica)
                _ = try await PatroniTests.when { await PatroniTests.isPrimary(replica) }
            case .killedPostmaster:
                try await PatroniTests.ctl("kill-postmaster", leader)
                try await Task.sleep(for: .milliseconds(200))
                _ = try await PatroniTests.when { await PatroniTests.isPrimary(leader) }
            case .lostLeaderNode:
                try await PatroniTests.ctl("kill-node", leader)
                _ = try await PatroniTests.when { await PatroniTests.isPrimary(replica) }
            }
        }
        if fault == .lostLeaderNode {
            try await PatroniTests.ctl("start", leader)
            try await PatroniTests.ctl("wait-healthy")
        }
        let primary = fault == .killedPostmaster ? leader : replica
        let report = try await load.finish(
            on: try FaultServers.url("RELIABLEDB_TEST_PATRONI_URL", port: try PatroniTests.port(primary))
        )
        await fleet.stop()
        print("fleet report: 4 instances on Patroni, \(fault.rawValue): \(report)")
        #expect(report.lost.isEmpty, "\(report)")
        #expect(report.failedReads == 0, "\(report)")
        if fault == .switchover {
            // A lost leader's promotion takes Patroni's ttl (about 10 s here): a write that waited
            // for it longer than the pool timeout fails as unavailable, and is reported.
            #expect(
                report.failures.values.reduce(0, +) == report.outcomeUnknown,
                "only writes whose outcome is unknown fail: \(report)"
            )
        }
        _ = try await PatroniTests.roles()
    }
}

/// `reliabledb serve --demo` processes on one database.
struct Fleet {
    let processes: [ServerProcess]
    let ports: [Int]

    /// The first instance alone (it creates the demo's tables), then the others together.
    static func start(url: String, environment: [String: String] = [:]) async throws -> Fleet {
        var environment = environment
        environment["DATABASE_URL"] = url
        func launch() throws -> ServerProcess {
            try ServerProcess(
                binary: reliabledbBinary,
                arguments: [
                    "serve", "--demo", "--port", "0", "--drain-seconds", "1", "--env-file", "/nonexistent.env",
                ],
                environment: environment
            )
        }
        let first = try launch()
        var ports = [try await first.waitForPort()]
        var processes = [first]
        for _ in 1..<FleetTests.instances { processes.append(try launch()) }
        for process in processes.dropFirst() { ports.append(try await process.waitForPort()) }
        return Fleet(processes: processes, ports: ports)
    }

    func stop() async {
        for process in processes { process.signal(SIGTERM) }
        for process in processes { _ = await process.exitStatus() }
    }
}

/// What the fleet answered, per request, while a fault was injected.
struct FleetReport: CustomStringConvertible {
    var requests = 0
    var reads = 0
    var failedReads = 0
    /// Failed requests by cause: method, status and the first words of the error.
    var failures: [String: Int] = [:]
    var longest = Duration.zero
    var longestWriteGap = Duration.zero
    /// Per instance: from the fault's end to its first successful request after it.
    var recovery: [Int: Duration] = [:]
    var acknowledged = 0
    var lost: [String] = []
    /// Failed writes whose answer said they may have committed (a COMMIT cut off in flight).
    var outcomeUnknown = 0

    var description: String {
        func ms(_ duration: Duration) -> String {
            "\(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000) ms"
        }
        let recoveries = recovery.sorted { $0.key < $1.key }.map { "#\($0.key) \(ms($0.value))" }.joined(
            separator: ", "
        )
        return
            "requests=\(requests) reads=\(reads) failedReads=\(failedReads) failures=\(failures) longest=\(ms(longest)) "
            + "longestWriteGap=\(ms(longestWriteGap)) recovery=[\(recoveries)] acknowledgedWrites=\(acknowledged) lost=\(lost.count) outcomeUnknown=\(outcomeUnknown)"
    }
}

/// Workers per instance alternating reads and writes until the fault has ended and every instance
/// answered after it (or 15 s passed), then a little more.
final class FleetLoad: Sendable {
    private struct State {
        var report = FleetReport()
        var acknowledged: [String] = []
        var lastWrite: ContinuousClock.Instant?
        var faultEndedAt: ContinuousClock.Instant?
    }

    let fleet: Fleet
    let tag: String
    private let state = Mutex(State())
    private let stopped = Atomic<Bool>(false)

    init(fleet: Fleet, tag: String) {
        self.fleet = fleet
        self.tag = "\(tag)-\(UUID().uuidString.prefix(6).lowercased())"
    }

    func run(during fault: () async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for instance in fleet.ports.indices {
                for worker in 0..<FleetTests.workersPerInstance {
                    group.addTask { await self.work(instance: instance, worker: worker) }
                }
            }
            do {
                try await fault()
            } catch {
                stopped.store(true, ordering: .releasing)
                try await group.waitForAll()
                throw error
            }
            let ended = ContinuousClock.now
            state.withLock { $0.faultEndedAt = ended }
            while ContinuousClock.now - ended < .seconds(15),
                state.withLock({ $0.report.recovery.count < fleet.ports.count })
            {
                try await Task.sleep(for: .milliseconds(20))
            }
            try await Task.sleep(for: .milliseconds(500))
            stopped.store(true, ordering: .releasing)
            try await group.waitForAll()
        }
    }

    private func work(instance: Int, worker: Int) async {
        let base = "http://127.0.0.1:\(fleet.ports[instance])/api/users"
        var sequence = 0
        while !stopped.load(ordering: .acquiring) {
            sequence += 1
            let write = sequence % 2 == 1
            let email = "fleet-\(tag)-\(instance)-\(worker)-\(sequence)@example.com"
            var request = HTTPClientRequest(url: base)
            if write {
                request.method = .POST
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(string: #"{"email": "\#(email)", "name": "Fleet"}"#))
            }
            let start = ContinuousClock.now
            var status = 0
            var body = ""
            do {
                let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
                status = Int(response.status.code)
                body = String(buffer: try await response.body.collect(upTo: 1 << 22))
            } catch {
                body = "\(error)"
            }
            let end = ContinuousClock.now
            let ok = write ? (status == 201 || status == 409) : status == 200
            state.withLock { state in
                state.report.requests += 1
                state.report.longest = max(state.report.longest, end - start)
                if !write {
                    state.report.reads += 1
                    if !ok { state.report.failedReads += 1 }
                }
                if ok {
                    if let ended = state.faultEndedAt, start >= ended, state.report.recovery[instance] == nil {
                        state.report.recovery[instance] = end - ended
                    }
                    if write {
                        if status == 201 { state.acknowledged.append(email) }
                        if let last = state.lastWrite {
                            state.report.longestWriteGap = max(state.report.longestWriteGap, end - last)
                        }
                        state.lastWrite = end
                    }
                } else {
                    let cause = Self.cause(of: body)
                    state.report.failures["\(write ? "POST" : "GET") \(status) \(cause)", default: 0] += 1
                    if write, body.contains("may have committed") { state.report.outcomeUnknown += 1 }
                }
            }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    /// The error's first words, without figures, so causes group.
    static func cause(of body: String) -> String {
        let text =
            (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])?["error"] as? String ?? body
        let words = text.split(separator: " ").prefix(8).joined(separator: " ")
        return String(words.map { $0.isNumber ? "#" : $0 }).replacingOccurrences(of: "##", with: "#")
    }

    /// Compares the acknowledged writes with the table on the server `url` names.
    func finish(on url: PostgresURL) async throws -> FleetReport {
        let observer = try await Observer.connect(url)
        var found = Set<String>()
        for row in try await observer.strings("SELECT email FROM carmen_users WHERE email LIKE 'fleet-\(tag)-%'") {
            found.insert(row)
        }
        try await observer.close()
        return state.withLock { state in
            state.report.acknowledged = state.acknowledged.count
            state.report.lost = state.acknowledged.filter { !found.contains($0) }
            return state.report
        }
    }
}
