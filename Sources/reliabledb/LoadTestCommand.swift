import ArgumentParser
import Dispatch
import Foundation
import GRDB
import Logging
import PostgresNIO
import ReliableDB
import ReliableDBLoadTest
import ReliableDBPostgres
import ReliableDBSQLite
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

struct LoadTestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loadtest",
        abstract: "Put the configured database under concurrent load and report throughput, latency and errors.",
        discussion: """
            Creates its own table (reliabledb_loadtest_<random>: id, payload, created_at), seeds 1,000 rows, \
            runs reads (a random existing row by id), writes (INSERT) or a mix through ReliableDB (or the \
            plain driver with --raw), and drops the table again, also after a failure or Ctrl-C.

            Closed model by default: each connection runs its operations back to back. --rate switches to \
            the open model: operations are scheduled at fixed times and latency is measured from each \
            operation's intended start, so queueing behind a stall shows up as latency.

            The pool size is DB_CONNECTION_LIMIT (SQLite: readers, plus one writer), for --raw too. \
            Exit status: 0, 1 when a --threshold is missed or the run fails, 2 for a bad configuration.
            """
    )

    enum OperationTypeArgument: String, ExpressibleByArgument, CaseIterable {
        case read
        case write
        case mixed
    }

    @Option(help: "Concurrent workers (concurrentConnections in the JSON report).")
    var connections = 10

    @Option(help: "Operations per connection (ignored with --duration).")
    var operations = 100

    @Option(help: "Operation type: read, write or mixed.")
    var type: OperationTypeArgument = .mixed

    @Option(help: "Share of reads for --type mixed, 0...1 (default 0.8).")
    var readRatio: Double?

    @Option(help: "Run for this many seconds instead of a number of operations.")
    var duration: Double?

    @Option(help: "Seconds of unmeasured warmup before the measured run.")
    var warmup: Double = 0

    @Option(help: "Open model: operations per second across all connections, at fixed intended start times.")
    var rate: Double?

    @Flag(help: "Run the same workload on the plain driver (GRDB DatabasePool / PostgresClient), without ReliableDB.")
    var raw = false

    @Option(
        help: ArgumentHelp(
            "Run this statement as every operation (reads and writes) instead of the built-in ones.",
            discussion: "{table} is replaced by the load test's table. On SQLite, reads use a read-only connection."
        )
    )
    var sql: String?

    @Flag(
        help: ArgumentHelp(
            "Send --sql unnamed with every operation instead of preparing it once per connection.",
            discussion: """
                By default the statement is prepared once per connection and then only bound and \
                executed (SQLite caches it the same way), like pgbench -M prepared. With this flag \
                PostgreSQL parses and plans it on every operation, as an application's query() does.
                """
        )
    )
    var unprepared = false

    @Flag(help: "Print the report as JSON (progress goes to standard error).")
    var json = false

    @Option(help: ArgumentHelp("Also write the report as a self-contained HTML page to this path.", valueName: "path"))
    var html: String?

    @Option(
        name: .customLong("threshold"),
        help: ArgumentHelp(
            "Fail (exit 1) unless the report meets this; repeatable.",
            discussion: "e.g. 'p99<20ms', 'p50<=5ms', 'errors<1%', 'throughput>1000'",
            valueName: "condition"
        )
    )
    var thresholds: [String] = []

    @Option(name: .long, help: "Read variables from this .env file when it exists.")
    var envFile = ".env"

    func validate() throws {
        var problems = loadTestConfiguration.problems
        if readRatio != nil, type != .mixed {
            problems.append("--read-ratio only applies to --type mixed")
        }
        if let sql, sql.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            problems.append("--sql must not be empty")
        }
        if !problems.isEmpty {
            throw ValidationError(problems.joined(separator: "; "))
        }
        do {
            _ = try parsedThresholds()
        } catch {
            throw ValidationError(error.description)
        }
    }

    private func parsedThresholds() throws(LoadTestThreshold.ParseError) -> [LoadTestThreshold] {
        var parsed: [LoadTestThreshold] = []
        for threshold in thresholds {
            parsed.append(try LoadTestThreshold.parse(threshold))
        }
        return parsed
    }

    private var loadTestConfiguration: LoadTestConfiguration {
        let operationType: LoadTestConfiguration.OperationType =
            switch type {
            case .read: .read
            case .write: .write
            case .mixed: .mixed(readRatio: readRatio ?? 0.8)
            }
        return LoadTestConfiguration(
            concurrentConnections: connections,
            operationsPerConnection: operations,
            operationType: operationType,
            duration: duration.map { .milliseconds(Int64(($0 * 1000).rounded())) },
            warmup: .milliseconds(Int64((warmup * 1000).rounded())),
            rate: rate
        )
    }

    func run() async throws {
        let configuration: ReliableDBConfiguration
        do {
            configuration = try await ReliableDBConfiguration.fromEnvironment(dotEnvPath: envFile)
        } catch {
            printError(error.description)
            throw ExitCode(2)
        }
        let thresholds: [LoadTestThreshold]
        do {
            thresholds = try parsedThresholds()
        } catch {
            printError(error.description)
            throw ExitCode(2)
        }
        let output = ConsoleOutput(json: json)
        let table = "reliabledb_loadtest_" + String(UInt32.random(in: .min ... .max), radix: 16)
        let statement = sql.map { $0.replacingOccurrences(of: "{table}", with: table) }
        var logger = Logger(label: "reliabledb.loadtest")
        logger.logLevel = .warning

        var report: LoadTestReport
        do {
            switch configuration.database {
            case .sqlite(let path):
                report = try await runSQLite(path: path, configuration, table: table, statement: statement, output)
            case .postgres(let url):
                report = try await runPostgres(
                    url: url,
                    configuration,
                    table: table,
                    statement: statement,
                    logger: logger,
                    output
                )
            }
        } catch let error as LoadTestTearDownError {
            printError("warning: \(error.description); drop table \(table) by hand")
            report = error.report
        } catch is CancellationError {
            printError("loadtest: interrupted; table \(table) was dropped")
            throw ExitCode(130)
        } catch {
            printError("loadtest failed: \(error)")
            throw ExitCode(1)
        }

        report.thresholds = report.evaluate(thresholds)
        if json {
            output.stdout(try report.json() + "\n")
        } else {
            output.stdout("\n" + report.textSummary())
        }
        if let html {
            do {
                try Data(report.html().utf8).write(to: URL(fileURLWithPath: html))
                if !json { output.stdout("  html          \(html)\n") }
            } catch {
                printError("loadtest: cannot write \(html): \(error)")
                throw ExitCode(1)
            }
        }
        // A run whose operations mostly failed measured the failure, not the database: say so even
        // without a --threshold, so a script never takes it for a result.
        if report.totalOperations > 0, report.failedOperations * 2 > report.totalOperations {
            let common = report.errors.samples.max { lhs, rhs in
                (report.errors.byClass[lhs.key] ?? 0) < (report.errors.byClass[rhs.key] ?? 0)
            }
            printError(
                "loadtest: \(report.failedOperations) of \(report.totalOperations) operations failed"
                    + (common.map { "; most were \($0.key) errors, e.g. \($0.value)" } ?? "")
            )
            throw ExitCode(1)
        }
        let failed = report.thresholds.filter { !$0.passed }
        if !failed.isEmpty {
            printError(
                "loadtest: \(failed.count) threshold\(failed.count == 1 ? "" : "s") missed: "
                    + failed.map { "\($0.expression) (actual \(String(format: "%.3f", $0.actual)))" }.joined(
                        separator: ", "
                    )
            )
            throw ExitCode(1)
        }
    }

    // MARK: Backends

    private func runSQLite(
        path: String,
        _ configuration: ReliableDBConfiguration,
        table: String,
        statement: String?,
        _ output: ConsoleOutput
    ) async throws -> LoadTestReport {
        let suffix = statement.map { " running \($0)" } ?? ""
        if raw {
            let pool = try SQLiteLoadWorkload.openRawPool(path: path, connectionLimit: configuration.connectionLimit)
            let workload = SQLiteLoadWorkload(
                access: .raw(pool),
                table: table,
                statement: statement,
                name: "sqlite \(path) (raw GRDB DatabasePool)\(suffix)"
            )
            return try await execute(workload, table: table, poolSize: configuration.connectionLimit + 1, output) {
                try pool.close()
            }
        }
        let database = try ReliableDatabase.sqlite(configuration: configuration)
        let workload = SQLiteLoadWorkload(
            access: .reliable(database),
            table: table,
            statement: statement,
            name: "sqlite \(path) (ReliableDB)\(suffix)"
        )
        return try await execute(workload, table: table, poolSize: configuration.connectionLimit + 1, output) {
            try await database.shutdown()
        }
    }

    private func runPostgres(
        url: PostgresURL,
        _ configuration: ReliableDBConfiguration,
        table: String,
        statement: String?,
        logger: Logger,
        _ output: ConsoleOutput
    ) async throws -> LoadTestReport {
        let suffix = statement.map { " running \($0)\(unprepared || url.pgbouncer ? " unprepared" : "")" } ?? ""
        // A transaction-mode pooler (PgBouncer before 1.21) hands each transaction to any server
        // connection, where a statement prepared by name on another one does not exist.
        let prepare = !unprepared && !url.pgbouncer
        let statement = statement.map { PostgresLoadWorkload.CustomStatement(sql: $0, prepared: prepare) }
        if raw {
            let client = try PostgresLoadWorkload.rawClient(
                url: url,
                connectionLimit: configuration.connectionLimit,
                logger: logger
            )
            let runner = Task { await client.run() }
            let workload = PostgresLoadWorkload(
                access: .raw(client),
                table: table,
                statement: statement,
                logger: logger,
                name: "postgresql \(url) (raw PostgresClient)\(suffix)"
            )
            return try await execute(workload, table: table, poolSize: configuration.connectionLimit, output) {
                runner.cancel()
                await runner.value
            }
        }
        let database = try ReliableDatabase.postgres(configuration: configuration, logger: logger)
        let workload = PostgresLoadWorkload(
            access: .reliable(database),
            table: table,
            statement: statement,
            logger: logger,
            name: "postgresql \(url) (ReliableDB)\(suffix)"
        )
        return try await execute(workload, table: table, poolSize: configuration.connectionLimit, output) {
            try await database.shutdown()
        }
    }

    /// Runs the load test with a progress line, cancelling it (and so dropping the table) on
    /// Ctrl-C, and shuts the database down whatever happens.
    private func execute<Workload: LoadWorkload>(
        _ workload: Workload,
        table: String,
        poolSize: Int,
        _ output: ConsoleOutput,
        shutdown: () async throws -> Void
    ) async throws -> LoadTestReport {
        let configuration = loadTestConfiguration
        output.progress(
            "Load test: \(workload.name)\n  \(configuration.summary); pool \(poolSize) connections; table \(table)\n"
        )
        let tester = DatabaseLoadTester(workload)
        let result: Result<LoadTestReport, any Error>
        do {
            result = .success(
                try await cancellingOnInterrupt {
                    try await tester.runLoadTest(configuration) { output.update($0) }
                }
            )
        } catch {
            result = .failure(error)
        }
        do {
            try await shutdown()
        } catch {
            printError("warning: closing the database failed: \(error)")
        }
        return try result.get()
    }

    /// Runs `operation` in a task that SIGINT cancels; a second SIGINT ends the process.
    ///
    /// The handler is in place before the task starts, so a Ctrl-C that arrives while the table is
    /// being created still stops the run and drops the table instead of killing the process.
    private func cancellingOnInterrupt<T: Sendable>(
        _ operation: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let interruption = InterruptedTask()
        signal(SIGINT, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        source.setEventHandler {
            signal(SIGINT, SIG_DFL)
            printError("\ninterrupted: stopping and dropping the load test table (Ctrl-C again to quit at once)")
            interruption.interrupt()
        }
        source.resume()
        defer {
            source.cancel()
            signal(SIGINT, SIG_DFL)
        }
        let task = Task { try await operation() }
        interruption.attach { task.cancel() }
        return try await withTaskCancellationHandler {
            try await task.value
        } onCancel: {
            task.cancel()
        }
    }
}

/// Connects a SIGINT that may arrive before the task exists to that task's cancellation.
private final class InterruptedTask: Sendable {
    private let state = Mutex<(interrupted: Bool, cancel: (@Sendable () -> Void)?)>((false, nil))

    func interrupt() {
        let cancel = state.withLock { state in
            state.interrupted = true
            return state.cancel
        }
        cancel?()
    }

    func attach(_ cancel: @escaping @Sendable () -> Void) {
        let interrupted = state.withLock { state in
            state.cancel = cancel
            return state.interrupted
        }
        if interrupted { cancel() }
    }
}

// MARK: Output

/// Standard output and the progress line: a line rewritten in place with `\r` about every 500 ms
/// when the progress stream is a terminal, plain lines (at most every 2 s, and at the end of each
/// phase) when it is not. With `--json` the progress goes to standard error.
final class ConsoleOutput: Sendable {
    private let progressDescriptor: Int32
    private let live: Bool
    private let state = Mutex<(lineLength: Int, lastPlain: ContinuousClock.Instant?)>((0, nil))

    init(json: Bool) {
        progressDescriptor = json ? 2 : 1
        live = isatty(progressDescriptor) == 1
    }

    func stdout(_ text: String) {
        Self.emit(text, to: 1)
    }

    func progress(_ text: String) {
        Self.emit(text, to: progressDescriptor)
    }

    func update(_ progress: LoadTestProgress) {
        let line = progress.line
        if live {
            let text = state.withLock { state in
                let padding = String(repeating: " ", count: max(0, state.lineLength - line.count))
                state.lineLength = progress.isFinal ? 0 : line.count
                return "\r" + line + padding + (progress.isFinal ? "\n" : "")
            }
            Self.emit(text, to: progressDescriptor)
            return
        }
        let now = ContinuousClock.now
        let due = state.withLock { state in
            guard progress.isFinal || state.lastPlain.map({ now - $0 >= .seconds(2) }) ?? true else { return false }
            state.lastPlain = progress.isFinal ? nil : now
            return true
        }
        if due { Self.emit(line + "\n", to: progressDescriptor) }
    }

    private static func emit(_ text: String, to descriptor: Int32) {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                return
            }
            bytes = bytes.dropFirst(written)
        }
    }
}

// MARK: SQLite workload
