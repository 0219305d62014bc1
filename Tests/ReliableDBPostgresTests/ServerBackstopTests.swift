import ReliableDB
import ReliableDBTesting
import Testing

@testable import ReliableDBPostgres

/// The server-side backstop's one rule, over the whole range of settings and deadlines.
@Suite("Server-side statement_timeout and idle_in_transaction_session_timeout backstop")
struct ServerBackstopTests {
    @Test func theDefaultsGiveTheLongestDefaultTimeoutPlusFiveSeconds() {
        #expect(ServerBackstop.duration(for: TimeoutConfiguration()) == .seconds(305))
        #expect(PostgresBackend.defaultStatementTimeout == .seconds(305))
        #expect(ServerBackstop.duration(for: TimeoutConfiguration(enabled: false)) == nil)
        // The batch cap counts when it is the longest.
        #expect(ServerBackstop.duration(for: TimeoutConfiguration(batchCap: .seconds(900))) == .seconds(905))
    }

    @Test func everyStatementGetsAtLeastItsDeadlinePlusTheMarginAndNoSessionSettingBehindPgBouncer() {
        var random = SystemRandomNumberGenerator()
        let clock = ManualClock()
        for _ in 0..<2_000 {
            let connectionDefault: Duration? =
                Bool.random(using: &random) ? nil : .milliseconds(Int64.random(in: 1...1_000_000, using: &random))
            let perTransactionOnly = Bool.random(using: &random)
            let backstop = ServerBackstop(connectionDefault: connectionDefault, perTransactionOnly: perTransactionOnly)
            let remaining: Duration? =
                Bool.random(using: &random) ? nil : .milliseconds(Int64.random(in: 0...2_000_000, using: &random))
            let attempt = AttemptContext(scheduler: nil, attempt: 1, deadline: remaining.map { clock.now + $0 })
            let needed = backstop.statementTimeout(within: attempt, now: clock.now)
            let session = backstop.setForSession(within: attempt, now: clock.now)
            let local = backstop.setLocal(within: attempt, now: clock.now)
            guard let connectionDefault else {
                // No backstop configured: nothing is ever set.
                #expect(needed == nil && session == nil && local == nil && backstop.startupParameters.isEmpty)
                continue
            }
            // What a statement gets: the connection's setting or the raised one.
            let effective = needed ?? connectionDefault
            #expect(effective >= connectionDefault)
            if let remaining { #expect(effective >= remaining + ServerBackstop.margin) }
            if perTransactionOnly {
                // A session setting would stay on a server connection other clients share.
                #expect(session == nil && backstop.startupParameters.isEmpty)
                #expect(local != nil)
            } else {
                #expect(local == nil, "the lease's setting covers its transactions")
                #expect((session != nil) == (needed != nil))
                #expect(
                    backstop.startupParameters.map(\.0) == ["statement_timeout", "idle_in_transaction_session_timeout"]
                )
                #expect(backstop.startupParameters.allSatisfy { $0.1 == backstop.startupParameters[0].1 })
            }
        }
    }

    @Test func aZeroOrSubMillisecondBackstopNeverDisablesTheServersTimeout() {
        // statement_timeout = 0 means "no timeout" to PostgreSQL.
        let backstop = ServerBackstop(connectionDefault: .microseconds(10), perTransactionOnly: false)
        #expect(backstop.startupParameters.map(\.1) == ["1", "1"])
    }
}
