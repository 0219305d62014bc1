import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The `reliabledb` executable SwiftPM built next to the test bundle.
public var reliabledbBinary: URL {
    URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("reliabledb")
}

/// A child process with its output captured.
public final class ServerProcess: Sendable {
    private let process: Process
    private let output = OutputBuffer()
    private let exited: Task<Int32, Never>

    public init(binary: URL, arguments: [String], environment: [String: String]) throws {
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        process.environment = childEnvironment(environment)
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        let (stream, continuation) = AsyncStream.makeStream(of: Int32.self)
        process.terminationHandler = { continuation.yield($0.terminationStatus) }
        self.process = process
        exited = Task {
            for await status in stream { return status }
            return -1
        }
        let output = self.output
        stdout.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            if data.isEmpty {
                handle.readabilityHandler = nil
                output.closed.store(true, ordering: .releasing)
            }
            let text = String(decoding: data, as: UTF8.self)
            output.state.withLock { $0.stdout += text }
        }
        stderr.fileHandleForReading.readabilityHandler = { handle in
            let text = String(decoding: handle.availableData, as: UTF8.self)
            output.state.withLock { $0.stderr += text }
        }
        try process.run()
    }

    public var standardError: String { output.state.withLock { $0.stderr } }
    public var standardOutput: String { output.state.withLock { $0.stdout } }

    /// The port from the "listening on http://host:port" line.
    public func waitForPort() async throws -> Int {
        let start = ContinuousClock.now
        while ContinuousClock.now - start < .seconds(30) {
            let text = output.state.withLock { $0.stdout }
            if let range = text.range(of: "listening on http://127.0.0.1:") {
                let digits = text[range.upperBound...].prefix { $0.isNumber }
                if let port = Int(digits) { return port }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        process.terminate()
        throw ServerDidNotStart(stderr: standardError)
    }

    public func signal(_ number: Int32) {
        kill(process.processIdentifier, number)
    }

    /// Waits for the process to exit and for its output to be read to the end.
    public func exitStatus() async -> Int32 {
        let status = await exited.value
        let start = ContinuousClock.now
        while !output.closed.load(ordering: .acquiring), ContinuousClock.now - start < .seconds(5) {
            try? await Task.sleep(for: .milliseconds(5))
        }
        return status
    }

    public struct ServerDidNotStart: Error {
        public var stderr: String
    }
}

final class OutputBuffer: Sendable {
    let state = Mutex<(stdout: String, stderr: String)>(("", ""))
    let closed = Atomic<Bool>(false)
}

/// Runs a program to completion on a dispatch thread, keeping the cooperative threads free, and
/// returns its exit status with standard output and error together.
public func runToCompletion(
    _ path: String,
    _ arguments: [String],
    in directory: URL? = nil
) async throws -> (status: Int32, output: String) {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            do {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: path)
                process.arguments = arguments
                if let directory { process.currentDirectoryURL = directory }
                let output = Pipe()
                process.standardOutput = output
                process.standardError = output
                try process.run()
                let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                process.waitUntilExit()
                continuation.resume(returning: (process.terminationStatus, text))
            } catch {
                continuation.resume(throwing: error)
            }
        }
    }
}

/// This process's environment for a child `reliabledb`, without the `DB_*` and `DATABASE_URL`
/// settings of whoever runs the tests, plus `overrides`: a test configures the child itself.
public func childEnvironment(_ overrides: [String: String]) -> [String: String] {
    ProcessInfo.processInfo.environment
        .filter { !$0.key.hasPrefix("DB_") && $0.key != "DATABASE_URL" }
        .merging(overrides) { $1 }
}

/// Runs a program that may start a daemon (`pg_ctl start`) and returns its exit status.
///
/// Spawned and reaped with posix_spawn/waitpid on a dispatch thread: Foundation's `Process` did
/// not notice the script's exit when the script had started the server daemon.
public func spawnAndWait(_ path: String, _ arguments: [String]) async -> Int32 {
    await withCheckedContinuation { (continuation: CheckedContinuation<Int32, Never>) in
        DispatchQueue.global().async {
            var pid: pid_t = 0
            let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
            defer { argv.forEach { free($0) } }
            guard posix_spawn(&pid, path, nil, nil, argv, environ) == 0 else {
                continuation.resume(returning: -1)
                return
            }
            var status: Int32 = 0
            while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
            continuation.resume(returning: status)
        }
    }
}

extension Result where Failure == any Error {
    /// The outcome of `body`, so a test can clean up (stop processes, drop databases) before it
    /// rethrows.
    public init(catching body: () async throws -> Success) async {
        do {
            self = .success(try await body())
        } catch {
            self = .failure(error)
        }
    }
}
