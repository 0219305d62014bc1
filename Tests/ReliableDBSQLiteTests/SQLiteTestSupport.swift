import Foundation
import GRDB
import ReliableDB
import ReliableDBSQLite

/// A real SQLite file in a fresh temporary directory, removed when the test ends.
final class TemporaryDatabaseFile: Sendable {
    let directory: URL
    var path: String { directory.appendingPathComponent("test.sqlite").path }

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("reliabledb-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    deinit {
        try? FileManager.default.removeItem(at: directory)
    }

    func open(
        connectionLimit: Int = 4,
        poolTimeout: Duration = .seconds(5),
        busyTimeout: Duration = .milliseconds(20),
        reliability: ReliabilityConfiguration = .init()
    ) throws -> ReliableDatabase<SQLiteBackend> {
        let backend = try SQLiteBackend(
            path: path,
            connectionLimit: connectionLimit,
            poolTimeout: poolTimeout,
            busyTimeout: busyTimeout
        )
        return try ReliableDatabase(backend: backend, configuration: reliability)
    }
}

extension ReliableDatabase where Backend == SQLiteBackend {
    func createCarmenSchema() async throws {
        try await raw.write { db in
            try db.execute(
                sql: """
                    CREATE TABLE IF NOT EXISTS user (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE);
                    CREATE TABLE IF NOT EXISTS profile (
                        id INTEGER PRIMARY KEY,
                        userId INTEGER NOT NULL REFERENCES user(id),
                        name TEXT NOT NULL
                    );
                    """
            )
        }
    }
}

/// A recursive CTE that keeps SQLite busy for far longer than any test waits.
let endlessQuery = """
    WITH RECURSIVE counter(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM counter WHERE n < 1000000000000)
    SELECT count(*) FROM counter
    """
