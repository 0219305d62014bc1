import Foundation
import Logging
import PostgresNIO
import ReliableDB
import ReliableDBPostgres
import Testing

/// Load shedding under 10 times the pool's capacity, against the real server: admitted operations
/// keep their unloaded latency, shed ones are answered at once, and nothing waits out the pool
/// timeout. Runs with the fault suite, alone, since it measures latency.
@Suite("Load shedding at 10x the pool's capacity", .serialized)
struct LoadSheddingLoadTests {
    static let pool = 4
    static let logger = Logger(label: "test.load-shedding")

    struct Run {
        var admitted: [Duration] = []
        var shed: [Duration] = []
        var poolTimeouts = 0
        var timeouts = 0
        var otherErrors: [String] = []

        static func percentile(_ values: [Duration], _ p: Double) -> Duration {
            guard !values.isEmpty else { return .zero }
            let sorted = values.sorted()
            return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p / 100))]
        }

        var summary: String {
            func ms(_ d: Duration) -> String { String(format: "%.2f ms", d.milliseconds) }
            return
                "admitted \(admitted.count) (p50 \(ms(Self.percentile(admitted, 50))), p99 \(ms(Self.percentile(admitted, 99)))),"
                + " shed \(shed.count) (p99 \(ms(Self.percentile(shed, 99))), max \(ms(shed.max() ?? .zero))),"
                + " pool timeouts \(poolTimeouts), deadline timeouts \(timeouts), other \(otherErrors.count)"
        }
    }

    /// `callers` closed-loop callers of a 10 ms statement for `length`.
    static func load(
        _ db: ReliableDatabase<PostgresBackend>,
        callers: Int,
        for length: Duration
    ) async throws -> Run {
        let end = ContinuousClock.now + length
        let runs = try await withThrowingTaskGroup(of: Run.self) { group in
            for _ in 0..<callers {
                group.addTask {
                    var run = Run()
                    while ContinuousClock.now < end {
                        let start = ContinuousClock.now
                        do {
                            try await db.query(.read("order-lookup")) { connection in
                                _ = try await connection.query("SELECT pg_sleep(0.01)", logger: logger).collect()
                            }
                            run.admitted.append(ContinuousClock.now - start)
                        } catch is DatabaseOverloadedError {
                            run.shed.append(ContinuousClock.now - start)
                            // A client told "overloaded" backs off a little, as a 503 tells it to.
                            try await Task.sleep(for: .milliseconds(5))
                        } catch is DatabasePoolTimeoutError {
                            run.poolTimeouts += 1
                        } catch is DatabaseTimeoutError {
                            run.timeouts += 1
                        } catch {
                            run.otherErrors.append("\(error)")
                        }
                    }
                    return run
                }
            }
            return try await group.reduce(into: [Run]()) { $0.append($1) }
        }
        return runs.reduce(into: Run()) { total, run in
            total.admitted += run.admitted
            total.shed += run.shed
            total.poolTimeouts += run.poolTimeouts
            total.timeouts += run.timeouts
            total.otherErrors += run.otherErrors
        }
    }

    static func open(shedding: Bool) throws -> ReliableDatabase<PostgresBackend> {
        let url = try FaultServers.url()
        let backend = try PostgresBackend(url: url, connectionLimit: pool, poolTimeout: .seconds(2))
        return try ReliableDatabase(
            backend: backend,
            configuration: .init(
                timeouts: .init(query: .seconds(3)),
                loadShedding: .init(enabled: shedding, maxConcurrent: pool)
            )
        )
    }

    @Test(.timeLimit(.minutes(2)))
    func admittedOperationsKeepTheirLatencyAndShedOnesAreAnsweredAtOnce() async throws {
        let db = try Self.open(shedding: true)
        _ = try await Self.load(db, callers: Self.pool, for: .seconds(1))  // warm-up: the pool's connections
        let unloaded = try await Self.load(db, callers: Self.pool, for: .seconds(2))
        let loaded = try await Self.load(db, callers: Self.pool * 10, for: .seconds(3))
        let snapshot = db.loadShedding
        try await db.shutdown()

        let plain = try Self.open(shedding: false)
        _ = try await Self.load(plain, callers: Self.pool, for: .seconds(1))
        let unshed = try await Self.load(plain, callers: Self.pool * 10, for: .seconds(3))
        try await plain.shutdown()

        print("fault report: load shedding: unloaded (\(Self.pool) callers): \(unloaded.summary)")
        print(
            "fault report: load shedding: 10x (\(Self.pool * 10) callers), shedding: \(loaded.summary); \(snapshot.map { "\($0)" } ?? "")"
        )
        print("fault report: load shedding: 10x without shedding (the pool queues): \(unshed.summary)")

        let unloadedP99 = Run.percentile(unloaded.admitted, 99)
        let loadedP99 = Run.percentile(loaded.admitted, 99)
        #expect(unloaded.admitted.count > 100)
        #expect(loaded.shed.count > 100, "the overload was shed")
        #expect(loadedP99 <= unloadedP99 * 2, "admitted p99 \(loadedP99) against unloaded \(unloadedP99)")
        #expect(Run.percentile(loaded.shed, 99) <= .milliseconds(1), "shed answers: \(loaded.summary)")
        #expect(loaded.poolTimeouts == 0 && loaded.timeouts == 0, "nothing waited out a timeout: \(loaded.summary)")
        #expect(loaded.otherErrors.isEmpty, "\(loaded.otherErrors.prefix(3))")
    }
}
