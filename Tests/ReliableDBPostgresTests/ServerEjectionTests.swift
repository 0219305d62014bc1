import ReliableDB
import Testing

@testable import ReliableDBPostgres

/// Outlier ejection of the servers of a multi-host URL, on instants given by the test.
@Suite("Server ejection")
struct ServerEjectionTests {
    let t0 = MonotonicTime(nanoseconds: 1_000_000_000)

    @Test func aFailingServerIsTriedLastForAGrowingTimeAndFirstAgainOnceItAnswers() {
        var ejection = ServerEjection(count: 3)
        #expect(ejection.walkOrder([0, 1, 2], at: t0) == [0, 1, 2])
        ejection.failed(0, outcome: "refused", at: t0)
        #expect(ejection.walkOrder([0, 1, 2], at: t0) == [1, 2, 0])
        #expect(ejection.walkOrder([0, 1, 2], at: t0 + .seconds(1)) == [0, 1, 2], "back after 1 s")
        ejection.failed(0, outcome: "refused", at: t0 + .seconds(1))
        #expect(ejection.isEjected(0, at: t0 + .seconds(2)))
        #expect(!ejection.isEjected(0, at: t0 + .seconds(3)), "2 s the second time")
        for _ in 0..<20 { ejection.failed(0, outcome: "refused", at: t0) }
        #expect(ejection.isEjected(0, at: t0 + .seconds(29)))
        #expect(!ejection.isEjected(0, at: t0 + .seconds(30)), "never more than 30 s")
        ejection.reached(0, role: ServerRole(inRecovery: false, readOnly: false), outcome: "is a read-write primary")
        #expect(ejection.walkOrder([0, 1, 2], at: t0) == [0, 1, 2], "an answer brings it back at once")
        #expect(ejection.servers[0].failures == 0)
    }

    @Test func whenEveryServerIsEjectedAllAreTriedSoonestBackFirst() {
        var ejection = ServerEjection(count: 3)
        ejection.failed(0, outcome: "refused", at: t0)
        ejection.failed(0, outcome: "refused", at: t0)  // 2 s
        ejection.failed(1, outcome: "refused", at: t0)  // 1 s
        ejection.failed(2, outcome: "refused", at: t0 + .milliseconds(500))  // until t0 + 1.5 s
        #expect(ejection.walkOrder([0, 1, 2], at: t0 + .milliseconds(600)) == [1, 2, 0])
    }

    /// 20 seeded runs of 500 random events: the walk holds every server once, the ejected ones
    /// after all the others, and an ejection never lasts longer than the maximum.
    @Test func randomSequencesKeepTheInvariants() {
        for seed in 1...20 {
            var random = SplitMix64(seed: UInt64(seed))
            let count = Int(random.next() % 4) + 1
            var ejection = ServerEjection(count: count)
            var now = t0
            for _ in 0..<500 {
                let index = Int(random.next() % UInt64(count))
                switch random.next() % 3 {
                case 0: ejection.failed(index, outcome: "refused", at: now)
                case 1: ejection.reached(index, role: nil, outcome: "answered")
                default: now = now + .milliseconds(Int64(random.next() % 5_000))
                }
                let order = Array(0..<count).shuffled(using: &random)
                let walk = ejection.walkOrder(order, at: now)
                #expect(walk.count == order.count && Set(walk) == Set(order))
                let firstEjected = walk.firstIndex { ejection.isEjected($0, at: now) } ?? walk.count
                #expect(walk[firstEjected...].allSatisfy { ejection.isEjected($0, at: now) })
                for server in ejection.servers {
                    if let until = server.ejectedUntil { #expect(until - now <= .seconds(30)) }
                }
            }
        }
    }
}

/// Which URLs give reads a standby, and when.
@Suite("Standby reads by URL")
struct StandbyReadsTests {
    static func url(_ query: String, hosts: String = "db1:5432,db2:5432") throws -> PostgresURL {
        try PostgresURL.parse("postgres://app:pw@\(hosts)/erp?\(query)").get()
    }

    @Test func oneServerHasNone() throws {
        let url = try Self.url("standby_reads=true", hosts: "db1:5432")
        #expect(PostgresBackend.standbyReads(for: url) == .unavailable)
    }

    @Test(arguments: PostgresURL.TargetSessionAttributes.allCases)
    func aFallbackWhereTheWalkLooksForAPrimaryAlwaysWithStandbyReads(
        target: PostgresURL.TargetSessionAttributes
    ) throws {
        let fallback = PostgresBackend.standbyReads(for: try Self.url("target_session_attrs=\(target.rawValue)"))
        #expect(fallback == ([.any, .readWrite, .primary].contains(target) ? .onFallback : .unavailable))
        let always = PostgresBackend.standbyReads(
            for: try Self.url("target_session_attrs=\(target.rawValue)&standby_reads=true")
        )
        #expect(always == .always)
    }
}
