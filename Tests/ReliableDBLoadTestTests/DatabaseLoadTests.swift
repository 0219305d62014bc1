import Foundation
import ReliableDB
import ReliableDBLoadTest
import ReliableDBPostgres
import ReliableDBSQLite
import Testing

/// Small load tests of each operation type through ReliableDB, against a real SQLite file and the
/// real PostgreSQL server `scripts/test` starts. Each checks the report's JSON against the
/// documented schema, the HTML page for self-containment, and that the table is gone afterwards.
@Suite("Load tests against real databases")
struct DatabaseLoadTests {
    static let operationTypes: [LoadTestConfiguration.OperationType] = [.read, .write, .mixed(readRatio: 0.7)]

    static func configuration(_ type: LoadTestConfiguration.OperationType) -> LoadTestConfiguration {
        LoadTestConfiguration(concurrentConnections: 4, operationsPerConnection: 25, operationType: type)
    }

    @Test(arguments: operationTypes)
    func sqlite(_ type: LoadTestConfiguration.OperationType) async throws {
        let directory = try TemporaryDirectory()
        let backend = try SQLiteBackend(
            path: directory.path("load.sqlite"),
            connectionLimit: 4,
            poolTimeout: .seconds(5)
        )
        let database = try ReliableDatabase(backend: backend)
        let workload = SQLiteTestWorkload(database: database, table: makeTableName())
        let result = await Result {
            try await DatabaseLoadTester(workload).runLoadTest(Self.configuration(type))
        }
        let tableExists = try await workload.tableExists()
        try await database.shutdown()
        let report = try result.get()

        try Self.check(report, type: type, poolMax: 5)
        #expect(workload.rowsAtTearDown.withLock { $0 } == SQLiteTestWorkload.seedRows + report.writes)
        #expect(!tableExists, "the load test table was dropped")
    }

    @Test(arguments: operationTypes)
    func postgres(_ type: LoadTestConfiguration.OperationType) async throws {
        let backend = try PostgresBackend(
            url: try PostgresTestServer.url(),
            connectionLimit: 4,
            poolTimeout: .seconds(5)
        )
        let database = try ReliableDatabase(backend: backend)
        let workload = PostgresTestWorkload(database: database, table: makeTableName())
        let result = await Result {
            try await DatabaseLoadTester(workload).runLoadTest(Self.configuration(type))
        }
        let tableExists = await Result { try await workload.tableExists() }
        try await database.shutdown()
        let report = try result.get()

        try Self.check(report, type: type, poolMax: 4)
        #expect(workload.rowsAtTearDown.withLock { $0 } == PostgresTestWorkload.seedRows + report.writes)
        #expect(try tableExists.get() == false, "the load test table was dropped")
    }

    @Test func anOpenBreakerShowsAsRejectionsAndTheTableIsStillDropped() async throws {
        let directory = try TemporaryDirectory()
        let backend = try SQLiteBackend(path: directory.path("open.sqlite"), connectionLimit: 2)
        let database = try ReliableDatabase(backend: backend)
        let workload = SQLiteTestWorkload(database: database, table: makeTableName())
        database.circuitBreaker.forceState(.forcedOpen)
        let result = await Result {
            try await DatabaseLoadTester(workload).runLoadTest(
                LoadTestConfiguration(concurrentConnections: 2, operationsPerConnection: 10, operationType: .mixed())
            )
        }
        let tableExists = try await workload.tableExists()
        try await database.shutdown()
        let report = try result.get()

        #expect(report.totalOperations == 20)
        #expect(report.failedOperations == 20)
        #expect(report.errors.byClass["overload"] == 20)
        #expect(report.errors.samples["overload"]?.contains("Circuit breaker is FORCED_OPEN") == true)
        let pipeline = try #require(report.pipeline)
        #expect(pipeline.circuitBreakerRejections == 20)
        #expect(pipeline.circuitBreakerState == "FORCED_OPEN")
        #expect(schemaProblems(in: try report.jsonData()) == [])
        #expect(!tableExists, "set-up and tear-down bypass the breaker")
    }

    /// What every successful small run must satisfy.
    static func check(_ report: LoadTestReport, type: LoadTestConfiguration.OperationType, poolMax: Int) throws {
        #expect(report.totalOperations == 100)
        #expect(report.failedOperations == 0, "\(report.errors.samples)")
        switch type {
        case .read: #expect(report.reads == 100 && report.writes == 0)
        case .write: #expect(report.writes == 100 && report.reads == 0)
        case .mixed: #expect(report.reads + report.writes == 100)
        }
        #expect(report.latency.count == 100)
        #expect(report.latency.min > 0)
        #expect(report.throughput > 0)

        let pipeline = try #require(report.pipeline, "through ReliableDB the pipeline is reported")
        #expect(pipeline.circuitBreakerRejections == 0)
        #expect(pipeline.circuitBreakerState == "CLOSED")
        #expect(pipeline.timeouts == 0)
        #expect(pipeline.poolMax == poolMax)

        let json = try report.jsonData()
        #expect(schemaProblems(in: json) == [])
        let decoded = try LoadTestReport.decode(json)
        #expect(decoded.totalOperations == report.totalOperations)
        #expect(decoded.latency == report.latency)
        #expect(decoded.configuration == report.configuration)
        #expect(decoded.perSecond == report.perSecond)

        let html = report.html()
        #expect(selfContainmentProblems(in: html) == [])
        #expect(html.contains("\(report.totalOperations) (\(report.reads) reads, \(report.writes) writes)"))
        #expect(report.textSummary().contains("100 (\(report.reads) reads, \(report.writes) writes), 0 failed"))
    }
}
