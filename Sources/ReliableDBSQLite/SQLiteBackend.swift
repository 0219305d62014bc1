import Foundation
import GRDB
import GRDBSQLite
import ReliableDB
import ReliableDBPool
import Synchronization

/// The embedded default backend: a GRDB `DatabasePool` (WAL mode, one writer, concurrent readers).
///
/// Timeouts stop the work because GRDB turns task cancellation into `sqlite3_interrupt`: the
/// running statement ends within milliseconds and the connection goes back to the pool ready for
/// the next caller. Admission in front of the pool (one lease-and-deadline state machine for the
/// readers, one for the writer, the same machine the PostgreSQL pool runs on) makes waiting
/// cancellable, bounded by the pool timeout, and visible in ``poolStatistics()``.
public final class SQLiteBackend: DatabaseBackend {
    /// The GRDB pool, for work outside the pipeline (migrations, tooling).
    public let pool: DatabasePool
    public let path: String
    public let poolTimeout: Duration
    private let readers: AdmissionPool
    private let writer: AdmissionPool
    private let clock: any ReliabilityClock
    private let instruments = Mutex<ReliabilityInstruments?>(nil)

    /// Opens (creating if needed) the SQLite file at `path`.
    ///
    /// - Parameters:
    ///   - connectionLimit: reader connections (`DB_CONNECTION_LIMIT`); one writer comes on top.
    ///   - poolTimeout: the longest wait for a connection (`DB_POOL_TIMEOUT`).
    ///   - busyTimeout: how long SQLite itself waits on a lock held by another process before
    ///     reporting `SQLITE_BUSY`, which the pipeline then retries with backoff.
    ///   - clock: the time pool waits are measured and bounded on (the pipeline's clock).
    public init(
        path: String,
        connectionLimit: Int = 10,
        poolTimeout: Duration = .seconds(10),
        busyTimeout: Duration = .seconds(1),
        clock: any ReliabilityClock = SystemClock()
    ) throws {
        var configuration = Configuration()
        configuration.label = "reliabledb"
        configuration.maximumReaderCount = connectionLimit
        configuration.busyMode = .timeout(busyTimeout.seconds)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        self.pool = try DatabasePool(path: path, configuration: configuration)
        self.path = path
        self.poolTimeout = poolTimeout
        self.clock = clock
        readers = AdmissionPool(limit: connectionLimit, poolTimeout: poolTimeout, clock: clock)
        // GRDB opens its writer connection at once; so does the writer's slot.
        writer = AdmissionPool(limit: 1, poolTimeout: poolTimeout, clock: clock, openSlots: 1)
    }

    public var backendName: String { "sqlite" }

    /// `db.namespace` is the file's name, not its whole path.
    public var spanTarget: DatabaseSpanTarget {
        DatabaseSpanTarget(system: "sqlite", namespace: URL(fileURLWithPath: path).lastPathComponent)
    }

    /// The SQLite extended result code (5 is SQLITE_BUSY), as the conventions ask.
    public func statusCode(of error: any Error) -> String? {
        (error as? DatabaseError).map { String($0.extendedResultCode.rawValue) }
    }

    /// Runs `body` on a reader connection in a read-only transaction, interrupting the running
    /// statement when the attempt's deadline passes.
    public func read<T: Sendable>(
        within attempt: AttemptContext = .unbounded,
        _ body: @Sendable (Database) throws -> T
    ) async throws -> T {
        try await admitted(through: readers, attempt: attempt) {
            try await pool.read { db in
                try Self.interruptible(db, attempt: attempt, body)
            }
        }
    }

    /// Runs `body` on the writer connection inside one transaction (rolled back when it throws or
    /// is interrupted at the deadline).
    public func write<T: Sendable>(
        within attempt: AttemptContext = .unbounded,
        _ body: @Sendable (Database) throws -> T
    ) async throws -> T {
        try await admitted(through: writer, attempt: attempt) {
            try await pool.write { db in
                try Self.interruptible(db, attempt: attempt, body)
            }
        }
    }

    private static func interruptible<T>(
        _ db: Database,
        attempt: AttemptContext,
        _ body: (Database) throws -> T
    ) throws -> T {
        let connection = UnsafeConnection(handle: db.sqliteConnection)
        return try attempt.withInterrupt({ connection.interrupt() }) {
            try body(db)
        }
    }

    private func admitted<T: Sendable>(
        through gate: AdmissionPool,
        attempt: AttemptContext,
        _ body: () async throws -> T
    ) async throws -> T {
        let start = clock.now
        let admission: Admission
        do {
            admission = try await gate.admit(within: attempt)
        } catch let failure as AdmissionFailure {
            switch failure {
            case .poolTimeout:
                throw DatabasePoolTimeoutError(waited: clock.now - start, statistics: poolStatistics())
            case .deadline:
                throw AttemptDeadlineExceeded()
            case .cancelled:
                throw CancellationError()
            case .shutDown:
                throw SQLiteShutDownError(path: path)
            }
        }
        defer { gate.release(admission) }
        instruments.withLock { $0 }?.poolAcquireDuration.recordNanoseconds(admission.waited.nanosecondsClamped)
        return try await body()
    }

    /// Recounted from the admission state machines: `total` is the open slots (GRDB opens its
    /// connections on the same demand: the writer at once, a reader when every open one is busy),
    /// `active` the slots in use and `waiting` the queued callers, all read under their locks.
    public func poolStatistics() -> PoolStatistics {
        let readerLimit = self.readers.limit
        let writerLimit = self.writer.limit
        let readers = self.readers.statistics()
        let writer = self.writer.statistics()
        let acquisitions = readers.granted + writer.granted
        return PoolStatistics(
            total: readers.open + writer.open,
            active: readers.active + writer.active,
            idle: readers.idle + readers.keepAlive + writer.idle + writer.keepAlive,
            waiting: readers.waiting + writer.waiting,
            max: readerLimit + writerLimit,
            opened: readers.opened + writer.opened,
            closed: readers.closed + writer.closed,
            connectFailures: 0,
            acquireTimeouts: readers.acquireTimeouts + writer.acquireTimeouts,
            averageAcquireTime: .nanoseconds(
                (readers.acquireWaitNanoseconds &+ writer.acquireWaitNanoseconds) / Int64(max(1, acquisitions))
            ),
            maxAcquireTime: .nanoseconds(max(readers.maxAcquireWaitNanoseconds, writer.maxAcquireWaitNanoseconds))
        )
    }

    public func probe(within attempt: AttemptContext) async throws -> ProbeResult {
        let start = ContinuousClock.now
        let version = try await read(within: attempt) { db in
            try String.fetchOne(db, sql: "SELECT sqlite_version()") ?? "unknown"
        }
        return ProbeResult(serverVersion: "SQLite \(version)", roundTrip: ContinuousClock.now - start)
    }

    /// Fails the callers waiting for a connection, admits no one any more, waits for the
    /// operations under way to finish, and closes the connections.
    public func shutdown() async throws {
        readers.shutdown()
        writer.shutdown()
        // Suspended here rather than blocked in GRDB's close, which would hold a cooperative
        // thread until the last statement ends.
        await readers.waitUntilShutDown()
        await writer.waitUntilShutDown()
        try pool.close()
    }

    public func attach(_ instruments: ReliabilityInstruments) {
        self.instruments.withLock { $0 = instruments }
    }

    public func classify(_ error: any Error) -> ErrorClassification {
        switch error {
        case let error as DatabaseError:
            return ErrorClassification(Self.errorClass(of: error.resultCode))
        case is CancellationError:
            return ErrorClassification(.cancelled)
        case is RecordError, is SQLiteShutDownError:
            return ErrorClassification(.caller)
        default:
            // An error the caller's closure threw itself says nothing about the database.
            return ErrorClassification(.caller)
        }
    }

    /// The pipeline's class for a SQLite result code; also used to classify a plain GRDB pool's
    /// errors the same way (the load tester's raw mode).
    public static func errorClass(of code: ResultCode) -> ErrorClass {
        switch code.primaryResultCode {
        case .SQLITE_BUSY, .SQLITE_LOCKED:
            .transientTransaction
        case .SQLITE_CONSTRAINT, .SQLITE_ERROR, .SQLITE_MISMATCH, .SQLITE_RANGE, .SQLITE_TOOBIG, .SQLITE_READONLY,
            .SQLITE_AUTH, .SQLITE_MISUSE:
            .caller
        case .SQLITE_INTERRUPT:
            .cancelled
        case .SQLITE_CANTOPEN, .SQLITE_IOERR, .SQLITE_PROTOCOL:
            .connection
        case .SQLITE_NOMEM, .SQLITE_FULL:
            .overload
        default:
            .fatal
        }
    }
}

/// A SQLite handle carried to the deadline alarm's queue. `sqlite3_interrupt` is the one
/// SQLite call documented as safe from any thread, and the scheduler only calls it while the
/// statement's closure is still running.
private struct UnsafeConnection: @unchecked Sendable {
    let handle: OpaquePointer?

    func interrupt() {
        if let handle { sqlite3_interrupt(handle) }
    }
}

/// The backend was shut down: no operation is admitted any more.
public struct SQLiteShutDownError: Error, CustomStringConvertible, Sendable {
    public var path: String

    public init(path: String) {
        self.path = path
    }

    public var description: String {
        "The SQLite database at \(path) is shut down; no operation runs after shutdown()"
    }
}
