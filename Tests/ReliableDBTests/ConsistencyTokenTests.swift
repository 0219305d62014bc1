import PropertyBased
import Testing

@testable import ReliableDB

/// The read-your-writes token over its whole range: every position survives the round trip, its
/// order is the LSN's within one history, and positions of different histories never cover each
/// other (Sources/ReliableDB/Documentation.docc/ReadYourWrites.md).
@Suite("Consistency tokens")
struct ConsistencyTokenTests {
    /// LSNs with the edges (0, one segment, the 32-bit boundary, the maximum) often.
    static let lsns = zip(Gen.int(in: 0...4), Gen.uint64(in: 0...UInt64.max)).map { pick, uniform -> UInt64 in
        switch pick {
        case 0: 0
        case 1: 0xFFFF_FFFF
        case 2: 0x1_0000_0000
        case 3: .max
        default: uniform
        }
    }
    static let timelines = zip(Gen.int(in: 0...2), Gen.int(in: 1...Int(Int32.max))).map { pick, uniform in
        pick == 0 ? 1 : pick == 1 ? Int(Int32.max) : uniform
    }
    static let systems = Gen.uint64(in: 1...UInt64.max).map { String($0) }

    @Test func everyPositionSurvivesTheTokenAndPostgreSQLsText() async {
        await propertyCheck(count: 1_000, input: Self.systems, Self.timelines, Self.lsns) { system, timeline, lsn in
            let position = WALPosition(systemIdentifier: system, timeline: timeline, lsn: lsn)
            #expect(WALPosition(token: position.token) == position)
            #expect(WALPosition.lsn(parsing: position.lsnText) == lsn)
            #expect(ConsistencySession(token: position.token).token == position.token)
        }
    }

    @Test func aSessionOnlyMovesForwardWithinAHistoryAndFollowsANewOne() async {
        await propertyCheck(count: 1_000, input: Self.lsns, Self.lsns, Self.timelines) { a, b, timeline in
            let first = WALPosition(systemIdentifier: "7", timeline: timeline, lsn: a)
            let second = WALPosition(systemIdentifier: "7", timeline: timeline, lsn: b)
            let session = ConsistencySession(token: first.token)
            session.advance(to: second)
            #expect(session.position?.lsn == max(a, b))
            #expect(second.covers(first) == (b >= a))
            // After a failover (another timeline) the newer history replaces the old.
            let promoted = WALPosition(
                systemIdentifier: "7",
                timeline: timeline == Int(Int32.max) ? 1 : timeline + 1,
                lsn: 0
            )
            session.advance(to: promoted)
            #expect(session.position == promoted)
            #expect(!promoted.covers(first) || first.timeline == promoted.timeline)
        }
    }

    @Test(arguments: [
        "", "rdb1", "rdb1.1.1", "rdb2.1.1.0/0", "rdb1.x.1.0/0", "rdb1.1.0.0/0", "rdb1.1.-1.0/0",
        "rdb1.1.1.zz", "rdb1.1.1.1/2/3", "rdb1.1.1.123456789/0", "rdb1.123456789012345678901.1.0/0",
    ])
    func anythingElseIsNoPosition(token: String) {
        #expect(WALPosition(token: token) == nil)
        #expect(ConsistencySession(token: token).position == nil)
    }
}
