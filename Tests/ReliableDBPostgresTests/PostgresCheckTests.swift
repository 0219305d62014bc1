import Foundation
import ReliableDBTestSupport
import Testing

extension PostgresBackendTests {
    @Test func checkAllPassesAndAStoppedServerFailsWithTheReason() async throws {
        let url = try TestServer.environment("RELIABLEDB_TEST_POSTGRES_URL")
        let passing = try await runReliableDB(["check", "--all", "--json"], environment: ["DATABASE_URL": url])
        #expect(passing.status == 0, "\(passing.output)")
        #expect(passing.output.contains("\"failed\" : 0"))
        #expect(!passing.output.contains(try TestServer.password), "no password in the output")
        // No scratch table left behind.
        let observer = try await Observer.connect()
        let leftovers = try await observer.count(
            "SELECT count(*)::int FROM pg_tables WHERE tablename LIKE 'reliabledb_check_%'"
        )
        #expect(leftovers == 0)
        try await observer.close()

        let outageURL = try TestServer.environment("RELIABLEDB_TEST_OUTAGE_POSTGRES_URL")
        try await TestServer.control("stop")
        let failing = try await runReliableDB(["check"], environment: ["DATABASE_URL": outageURL])
        try await TestServer.control("start")
        #expect(failing.status != 0)
        #expect(failing.output.contains("FAIL"))
        #expect(failing.output.contains("refused"), "the reason is named: \(failing.output)")
        #expect(!failing.output.contains(try TestServer.password))
    }
}

/// Runs the built `reliabledb` with `arguments`, returning its exit status and standard output.
func runReliableDB(_ arguments: [String], environment: [String: String]) async throws -> (status: Int32, output: String)
{
    let binary = reliabledbBinary
    let outputFile = FileManager.default.temporaryDirectory.appendingPathComponent("rdb-out-\(UUID().uuidString)")
    _ = FileManager.default.createFile(atPath: outputFile.path, contents: nil)
    defer { try? FileManager.default.removeItem(at: outputFile) }
    let process = Process()
    process.executableURL = binary
    process.arguments = arguments + ["--env-file", "/nonexistent/.env"]
    process.environment = childEnvironment(environment)
    let handle = try FileHandle(forWritingTo: outputFile)
    process.standardOutput = handle
    let status = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Int32, any Error>) in
        process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
        do {
            try process.run()
        } catch {
            continuation.resume(throwing: error)
        }
    }
    try handle.close()
    return (status, try String(contentsOf: outputFile, encoding: .utf8))

}
