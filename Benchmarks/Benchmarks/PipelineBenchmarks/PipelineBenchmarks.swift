import Benchmark
import BenchmarkSupport
import ReliableDB

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal, .throughput],
        scalingFactor: .kilo,
        maxDuration: .seconds(3),
        maxIterations: 1_000_000
    )

    Benchmark("Breaker permit, closed (acquire + record success)") { benchmark in
        let breaker = CircuitBreaker()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            guard case .permitted(let permit) = breaker.acquire() else { fatalError("breaker should be closed") }
            breaker.record(permit, outcome: .success, duration: .microseconds(10))
        }
    }

    Benchmark("Breaker rejection, open") { benchmark in
        let breaker = CircuitBreaker()
        breaker.forceState(.forcedOpen)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            guard case .rejected = breaker.acquire() else { fatalError("breaker should be open") }
        }
    }

    Benchmark("Pipeline, no-op operation, timeouts off") { benchmark in
        let db = try ReliableDatabase(
            backend: NoopBackend(),
            configuration: ReliabilityConfiguration(timeouts: TimeoutConfiguration(enabled: false))
        )
        let options = OperationOptions("noop")
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(try await db.execute(options) { _ in 1 })
        }
    }

    Benchmark("Pipeline, no-op operation, with deadline") { benchmark in
        let db = try ReliableDatabase(backend: NoopBackend())
        let options = OperationOptions("noop")
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(try await db.execute(options) { _ in 1 })
        }
    }

    Benchmark("Pipeline rejection, breaker open") { benchmark in
        let db = try ReliableDatabase(backend: NoopBackend())
        db.circuitBreaker.forceState(.forcedOpen)
        let options = OperationOptions("noop")
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            do {
                _ = try await db.execute(options) { _ in 1 }
            } catch {
                blackHole(error)
            }
        }
    }
}
