import ReliableDB
import Synchronization

/// An error whose class the test chooses.
struct ClassifiedError: Error, Equatable {
    var errorClass: ErrorClass
    var mayHaveReachedServer = false
}

/// A backend with no database behind it, reporting whatever pool numbers the test sets: the
/// exporter only reads the pipeline's snapshot, so a real database adds nothing here.
final class TestBackend: DatabaseBackend {
    private let pool: Mutex<PoolStatistics>

    init(pool: PoolStatistics = PoolStatistics(max: 1)) {
        self.pool = Mutex(pool)
    }

    var backendName: String { "test" }

    func classify(_ error: any Error) -> ErrorClassification {
        if let error = error as? ClassifiedError {
            return ErrorClassification(error.errorClass, mayHaveReachedServer: error.mayHaveReachedServer)
        }
        return ErrorClassification(.caller)
    }

    func poolStatistics() -> PoolStatistics { pool.withLock { $0 } }

    func setPoolStatistics(_ statistics: PoolStatistics) {
        pool.withLock { $0 = statistics }
    }

    func probe(within attempt: AttemptContext) async throws -> ProbeResult {
        ProbeResult(serverVersion: "test", roundTrip: .zero)
    }

    func shutdown() async throws {}
}
