import Foundation
import GRDB
import GRDBSQLite
import ReliableDB
import Synchronization

/// The embedded default backend: a GRDB `DatabasePool` (WAL mode, one writer, concurrent readers).
///
/// Timeouts stop the work because GRDB turns task cancellation into `sqlite3_interrupt`: the
/// running statement ends within milliseconds and the connection goes back to the pool ready for
/// the next caller. Admission gates in front of the pool make waiting cancellable, bounded by the
/// pool timeout, and visible in ``poolStatistics()``.
public final class SQLiteBackend: DatabaseBackend {
    /// The GRDB pool, for work outside the pipeline (migrations, tooling).
    public let pool: DatabasePool
    public let path: String
    public let poolTimeout: Duration
    private let readers: ConnectionGate
    private let writer: ConnectionGate
    private let counters = CounterBox()
    private let instruments = Mutex<ReliabilityInstruments?>(nil)

    private struct Counters {
        var opened = 0
        var closed = 0
        var acquireTimeouts = 0
        var isShutDown = false
        var acquisitions = 0
        var acquireNanoseconds: Int64 = 0
        var maxAcquireNanoseconds: Int64 = 0
    }

    /// Shared with GRDB's `prepareDatabase` hook, which counts connections as they open.
    private final class CounterBox: Sendable {
        let state = Mutex(Counters())

        func withLock<R>(_ body: (inout Counters) -> R) -> R {
            state.withLock { body(&$0) }
        }
    }

    /// Opens (creating if needed) the SQLite file at `path`.
    ///
    /// - Parameters:
    ///   - connectionLimit: reader connections (`DB_CONNECTION_LIMIT`); one writer comes on top.
    ///   - poolTimeout: the longest wait for a connection (`DB_POOL_TIMEOUT`).
    ///   - busyTimeout: how long SQLite itself waits on a lock held by another process before
    ///     reporting `SQLITE_BUSY`, which the pipeline then retries with backoff.
    public init(
        path: String,
        connectionLimit: Int = 10,
        poolTimeout: Duration = .seconds(10),
        busyTimeout: Duration = .seconds(1),
        clock: any ReliabilityClock = SystemClock()
    ) throws {
        let counters = self.counters
        var configuration = Configuration()
        configuration.label = "reliabledb"
        configuration.maximumReaderCount = connectionLimit
        configuration.busyMode = .timeout(busyTimeout.seconds)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA foreign_keys = ON")
            counters.withLock { $0.opened += 1 }
        }
        self.pool = try DatabasePool(path: path, configuration: configuration)
        self.path = path
        self.poolTimeout = poolTimeout
        readers = ConnectionGate(capacity: connectionLimit, clock: clock)
        writer = ConnectionGate(capacity: 1, clock: clock)
    }

    public var backendName: String { "sqlite" }

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
        through gate: ConnectionGate,
        attempt: AttemptContext,
        _ body: () async throws -> T
    ) async throws -> T {
        let waitStart = ContinuousClock.now
        do {
            try await gate.acquire(timeout: poolTimeout, attempt: attempt)
        } catch is GateTimeout {
            counters.withLock { $0.acquireTimeouts += 1 }
            throw DatabasePoolTimeoutError(waited: ContinuousClock.now - waitStart, statistics: poolStatistics())
        }
        let waited = (ContinuousClock.now - waitStart).nanosecondsClamped
        counters.withLock {
            $0.acquisitions += 1
            $0.acquireNanoseconds &+= waited
            $0.maxAcquireNanoseconds = max($0.maxAcquireNanoseconds, waited)
        }
        instruments.withLock { $0 }?.poolAcquireDuration.recordNanoseconds(waited)
        defer { gate.release() }
        return try await body()
    }

    public func poolStatistics() -> PoolStatistics {
        let counters = counters.withLock { $0 }
        let active = readers.inUse + writer.inUse
        let total = counters.isShutDown ? 0 : max(counters.opened - counters.closed, active)
        return PoolStatistics(
            total: total,
            active: active,
            idle: total - active,
            waiting: readers.waiting + writer.waiting,
            max: readers.capacity + writer.capacity,
            opened: counters.opened,
            closed: counters.closed,
            connectFailures: 0,
            acquireTimeouts: counters.acquireTimeouts,
            averageAcquireTime: .nanoseconds(counters.acquireNanoseconds / Int64(max(1, counters.acquisitions))),
            maxAcquireTime: .nanoseconds(counters.maxAcquireNanoseconds)
        )
    }

    public func probe(within attempt: AttemptContext) async throws -> ProbeResult {
        let start = ContinuousClock.now
        let version = try await read(within: attempt) { db in
            try String.fetchOne(db, sql: "SELECT sqlite_version()") ?? "unknown"
        }
        return ProbeResult(serverVersion: "SQLite \(version)", roundTrip: ContinuousClock.now - start)
    }

    public func shutdown() async throws {
        try pool.close()
        counters.withLock {
            $0.closed = $0.opened
            $0.isShutDown = true
        }
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
        case is RecordError:
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

/// A SQLite handle carried to the deadline scheduler's thread. `sqlite3_interrupt` is the one
/// SQLite call documented as safe from any thread, and the scheduler only calls it while the
/// statement's closure is still running.
private struct UnsafeConnection: @unchecked Sendable {
    let handle: OpaquePointer?

    func interrupt() {
        if let handle { sqlite3_interrupt(handle) }
    }
}
