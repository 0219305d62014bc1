import Foundation
import ReliableDB
import ReliableDBPostgres
import ReliableDBTestSupport
import Testing

/// Network faults between ReliableDB and a real PostgreSQL, through the fault proxy, under
/// concurrent reads and writes. Each test prints its `fault report:` line.
@Suite("Network faults through a TCP fault proxy", .serialized)
struct NetworkFaultTests {
    /// Runs `fault` against a workload that reaches the server through a fresh proxy.
    func run(
        _ name: String,
        settings: FaultWorkload.Settings,
        recoveryExpected: Bool = true,
        _ fault: (FaultProxy) async throws -> Void
    ) async throws -> FaultReport {
        let direct = try FaultServers.url()
        let proxy = try await FaultProxy.start(upstreamHost: direct.host, upstreamPort: direct.port)
        var viaProxy = direct
        viaProxy.port = proxy.port
        let workload = try FaultWorkload(fault: name, url: viaProxy, settings: settings)
        let observer = try await Observer.connect(direct)
        try await workload.setUp(observer)
        do {
            try await workload.run {
                try await Task.sleep(for: .milliseconds(500))  // steady state first
                try await fault(proxy)
                try await proxy.setMode(.pass)
            }
        } catch {
            try? await proxy.shutdown()
            throw error
        }
        let report = try await workload.finish(observer, applicationName: direct.applicationName)
        try await observer.close()
        try await proxy.shutdown()
        workload.expectGuarantees(report, recoveryExpected: recoveryExpected)
        return report
    }

    @Test(.timeLimit(.minutes(2)), arguments: BreakerProfile.allCases)
    func latencyKeepsEveryDeadline(breaker: BreakerProfile) async throws {
        let report = try await run("latency 150 ms", settings: .init(breaker: breaker)) { proxy in
            try await proxy.setMode(.latency(milliseconds: 150))
            try await Task.sleep(for: .seconds(3))
        }
        #expect(report.succeeded > 0)
    }

    /// A partition: connections stay open, bytes are held. Nothing can stop the statements, so
    /// callers must be released at their deadline and the connections thrown away.
    @Test(.timeLimit(.minutes(2)), arguments: BreakerProfile.allCases)
    func aBlackholeReleasesEveryCallerAtItsDeadline(breaker: BreakerProfile) async throws {
        let report = try await run("blackhole 3 s", settings: .init(breaker: breaker)) { proxy in
            try await proxy.setMode(.blackhole)
            try await Task.sleep(for: .seconds(3))
        }
        #expect(report.timedOut + report.otherFailures > 0, "the blackhole was felt: \(report)")
    }

    @Test(.timeLimit(.minutes(2)), arguments: BreakerProfile.allCases)
    func resetConnectionsAreReplaced(breaker: BreakerProfile) async throws {
        let report = try await run("reset x3", settings: .init(breaker: breaker)) { proxy in
            for _ in 0..<3 {
                try await proxy.setMode(.reset)
                try await Task.sleep(for: .milliseconds(100))
                try await proxy.setMode(.pass)
                try await Task.sleep(for: .milliseconds(500))
            }
        }
        #expect(report.succeeded > 0)
    }

    @Test(.timeLimit(.minutes(2)), arguments: BreakerProfile.allCases)
    func refusedConnectsFailFastAndRecover(breaker: BreakerProfile) async throws {
        let report = try await run("refuse 2 s", settings: .init(breaker: breaker)) { proxy in
            try await proxy.setMode(.reset)
            try await proxy.setMode(.refuse)
            try await Task.sleep(for: .seconds(2))
        }
        #expect(report.otherFailures > 0, "\(report)")
    }
}
