import Foundation
import Logging
import PostgresNIO
import ReliableDB
import ReliableDBPostgres
import ReliableDBTestSupport
import Synchronization
import Testing

/// Server-side faults: backends killed in the middle of a transaction, and the server stopped
/// and started again.
@Suite("Server faults", .serialized)
struct ServerFaultTests {
    /// The case that used to leave callers waiting forever: `pg_terminate_backend` on backends
    /// that sit `idle in transaction`, again and again, under load.
    @Test(.timeLimit(.minutes(2)), arguments: BreakerProfile.allCases)
    func backendsTerminatedMidTransactionNeverStrandACaller(breaker: BreakerProfile) async throws {
        let url = try FaultServers.url()
        let workload = try FaultWorkload(
            fault: "terminate mid-transaction",
            url: url,
            settings: .init(breaker: breaker)
        )
        let observer = try await Observer.connect(try FaultServers.url())
        try await workload.setUp(observer)
        let killer = try await Observer.connect(try FaultServers.url())
        let kills = KillCounter()
        try await workload.run {
            try await Task.sleep(for: .milliseconds(500))
            let start = ContinuousClock.now
            while ContinuousClock.now - start < .seconds(4) {
                kills.add(
                    try await killer.int(
                        """
                        SELECT count(pg_terminate_backend(pid))::int FROM pg_stat_activity
                        WHERE application_name = '\(url.applicationName)' AND state = 'idle in transaction'
                        """
                    )
                )
                try await Task.sleep(for: .milliseconds(40))
            }
        }
        try await killer.close()
        let report = try await workload.finish(observer, applicationName: url.applicationName)
        try await observer.close()
        print("fault report: terminate mid-transaction killed \(kills.value) backends")
        #expect(kills.value > 0, "the fault hit no transaction")
        workload.expectGuarantees(report)
        // Sessions ended on a healthy server are the connections' failures, not the server's.
        #expect(report.breakerRejections == 0, "terminated sessions opened the breaker: \(report)")
        #expect(workload.db.circuitBreaker.metrics.transitions == 0, "\(report)")
    }

    @Test(.timeLimit(.minutes(2)), arguments: BreakerProfile.allCases)
    func aStoppedAndRestartedServerCostsFastErrorsThenRecovers(breaker: BreakerProfile) async throws {
        let url = try FaultServers.url("RELIABLEDB_TEST_FAULT_POSTGRES_URL")
        let workload = try FaultWorkload(fault: "server stopped 2 s", url: url, settings: .init(breaker: breaker))
        var observer = try await Observer.connect(try FaultServers.url("RELIABLEDB_TEST_FAULT_POSTGRES_URL"))
        try await workload.setUp(observer)
        try await observer.close()
        do {
            try await workload.run {
                try await Task.sleep(for: .milliseconds(500))
                // fast, not immediate: the test server runs with synchronous_commit = off, so a
                // crash would lose acknowledged commits by configuration, not by our doing.
                try await FaultServers.controlOutageServer("stop", "fast")
                try await Task.sleep(for: .seconds(2))
                try await FaultServers.controlOutageServer("start")
            }
        } catch {
            try? await FaultServers.controlOutageServer("start")
            throw error
        }
        observer = try await Observer.connect(try FaultServers.url("RELIABLEDB_TEST_FAULT_POSTGRES_URL"))
        let report = try await workload.finish(observer, applicationName: url.applicationName)
        try await observer.close()
        #expect(report.otherFailures > 0, "the outage was felt: \(report)")
        workload.expectGuarantees(report)
    }
}

final class KillCounter: Sendable {
    private let count = Mutex(0)
    func add(_ value: Int) { count.withLock { $0 += max(0, value) } }
    var value: Int { count.withLock { $0 } }
}
