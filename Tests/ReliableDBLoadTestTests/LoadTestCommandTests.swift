import Foundation
import GRDB
import Logging
import PostgresNIO
import ReliableDB
import ReliableDBTestSupport
import Testing

/// `reliabledb loadtest` as a user runs it: a separate process, exit status, stdout, files.
@Suite("reliabledb loadtest as a process", .serialized)
struct LoadTestCommandTests {
    /// The executable SwiftPM built next to the test bundle.
    static var binary: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("reliabledb")
    }

    struct Outcome {
        var status: Int32
        var stdout: String
        var stderr: String

        /// The load test's table, from the header line.
        var table: String? {
            let text = stdout + stderr
            guard let range = text.range(of: "; table reliabledb_loadtest_") else { return nil }
            let name = text[range.lowerBound...].dropFirst("; table ".count).prefix {
                $0.isLetter || $0.isNumber || $0 == "_"
            }
            return String(name)
        }
    }

    /// Runs `reliabledb loadtest ARGUMENTS` with `environment` (no inherited `DB_*` or
    /// `DATABASE_URL`) and an `.env` file that does not exist.
    ///
    /// - Parameter whileRunning: called with the process once it has started.
    static func loadtest(
        _ arguments: [String],
        environment: [String: String],
        in directory: TemporaryDirectory,
        whileRunning: (Process) async throws -> Void = { _ in }
    ) async throws -> Outcome {
        #expect(FileManager.default.isExecutableFile(atPath: binary.path), "build reliabledb first: \(binary.path)")
        let process = Process()
        process.executableURL = binary
        process.arguments = ["loadtest"] + arguments + ["--env-file", directory.path("none.env")]
        process.currentDirectoryURL = directory.url
        process.environment = childEnvironment(environment)
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        // Read both pipes to the end on threads of their own, so neither can fill up and block.
        async let out = Self.readToEnd(stdout.fileHandleForReading)
        async let err = Self.readToEnd(stderr.fileHandleForReading)
        do {
            try await whileRunning(process)
        } catch {
            process.terminate()
            _ = await (out, err)
            throw error
        }
        let (stdoutText, stderrText) = await (out, err)
        let status = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                process.waitUntilExit()
                continuation.resume(returning: process.terminationStatus)
            }
        }
        return Outcome(status: status, stdout: stdoutText, stderr: stderrText)
    }

    private static func readToEnd(_ handle: FileHandle) async -> String {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                let data = (try? handle.readToEnd()) ?? Data()
                continuation.resume(returning: String(decoding: data, as: UTF8.self))
            }
        }
    }

    /// The load test tables left in a SQLite file.
    static func loadTestTables(inSQLite path: String) throws -> [String] {
        let queue = try DatabaseQueue(path: path)
        return try queue.read {
            try String.fetchAll($0, sql: "SELECT name FROM sqlite_master WHERE name LIKE 'reliabledb_loadtest_%'")
        }
    }

    @Test func jsonAndHTMLOnSQLitePassingThresholds() async throws {
        let directory = try TemporaryDirectory()
        let database = directory.path("cli.sqlite")
        let page = directory.path("report.html")
        let outcome = try await Self.loadtest(
            [
                "--connections", "3", "--operations", "20", "--type", "mixed", "--read-ratio", "0.5", "--json",
                "--html", page, "--threshold", "errors<1%", "--threshold", "p99<10s",
            ],
            environment: ["DATABASE_URL": "sqlite:\(database)"],
            in: directory
        )
        #expect(outcome.status == 0, "\(outcome.stderr)")
        #expect(schemaProblems(in: Data(outcome.stdout.utf8)) == [], "\(outcome.stdout)")
        let report = try JSONSerialization.jsonObject(with: Data(outcome.stdout.utf8)) as? [String: Any]
        #expect(report?["totalOperations"] as? Int == 60)
        #expect((report?["pipeline"] as? [String: Any])?["circuitBreakerState"] as? String == "CLOSED")
        let thresholds = report?["thresholds"] as? [[String: Any]]
        #expect(thresholds?.count == 2)
        #expect(thresholds?.allSatisfy { $0["passed"] as? Bool == true } == true)
        #expect(outcome.stderr.contains("measuring  100%"), "plain progress lines go to stderr with --json")
        #expect(!outcome.stderr.contains("\r"), "no terminal: no carriage returns")

        let html = try String(contentsOfFile: page, encoding: .utf8)
        #expect(selfContainmentProblems(in: html) == [])
        #expect(try Self.loadTestTables(inSQLite: database) == [])
    }

    @Test func aMissedThresholdExitsWithStatusOne() async throws {
        let directory = try TemporaryDirectory()
        let database = directory.path("cli.sqlite")
        let outcome = try await Self.loadtest(
            ["--connections", "2", "--operations", "10", "--type", "read", "--threshold", "throughput>100000000"],
            environment: ["DATABASE_URL": "sqlite:\(database)"],
            in: directory
        )
        #expect(outcome.status == 1, "\(outcome.stderr)")
        #expect(outcome.stderr.contains("1 threshold missed: throughput>100000000"))
        #expect(outcome.stdout.contains("FAIL  throughput>100000000"))
        #expect(outcome.stdout.contains("Load test: sqlite \(database) (ReliableDB)"))
        #expect(try Self.loadTestTables(inSQLite: database) == [])
    }

    /// A run whose operations mostly failed measured the failure: it must not pass for a result.
    @Test func aRunWhoseOperationsMostlyFailExitsWithStatusOneAndSaysWhy() async throws {
        let directory = try TemporaryDirectory()
        let database = directory.path("cli.sqlite")
        let outcome = try await Self.loadtest(
            ["--connections", "2", "--operations", "10", "--sql", "SELECT * FROM no_such_table"],
            environment: ["DATABASE_URL": "sqlite:\(database)"],
            in: directory
        )
        #expect(outcome.status == 1, "\(outcome.stderr)")
        #expect(outcome.stderr.contains("loadtest: 20 of 20 operations failed"), "\(outcome.stderr)")
        #expect(outcome.stderr.contains("no_such_table"), "the cause is named: \(outcome.stderr)")
        #expect(try Self.loadTestTables(inSQLite: database) == [])
    }

    @Test func ctrlCStopsTheRunAndDropsTheTable() async throws {
        let directory = try TemporaryDirectory()
        let database = directory.path("interrupted.sqlite")
        let outcome = try await Self.loadtest(
            ["--connections", "2", "--duration", "60"],
            environment: ["DATABASE_URL": "sqlite:\(database)"],
            in: directory
        ) { process in
            // Interrupt once the table exists (a bound of 30 s only ends a broken test).
            let start = ContinuousClock.now
            while (try? Self.loadTestTables(inSQLite: database))?.isEmpty ?? true {
                guard ContinuousClock.now - start < .seconds(30) else { throw TableNeverAppeared() }
                try await Task.sleep(for: .milliseconds(20))
            }
            kill(process.processIdentifier, SIGINT)
        }
        #expect(outcome.status == 130, "\(outcome.stderr)")
        #expect(outcome.stderr.contains("interrupted"), "\(outcome.stderr)")
        #expect(try Self.loadTestTables(inSQLite: database) == [])
    }

    struct TableNeverAppeared: Error {}

    @Test func aMalformedThresholdIsRejectedBeforeRunning() async throws {
        let directory = try TemporaryDirectory()
        let outcome = try await Self.loadtest(
            ["--threshold", "p99<20"],
            environment: ["DATABASE_URL": "sqlite:\(directory.path("never.sqlite"))"],
            in: directory
        )
        #expect(outcome.status != 0)
        #expect(outcome.stderr.contains("Invalid threshold 'p99<20'"), "\(outcome.stderr)")
        #expect(!FileManager.default.fileExists(atPath: directory.path("never.sqlite")))
    }

    @Test func aBadConfigurationExitsWithStatusTwo() async throws {
        let directory = try TemporaryDirectory()
        let outcome = try await Self.loadtest(
            [],
            environment: ["DATABASE_URL": "sqlite:\(directory.path("x.sqlite"))", "DB_CONNECTION_LIMIT": "lots"],
            in: directory
        )
        #expect(outcome.status == 2)
        #expect(outcome.stderr.contains("DB_CONNECTION_LIMIT"), "\(outcome.stderr)")
    }

    @Test func rawSQLiteRunsACustomStatementWithoutThePipeline() async throws {
        let directory = try TemporaryDirectory()
        let database = directory.path("raw.sqlite")
        let outcome = try await Self.loadtest(
            ["--raw", "--sql", "SELECT count(*) FROM {table}", "--connections", "2", "--operations", "15", "--json"],
            environment: ["DATABASE_URL": "sqlite:\(database)"],
            in: directory
        )
        #expect(outcome.status == 0, "\(outcome.stderr)")
        #expect(schemaProblems(in: Data(outcome.stdout.utf8)) == [])
        let report = try JSONSerialization.jsonObject(with: Data(outcome.stdout.utf8)) as? [String: Any]
        #expect(report?["pipeline"] is NSNull)
        #expect(report?["failedOperations"] as? Int == 0, "\(outcome.stdout)")
        #expect((report?["workload"] as? String)?.contains("raw GRDB DatabasePool") == true)
        #expect(try Self.loadTestTables(inSQLite: database) == [])
    }

    /// `--sql` is a prepared statement by default (reads and writes, ReliableDB and raw) and an
    /// unnamed one per operation with `--unprepared`.
    @Test(arguments: [
        (raw: false, unprepared: false, sql: "SELECT 1"),
        (raw: true, unprepared: false, sql: "SELECT 1"),
        (raw: false, unprepared: true, sql: "SELECT 1"),
        (raw: false, unprepared: false, sql: "INSERT INTO {table} (payload) VALUES ('custom')"),
        (raw: true, unprepared: true, sql: "INSERT INTO {table} (payload) VALUES ('custom')"),
    ])
    func postgresCustomStatementThroughReliableDBAndRaw(raw: Bool, unprepared: Bool, sql: String) async throws {
        let directory = try TemporaryDirectory()
        let url = try PostgresTestServer.urlString
        let outcome = try await Self.loadtest(
            (raw ? ["--raw"] : []) + (unprepared ? ["--unprepared"] : []) + [
                "--sql", sql, "--connections", "4", "--operations", "25", "--type", "mixed", "--json",
                "--warmup", "0.2",
            ],
            environment: ["DATABASE_URL": url, "DB_CONNECTION_LIMIT": "4"],
            in: directory
        )
        #expect(outcome.status == 0, "\(outcome.stderr)")
        #expect(schemaProblems(in: Data(outcome.stdout.utf8)) == [])
        let report = try JSONSerialization.jsonObject(with: Data(outcome.stdout.utf8)) as? [String: Any]
        #expect(report?["totalOperations"] as? Int == 100)
        #expect(report?["failedOperations"] as? Int == 0, "\(outcome.stdout)")
        #expect((report?["pipeline"] is NSNull) == raw)
        let workload = report?["workload"] as? String ?? ""
        #expect(workload.hasSuffix(" unprepared") == unprepared, "\(workload)")
        #expect(!outcome.stdout.contains("reliabledb-test-pw"), "the password never appears")
        let table = try #require(outcome.table, "the header names the table")
        #expect(try await Self.tableExists(table, inPostgres: url) == false)
    }

    @Test func postgresMixedWorkloadWritesHTML() async throws {
        let directory = try TemporaryDirectory()
        let url = try PostgresTestServer.urlString
        let page = directory.path("pg.html")
        let outcome = try await Self.loadtest(
            ["--connections", "4", "--operations", "25", "--rate", "400", "--html", page],
            environment: ["DATABASE_URL": url, "DB_CONNECTION_LIMIT": "4"],
            in: directory
        )
        #expect(outcome.status == 0, "\(outcome.stderr)")
        #expect(outcome.stdout.contains("100 ("), "\(outcome.stdout)")
        #expect(outcome.stdout.contains("from intended"))
        #expect(selfContainmentProblems(in: try String(contentsOfFile: page, encoding: .utf8)) == [])
        let table = try #require(outcome.table, "the header names the table")
        #expect(try await Self.tableExists(table, inPostgres: url) == false)
    }

    /// Asks the server directly whether `table` exists. (Other tests create load test tables
    /// at the same time, so only this run's own table is looked for.)
    static func tableExists(_ table: String, inPostgres urlString: String) async throws -> Bool {
        let url = try PostgresURL.parse(urlString).get()
        let logger = Logger(label: "test.loadtest.observer")
        let connection = try await PostgresConnection.connect(
            configuration: .init(
                host: url.host,
                port: url.port,
                username: url.username,
                password: url.password?.value,
                database: url.database,
                tls: .disable
            ),
            id: 1,
            logger: logger
        )
        var count = -1
        do {
            for try await value in try await connection.query(
                "SELECT count(*)::int FROM pg_tables WHERE tablename = \(table)",
                logger: logger
            ).decode(Int.self) {
                count = value
            }
        } catch {
            try? await connection.close()
            throw error
        }
        try await connection.close()
        #expect(count >= 0, "the query answered")
        return count > 0
    }
}
