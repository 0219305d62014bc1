import Testing

@testable import ReliableDB

@Suite("Timeouts per operation kind")
struct TimeoutConfigurationTests {
    @Test func eachKindHasItsOwnOverridableDefault() {
        var timeouts = TimeoutConfiguration()
        #expect(timeouts.timeout(for: .init("q")) == .seconds(10))
        #expect(timeouts.timeout(for: .init("t", kind: .transaction)) == .seconds(30))
        #expect(timeouts.timeout(for: .healthCheck) == .seconds(3))
        #expect(timeouts.timeout(for: .complexQuery("analytics", table: "users")) == .seconds(45))
        timeouts[.migration] = .seconds(900)
        #expect(timeouts.timeout(for: .init("m", kind: .migration)) == .seconds(900))
        #expect(timeouts.timeout(for: .init("q", timeout: .milliseconds(250))) == .milliseconds(250))
    }

    @Test func batchTimeoutsScaleWithTheCountAndAreCapped() {
        let timeouts = TimeoutConfiguration()
        let options = OperationOptions.batchOperation(.batchInsert, count: 1000, table: "orders")
        #expect(options.name == "batchInsert-orders")
        #expect(options.kind == .batchInsert)
        #expect(timeouts.timeout(for: options) == .seconds(70))
        #expect(timeouts.timeout(for: .batchOperation(.batchDelete, count: 0, table: "o")) == .seconds(60))
        #expect(timeouts.timeout(for: .batchOperation(.batchUpdate, count: 10_000_000, table: "o")) == .seconds(300))
    }

    @Test func disabledTimeoutsSetNoDeadline() {
        let timeouts = TimeoutConfiguration(enabled: false)
        #expect(timeouts.timeout(for: .init("q")) == nil)
        #expect(timeouts.timeout(for: .init("q", timeout: .seconds(1))) == nil)
    }
}
