import ReliableDBTesting
import Testing

@testable import ReliableDB

/// `withFallback`: a failing read answers with its last good result no older than the bound,
/// marked degraded and counted; the caller's own errors never degrade.
@Suite("Read fallback (graceful degradation)")
struct ReadFallbackTests {
    struct Broken: Error {}

    @Test func aFailingReadServesItsLastGoodResultUntilItIsTooOld() async throws {
        let clock = ManualClock()
        let db = try ReliableDatabase(backend: ScriptedBackend(), clock: clock)
        let fallback = ReadFallback(key: "orders-42", maxAge: .seconds(60))
        let fresh = try await db.withFallback(fallback) { ["A-1", "A-2"] }
        #expect(!fresh.isDegraded && fresh.value == ["A-1", "A-2"])

        db.circuitBreaker.forceState(.forcedOpen)
        clock.advance(by: .seconds(12))
        let degraded = try await db.withFallback(fallback) {
            try await db.execute(.read("orders")) { _ in ["never"] }
        }
        #expect(degraded.value == ["A-1", "A-2"])
        #expect(degraded.degradation?.age == .seconds(12))
        #expect(degraded.degradation?.headerValue == "cached; age=12")
        #expect(degraded.degradation?.cause.contains("Circuit breaker") == true)
        #expect(db.metrics().degradedAnswers == 1)

        clock.advance(by: .seconds(49))
        await #expect(throws: DatabaseCircuitBreakerError.self, "61 s old: past the bound") {
            _ = try await db.withFallback(fallback) { try await db.execute(.read("orders")) { _ in ["never"] } }
        }
        await #expect(throws: DatabaseCircuitBreakerError.self, "another key has nothing kept") {
            _ = try await db.withFallback(ReadFallback(key: "orders-7", maxAge: .seconds(60))) {
                try await db.execute(.read("orders")) { _ in ["never"] }
            }
        }
    }

    @Test func theCallersOwnErrorsNeverDegrade() async throws {
        let db = try ReliableDatabase(backend: ScriptedBackend(), clock: ManualClock())
        let fallback = ReadFallback(key: "k", maxAge: .seconds(60))
        _ = try await db.withFallback(fallback) { 1 }
        await #expect(throws: Broken.self) {
            _ = try await db.withFallback(fallback) { () async throws -> Int in throw Broken() }
        }
        #expect(db.metrics().degradedAnswers == 0)
        #expect(
            ReliableDatabase<ScriptedBackend>.degrades(
                DatabaseOverloadedError(operation: "x", limit: 1, inFlight: 1, waited: .zero),
                .caller
            )
        )
    }

    @Test func keptResultsAreBounded() {
        let kept = LastGoodResults()
        for index in 0..<(LastGoodResults.capacity + 10) {
            kept.store(index, for: "key-\(index)", at: MonotonicTime(nanoseconds: Int64(index)))
        }
        #expect(kept.value(for: "key-0", as: Int.self) == nil, "the oldest went first")
        #expect(
            kept.value(for: "key-\(LastGoodResults.capacity + 9)", as: Int.self)?.value == LastGoodResults.capacity + 9
        )
    }
}
